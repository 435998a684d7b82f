"""Pipeline stages: the stage pre-flight, the tied-replica check on a real GPipe run, stage asymmetry.

``tests/_pipe_workers.py`` runs a real ``torch.distributed.pipelining`` GPipe step on 2 gloo ranks (manual
``PipelineStage`` s of a tiny tied model) and the ``pipeline()`` tracer's stages; the rest runs here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from _pipe_workers import TinyLM, batch, stage_module
from _ranks import run_ranks
from models import llama_tied

import tiegraph
from tiegraph.distributed import compare
from tiegraph.errors import PathNotFoundError, TiegraphError
from tiegraph.sharding import check_stage_split
from tiegraph.sharding._replicas import fingerprint

WORLD = 2
TIMEOUT = 240  # seconds for both ranks; about 30 s on a busy 2-core machine
SPLIT = {"layers.1": "beginning"}


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    out = tmp_path_factory.mktemp("pipe")
    return run_ranks(Path(__file__).with_name("_pipe_workers.py"), out, WORLD, TIMEOUT)


@pytest.mark.distributed
def test_gpipe_copies_are_in_sync_before_and_diverged_after_one_step(ranks: list[dict[str, Any]]) -> None:
    """torch.distributed.pipelining syncs nothing: after one step the head's copy on rank 1 differs from
    the embedding on rank 0, and every rank reports the same mismatch."""
    for seen in ranks:
        gpipe = seen["gpipe"]
        assert gpipe["before"] == []
        ((differ, replicas, message),) = gpipe["after"]
        assert differ == [1]
        assert replicas == [[0, "embed.weight"], [1, "head.weight"]]
        assert "head.weight on rank 1 differs from embed.weight on rank 0" in message
        ((exact_ranks, max_diff),) = gpipe["after_exact"]
        assert exact_ranks == [1]
        assert max_diff > 1e-4
    assert ranks[0]["gpipe"] == ranks[1]["gpipe"]


@pytest.mark.distributed
def test_stages_are_not_a_disagreement(ranks: list[dict[str, Any]]) -> None:
    for seen in ranks:
        assert seen["gpipe"]["agree"] == []
        assert seen["traced"]["agree"] == []


@pytest.mark.distributed
def test_the_tracer_leaves_the_head_on_stage_0_and_names_slots_as_the_model(
    ranks: list[dict[str, Any]],
) -> None:
    assert ranks[0]["traced"]["params"] == ["embed.weight", "head.weight", "layers.0.bias", "layers.0.weight"]
    assert ranks[1]["traced"]["params"] == ["head.weight", "layers.1.bias", "layers.1.weight"]
    for seen in ranks:
        assert seen["traced"]["groups"] == []  # even stage 0's two are copies, not one Parameter
        assert seen["traced"]["replicas"] == []  # untrained: every copy still equal


def test_stage_split_from_a_real_pipe_a_split_spec_and_stage_modules() -> None:
    from torch.distributed.pipelining import SplitPoint, pipeline

    model = TinyLM()
    pipe = pipeline(model, (batch()[0][:2],), split_spec={"layers.1": SplitPoint.BEGINNING})
    (found,) = check_stage_split(model, pipe)
    assert found.kind == "stage-split-tie"
    assert found.paths == ("embed.weight", "head.weight")
    assert "stage 0: embed.weight, head.weight; stage 1: head.weight" in found.message
    (found,) = check_stage_split(model, SPLIT)
    assert "stage 0: embed.weight; stage 1: head.weight" in found.message
    stages = [stage_module(model, 0), stage_module(model, 1)]
    assert [f.paths for f in check_stage_split(model, stages)] == [("embed.weight", "head.weight")]
    assert check_stage_split(model, [["embed", "head"], ["layers"]]) == []


def test_stage_split_of_a_meta_llama() -> None:
    with torch.device("meta"):
        model = llama_tied()
    (found,) = check_stage_split(model, {"model.norm": "beginning"})
    assert found.paths == ("lm_head.weight", "model.embed_tokens.weight")
    assert "stage 0: model.embed_tokens.weight; stage 1: lm_head.weight" in found.message
    assert "torch.distributed.pipelining syncs nothing" in found.message


def test_a_stage_without_the_embedding_is_a_graph() -> None:
    stage = stage_module(TinyLM(), 1)
    tg = tiegraph.build_graph(stage)
    assert tg.input_embedding() is None
    assert tg.tie_groups() == []


@pytest.mark.parametrize(
    ("stages", "error", "words"),
    [
        ({"nope": "beginning"}, PathNotFoundError, "'nope'"),
        ({"layers.1": "middle"}, TiegraphError, "SplitPoint.BEGINNING"),
        ([["embed", "head", "layers"]], TiegraphError, "at least two"),
        ([["nope"], ["head"]], PathNotFoundError, "'nope'"),
    ],
)
def test_bad_stage_splits(stages: Any, error: type[Exception], words: str) -> None:
    with pytest.raises(error) as caught:
        check_stage_split(TinyLM(), stages)
    assert words in str(caught.value)


def test_compare_leaves_stage_asymmetry_alone() -> None:
    """A stage holding both ends of a tie and a stage holding one (Megatron-style: the last stage keeps a
    copy of the embedding as its head) are not a disagreement; a rank that holds both ends untied is."""
    group = ["embed.weight", "head.weight"]
    first = {
        "rank": 0,
        "input_embedding": "embed",
        "tie_groups": [group],
        "tied": ["head"],
        "error": None,
        "slots": ["embed.weight", "head.weight", "layers.0.weight"],
    }
    last = {
        "rank": 1,
        "input_embedding": None,
        "tie_groups": [],
        "tied": None,
        "error": None,
        "slots": ["head.weight", "layers.1.weight"],
    }
    assert compare([first, last]) == []
    untied = dict(first, rank=1, tie_groups=[], tied=[])
    assert [d.kind for d in compare([first, untied])] == ["tie-group", "tied-target"]


def test_fingerprint_is_exact_and_cheap_to_compare() -> None:
    t = torch.randn(64, 16)
    assert fingerprint(t) == fingerprint(t.clone())
    nudged = t.clone()
    nudged[0, 3] += 1e-6  # a sampled row (the first): one changed element shows
    assert fingerprint(nudged) != fingerprint(t)
    assert fingerprint(t + 1e-3) != fingerprint(t)  # a step changes every row of a tied head
    assert fingerprint(t.to(torch.float16)) != fingerprint(t)
