"""A graph is a record of the model at build (DESIGN.md, "A graph is a record"), with real libraries.

Each test builds a graph, then changes the model the way users do right after (PEFT in place, a merge, a
dtype or device conversion, a replaced module, ``del``), and checks that every face of the graph still
answers for the model as it was: queries, ``graph``, ``to_json``, the DOT picture and ``diff``. What the
build did not capture and the changed model can no longer tell is unknown, never the changed value.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from models import llama
from peft import LoraConfig, get_peft_model
from torch import nn
from transformers import PreTrainedModel

import tiegraph
from tiegraph._graph import view_of


def _faces(tg: tiegraph.TieGraph) -> dict[str, dict[str, object]]:
    """Every face a user reads after the step; returns the slots of the JSON export by full name."""
    assert tg.tied_to_input_embedding() == ["lm_head"]
    assert tg.tie_groups() == [["lm_head.weight", "model.embed_tokens.weight"]]
    assert tg.graph.number_of_nodes() > 0
    assert "lm_head" in tg.to_dot()
    data = tg.to_json()
    back = tiegraph.TieGraph.from_json(data)
    assert back.tie_groups() == tg.tie_groups()
    return {n["name"]: n for n in data["nodes"] if n["kind"] == "slot"}


def _peft_in_place(model: nn.Module) -> None:
    get_peft_model(model, LoraConfig(target_modules=["q_proj"], r=2))


def _merged(model: nn.Module) -> None:
    get_peft_model(model, LoraConfig(target_modules=["q_proj"], r=2)).merge_and_unload()


def _replaced(model: nn.Module) -> None:
    model.get_submodule("model.layers.0.mlp").down_proj = nn.Linear(32, 16, bias=False)


def _resized(model: nn.Module) -> None:
    assert isinstance(model, PreTrainedModel)
    model.resize_token_embeddings(80)


STEPS: dict[str, Callable[[nn.Module], object]] = {
    "get_peft_model in place": _peft_in_place,
    "merge_and_unload": _merged,
    "half": lambda m: m.half(),
    "to bfloat16": lambda m: m.to(torch.bfloat16),
    "to meta": lambda m: m.to("meta"),
    "replaced module": _replaced,
    "resize_token_embeddings": _resized,
}


@pytest.mark.parametrize("step", list(STEPS))
def test_graph_answers_for_the_build_after(step: str) -> None:
    model = llama(tie_word_embeddings=True)
    before = tiegraph.build_graph(model)
    STEPS[step](model)
    slots = _faces(before)
    assert {n["dtype"] for n in slots.values()} <= {"float32", "unknown"}  # never the converted dtype
    assert slots["model.embed_tokens.weight"]["shape"] == [64, 16]  # a tie-group member: read at build
    assert slots["model.embed_tokens.weight"]["requires_grad"] is True  # PEFT freezes it later
    down = slots["model.layers.0.mlp.down_proj.weight"]
    assert down["shape"] in ([16, 32], None)  # the build's shape, or unknown: never another one
    assert down["device"] in ("cpu", "unknown")
    assert "base_model.model.lm_head.weight" not in slots  # the wrapping came after


def test_unchanged_slots_are_still_read_exactly() -> None:
    """Freezing and LoRA in place change no slot's storage: the unchanged slots read as at build."""
    model = llama(tie_word_embeddings=True)
    before = tiegraph.build_graph(model)
    _peft_in_place(model)
    slots = _faces(before)
    assert slots["model.layers.0.mlp.down_proj.weight"]["shape"] == [16, 32]
    assert slots["model.norm.weight"]["device"] == "cpu"


def test_dtype_conversion_is_never_reported_as_the_build_value() -> None:
    model = llama(tie_word_embeddings=True)
    before = tiegraph.build_graph(model)
    model.half()
    view = view_of(before)
    assert {view.tensor(s).dtype for s in range(view.num_slots)} == {"float32", "unknown"}


def test_diff_across_the_step_and_after_del() -> None:
    """The issue's example: diff works, and so does to_json of the graph taken before."""
    model = llama(tie_word_embeddings=True)
    before = tiegraph.build_graph(model)
    peft_model = get_peft_model(model, LoraConfig(target_modules=["q_proj"], r=2))
    result = tiegraph.diff(before, peft_model)
    assert result.tied_before == result.tied_after == ["lm_head"]
    del model, peft_model
    gc.collect()
    slots = _faces(before)
    assert slots["model.layers.0.self_attn.q_proj.weight"]["shape"] in ([16, 16], None)


DATA = Path(__file__).parent / "data"


def _format_2_sample() -> dict[str, object]:
    """A tied Llama graph whose model was converted to half before the first export (unknowns inside)."""
    model = llama(tie_word_embeddings=True)
    tg = tiegraph.build_graph(model)
    model.half()
    return tg.to_json()


@pytest.mark.parametrize("fmt", [1, 2])
def test_reads_the_current_and_the_previous_format(fmt: int) -> None:
    """Committed files written by format 1 (before unknowns existed) and format 2 load and answer."""
    text = (DATA / f"graph-format-{fmt}.json").read_text()
    tg = tiegraph.TieGraph.from_json(text)
    assert tg.tied_to_input_embedding() == ["lm_head"]
    assert tg.tie_groups()[0][-1] == "model.embed_tokens.weight"
    data = tg.to_json()
    assert data["tiegraph"]["format"] == 2
    assert tiegraph.TieGraph.from_json(data).to_json() == data


def test_format_2_sample_is_what_this_version_writes() -> None:
    """The committed format-2 sample is regenerated by the current code (so it cannot drift)."""
    written = _format_2_sample()
    committed = json.loads((DATA / "graph-format-2.json").read_text())
    written["tiegraph"]["version"] = committed["tiegraph"]["version"]  # type: ignore[index]
    assert written == committed
    unknown = [n for n in committed["nodes"] if n["kind"] == "slot" and n["shape"] is None]
    assert unknown
    assert all(n["device"] == "unknown" for n in unknown)


def test_unknown_format_is_refused_naming_what_is_read() -> None:
    data = json.loads((DATA / "graph-format-1.json").read_text())
    data["tiegraph"]["format"] = 3
    with pytest.raises(tiegraph.GraphFormatError, match=r"format 3 is not supported.*reads formats 1, 2"):
        tiegraph.TieGraph.from_json(data)


if __name__ == "__main__":  # regenerate the format-2 sample: python tests/test_record.py
    (DATA / "graph-format-2.json").write_text(json.dumps(_format_2_sample(), indent=1, sort_keys=True) + "\n")
