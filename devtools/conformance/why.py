"""Why a peer test's outcome differs between the peer's helper and tiegraph's drop-in (by test name).

Every difference the generated table shows must have its reason here; the table marks any other one as
not explained.
"""

#: substring of a test id -> the reason, shown in the generated table
WHY: dict[str, str] = {
    # safetensors 0.8.0
    "TorchModelTestCase::test_find_shared_tensors": (
        "asserts that meta tensors share nothing (`C` and its view `D`): the peer's policy, kept by the "
        "default mode; truth-first groups them by storage object"
    ),
    "test_pt_sf_save_model_overlapping_storage": (
        "asserts that `n`, set to the first 4 elements of `m`'s storage, is not shared with `m` (the peer "
        "keys storages by size too); they share 16 bytes, so truth-first groups them"
    ),
}
