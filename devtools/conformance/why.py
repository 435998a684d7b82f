"""Why a peer test's outcome differs between the peer's helper and tiegraph's drop-in (by test name).

Every difference the generated table shows must have its reason here; the table marks any other one as
not explained.
"""

#: substring of a test id -> the reason, shown in the generated table
WHY: dict[str, str] = {
    # PEFT 0.21.2: its tests tie a model's weights, then set the flag False and assert PEFT follows it
    "test_get_modules_tied_returns_empty_when_tying_disabled": (
        "ties the weights, sets `config.tie_word_embeddings = False` and asserts the helper answers `[]` "
        "(peft#2944): PEFT's policy, kept by the default mode; truth-first names the tied head"
    ),
    "test_ensure_weight_tying_not_tying_when_model_config_tie_false": (
        "a model tied in memory whose config says False must not get tied adapters (peft#2944's policy); "
        "truth-first reports the memory tie, so PEFT ties them"
    ),
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
