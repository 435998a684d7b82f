"""Megatron-core, for real: its embedding ties read from its own markers, on models built on CPU.

Runs in Megatron-core's cached venv (``python3 dev.py sharding test megatron``; Megatron-core 0.16.1, 2
gloo CPU ranks); skipped, with that reason, where megatron-core is not installed. What could not be run
here, and why, is in ``tests/_megatron_workers.py`` (the rank side).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
from _ranks import run_ranks

pytestmark = [
    pytest.mark.megatron,
    pytest.mark.distributed,
    pytest.mark.skipif(
        importlib.util.find_spec("megatron") is None,
        reason="needs Megatron-core: run python3 dev.py sharding test megatron (its own cached venv)",
    ),
]

WORLD = 2
TIMEOUT = 600  # seconds for both ranks; about 1 min on a busy 2-core machine
ENDS = ["embedding.word_embeddings.weight", "output_layer.weight"]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    out = tmp_path_factory.mktemp("megatron")
    return run_ranks(Path(__file__).with_name("_megatron_workers.py"), out, WORLD, TIMEOUT)


def test_one_stage_the_head_takes_the_embedding_as_an_argument(ranks: list[dict[str, Any]]) -> None:
    """share_embeddings_and_output_weights on one stage: no output weight; a tie of its own kind."""
    for seen in ranks:
        case = seen["one_stage"]
        assert case["head_weight"] is True  # output_layer.weight is None
        assert case["groups"] == []  # one slot: no tie group
        ((kind, paths, message),) = case["findings"]
        assert (kind, paths) == ("megatron-argument-tie", ["embedding.word_embeddings.weight"])
        assert "output_layer" in message
        assert case["json_findings"] == ["megatron-argument-tie"]
        assert case["marked"] == []


def test_two_stages_each_end_is_read_from_shared_embedding(ranks: list[dict[str, Any]]) -> None:
    """The first stage's embedding and the last stage's output weight are marked copies: each rank says
    so, and the replica check compares the two (apart before the embedding group's all-reduce, equal
    after)."""
    for rank, seen in enumerate(ranks):
        case = seen["two_stages"]
        assert case["marked"] == [ENDS[rank]]
        ((kind, paths, _),) = case["findings"]
        assert (kind, paths) == ("megatron-shared-embedding", [ENDS[rank]])
        assert case["json_findings"] == ["megatron-shared-embedding"]
        ((differ, message),) = case["before"]
        assert differ == [1]
        assert (
            "output_layer.weight on rank 1 differs from embedding.word_embeddings.weight on rank 0" in message
        )
        assert case["after"] == []
