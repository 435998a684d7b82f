"""DeepSpeed, for real: ZeRO-3 placeholders keyed by ``ds_id``, storage ties it splits, ``TiedLayerSpec``.

Runs in DeepSpeed's cached venv (``python3 dev.py sharding test deepspeed``; DeepSpeed 0.19.8,
``DS_ACCELERATOR=cpu``, 2 gloo CPU ranks); skipped, with that reason, where deepspeed is not installed.
``tests/_deepspeed_workers.py`` is the rank side.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
from _ranks import run_ranks

pytestmark = [
    pytest.mark.deepspeed,
    pytest.mark.distributed,
    pytest.mark.skipif(
        importlib.util.find_spec("deepspeed") is None,
        reason="needs DeepSpeed: run python3 dev.py sharding test deepspeed (its own cached venv)",
    ),
]

WORLD = 2
TIMEOUT = 900  # seconds for both ranks: about 1.5 min on a busy 2-core machine (the C++ op precompiled)
ENDS = ["lm_head.weight", "model.embed_tokens.weight"]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    out = tmp_path_factory.mktemp("deepspeed")
    env = {"DS_ACCELERATOR": "cpu"}
    return run_ranks(Path(__file__).with_name("_deepspeed_workers.py"), out, WORLD, TIMEOUT, env=env)


def test_a_zero3_identity_tie_is_one_tie_group_with_no_false_finding(ranks: list[dict[str, Any]]) -> None:
    """Every parameter is an empty placeholder, yet one ds_id under two names is one tie group, with the
    logical shape, before and after a step, through the engine and on its module, and from JSON."""
    for seen in ranks:
        case = seen["identity"]
        shape, pointer, embed_id, head_id = case["placeholder"]
        assert (shape, pointer) == ([0], 0)
        assert embed_id == head_id
        for graph in (case["engine"], case["module"], case["after_step"]):
            assert graph["groups"] == [ENDS]
            assert graph["tied"] == ["lm_head"]
            assert graph["findings"] == []
            assert graph["json_findings"] == []
            assert graph["facts"]["lm_head.weight"] == [[64, 16], "float32", "cpu"]


def test_a_storage_tie_is_predicted_split_before_and_reported_split_after(
    ranks: list[dict[str, Any]],
) -> None:
    """check_zero3 on the unpartitioned model says ZeRO-3 unties it; after initialize the audit names
    the two ds_ids (not "call tie_weights()"), and after a step the gathered values differ."""
    for seen in ranks:
        case = seen["storage"]
        ((kind, paths, message),) = case["preflight"]
        assert (kind, paths) == ("storage-only-tie", ENDS)
        assert "DeepSpeed ZeRO-3" in message
        embed_id, head_id = case["ds_ids"]
        assert embed_id != head_id
        after = case["after"]
        assert after["groups"] == []
        assert [f[0] for f in after["findings"]] == ["zero3-split-tie"]
        message = after["findings"][0][2]
        assert f"ds_id {embed_id}" in message
        assert f"ds_id {head_id}" in message
        assert "before deepspeed.initialize" in message
        assert after["json_findings"] == ["zero3-split-tie"]
        assert case["max_diff_after_step"] > 1e-4  # trained apart: the prediction was right


def test_tied_layer_spec_is_read_from_tied_comms_and_its_copies_stay_in_sync(
    ranks: list[dict[str, Any]],
) -> None:
    """Each stage holds a copy of the TiedLayerSpec module; the audit says so (its own kind), the replica
    check finds them equal before and after a step, and finds a copy moved by hand."""
    for seen in ranks:
        case = seen["pipeline"]
        assert case["tied_comms"] == {"embed": [0, 1]}
        assert "tied_modules.embed.weight" in case["params"]
        ((kind, paths, message),) = case["findings"]
        assert (kind, paths) == ("deepspeed-tied-layer", ["tied_modules.embed.weight"])
        assert "ranks 0, 1" in message
        assert "layers 0, 4" in message
        assert case["before"] == case["after"] == case["after_exact"] == []
        assert case["sum_after"] != case["sum_before"]  # the step trained the copies
        assert case["agree"] == []
        assert case["drifted"] == [[1]]
    assert ranks[0]["pipeline"]["sum_after"] == ranks[1]["pipeline"]["sum_after"]
