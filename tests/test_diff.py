"""``tiegraph.diff``: what a step did to the ties, on real tiny transformers and PEFT.

Every step here is a real call (``get_peft_model``, ``torch.compile``, ``model.to(dtype)``, a re-assigned
parameter, a JSON round trip); the expected answers are read off what torch really holds afterwards.
"""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from models import compiled, llama, t5
from torch import nn

import tiegraph
from tiegraph import TieDiff, TieGraph

PAIR = ("lm_head.weight", "model.embed_tokens.weight")


def _peft(model: nn.Module, **config: object) -> nn.Module:
    from peft import LoraConfig, get_peft_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return get_peft_model(model, LoraConfig(r=2, **config))  # type: ignore[arg-type]


def _reloaded(tg: TieGraph) -> TieGraph:
    return TieGraph.from_json(json.loads(json.dumps(tg.to_json())))


def test_the_same_model_wrapped_lines_up() -> None:
    """A bare model and its torch.compile'd self are matched by canonical names: nothing changed."""
    model = llama(True)
    d = tiegraph.diff(model, compiled(model))
    assert isinstance(d, TieDiff)
    assert not d
    assert (d.broken, d.made, d.added, d.removed) == ([], [], [], [])
    assert d.tied_before == d.tied_after == ["lm_head"]
    assert str(d) == "ties unchanged (tied to the input embedding: lm_head)"


def test_untying_the_head_is_broken_and_said_in_words() -> None:
    """Giving lm_head its own copy breaks the pair, empties the tied targets and adds a finding."""
    model = llama(True)
    before = tiegraph.build_graph(model)
    model.lm_head.weight = nn.Parameter(model.lm_head.weight.detach().clone())
    d = tiegraph.diff(before, model)
    assert d
    assert d.broken == [PAIR]
    assert d.made == []
    assert (d.tied_before, d.tied_after) == (["lm_head"], [])
    assert [f.kind for f in d.findings_added] == ["declared-not-tied", "config-says-tied-but-nothing-is"]
    assert d.findings_resolved == []
    lines = str(d).splitlines()
    assert lines[0] == "lm_head.weight no longer shares memory with model.embed_tokens.weight"
    assert lines[1] == "tied to the input embedding model.embed_tokens: lm_head before, nothing after"
    assert lines[2] == "new finding declared-not-tied: lm_head.weight, model.embed_tokens.weight"
    # and back: the reverse diff makes the pair
    back = tiegraph.diff(model, before)
    assert back.made == [PAIR]
    assert back.broken == []
    assert str(back).startswith("lm_head.weight now shares memory with model.embed_tokens.weight")


def test_lora_on_q_proj_adds_slots_but_changes_no_tie() -> None:
    """Untied adapters are listed as added but do not make the diff true."""
    model = llama(True)
    before = tiegraph.build_graph(model)
    d = tiegraph.diff(before, _peft(model, target_modules=["q_proj"]))
    assert not d
    assert d.added == [
        "model.layers.0.self_attn.q_proj.lora_A.default.weight",
        "model.layers.0.self_attn.q_proj.lora_B.default.weight",
    ]
    assert d.removed == []
    assert str(d).splitlines()[-1].startswith("2 slots added: model.layers.0.self_attn.q_proj.lora_A")


def test_ensure_weight_tying_makes_adapter_pairs() -> None:
    """PEFT ties the adapters of embedding and head by transposed views: two pairs made, both added."""
    model = llama(True)
    before = tiegraph.build_graph(model)
    after = _peft(model, target_modules=["embed_tokens", "lm_head"], ensure_weight_tying=True)
    d = tiegraph.diff(before, after)
    assert d.broken == []
    assert d.made == [
        ("lm_head.lora_A.default.weight", "model.embed_tokens.lora_embedding_B.default"),
        ("lm_head.lora_B.default.weight", "model.embed_tokens.lora_embedding_A.default"),
    ]
    assert "lm_head.lora_A.default.weight (added) now shares memory with " in str(d)


def test_modules_to_save_is_judged_on_the_active_copy() -> None:
    """peft#2777: the active modules_to_save copy of lm_head is a deepcopy, so the pair is broken,
    although original_module (unused by forward) still shares memory with the embedding."""
    model = llama(True)
    before = tiegraph.build_graph(model)
    after = _peft(model, target_modules=["q_proj"], modules_to_save=["lm_head"])
    d = tiegraph.diff(before, after)
    assert d.broken == [PAIR]
    assert "lm_head.weight no longer shares memory with model.embed_tokens.weight" in str(d)


def test_dtype_change_of_a_tied_group() -> None:
    """model.to(bfloat16) keeps the tie (torch converts a shared parameter once) and changes its dtype."""
    model = llama(True)
    before = tiegraph.build_graph(model)
    model.to(torch.bfloat16)  # type: ignore[arg-type]  # transformers' wrapper of .to hides self from mypy
    d = tiegraph.diff(before, model)
    assert d.broken == d.made == []
    assert [(c.slot, c.before, c.after) for c in d.dtype] == [
        ("lm_head.weight", "float32", "bfloat16"),
        ("model.embed_tokens.weight", "float32", "bfloat16"),
    ]
    assert d  # a tied slot changed dtype
    assert "lm_head.weight dtype: float32 -> bfloat16" in str(d)
    assert d.placement == []
    assert d.quantization == []


def test_moving_to_meta_breaks_the_tie_and_moves_both() -> None:
    """model.to("meta") cannot convert a parameter in place (cpu and meta tensors are not
    shallow-copy compatible), so torch gives each module its own new parameter: the tie breaks, and the
    placement (read from the device where no placement is recorded) of both slots changes."""
    model = llama(True)
    before = tiegraph.build_graph(model)
    model.to("meta")  # type: ignore[arg-type]  # transformers' wrapper of .to hides self from mypy
    assert model.lm_head.weight is not model.model.embed_tokens.weight
    d = tiegraph.diff(before, model)
    assert d.broken == [PAIR]
    assert [(c.slot, c.before, c.after) for c in d.placement] == [
        ("lm_head.weight", "cpu", "meta"),
        ("model.embed_tokens.weight", "cpu", "meta"),
    ]
    assert "model.embed_tokens.weight placement: cpu -> meta" in str(d).splitlines()


def test_graphs_reloaded_from_json_compare_like_built_ones() -> None:
    """A graph written with to_json and read back diffs exactly as the graph it was written from."""
    model = llama(True)
    before = tiegraph.build_graph(model)
    model.lm_head.weight = nn.Parameter(model.lm_head.weight.detach().clone())
    after = tiegraph.build_graph(model)
    assert not tiegraph.diff(before, _reloaded(before))
    assert tiegraph.diff(_reloaded(before), _reloaded(after)) == tiegraph.diff(before, after)
    assert str(tiegraph.diff(_reloaded(before), model)) == str(tiegraph.diff(before, after))


def test_t5_fan_out_is_one_sentence() -> None:
    """T5 ties four names to one tensor; untying lm_head breaks three pairs, said in one sentence."""
    model = t5()
    before = tiegraph.build_graph(model)
    model.lm_head.weight = nn.Parameter(model.lm_head.weight.detach().clone())
    d = tiegraph.diff(before, model)
    assert d.broken == [
        ("decoder.embed_tokens.weight", "lm_head.weight"),
        ("encoder.embed_tokens.weight", "lm_head.weight"),
        ("lm_head.weight", "shared.weight"),
    ]
    assert str(d).splitlines()[0] == (
        "lm_head.weight no longer shares memory with decoder.embed_tokens.weight, "
        "encoder.embed_tokens.weight, shared.weight"
    )


def test_removed_slots_break_their_pairs() -> None:
    """A module deleted from the model: its slot is removed and its tie counts as broken."""
    model = llama(True)
    before = tiegraph.build_graph(model)
    model.lm_head = nn.Identity()
    d = tiegraph.diff(before, model)
    assert d.removed == ["lm_head.weight"]
    assert d.broken == [PAIR]
    assert str(d).splitlines()[0] == (
        "lm_head.weight (removed) no longer shares memory with model.embed_tokens.weight"
    )


@pytest.mark.parametrize("bad", [None, "model", {"nodes": []}])
def test_bad_sides_are_type_errors(bad: object) -> None:
    with pytest.raises(
        TypeError,
        match=r"diff expects a TieGraph, a torch\.nn\.Module or a torch\.export\.ExportedProgram as after",
    ):
        tiegraph.diff(nn.Linear(2, 2), bad)  # type: ignore[arg-type]


def test_diff_is_the_public_function_after_importing_the_module() -> None:
    """``tiegraph.diff`` is the function once its module (``tiegraph._diff``) is imported too."""
    import tiegraph._diff as _module  # noqa: F401
    import tiegraph.testing

    assert callable(tiegraph.diff)
    assert tiegraph.diff.__name__ == "diff"


def test_diff_is_the_function_when_tiegraph_testing_is_imported_first() -> None:
    """In a fresh interpreter: ``import tiegraph.testing`` before any use of ``tiegraph.diff`` (a test file
    that imports the helpers) left ``tiegraph.diff`` the submodule, and ``tiegraph.diff(a, b)`` raised
    "'module' object is not callable"."""
    import subprocess
    import sys

    code = "import tiegraph.testing, tiegraph; print(callable(tiegraph.diff), tiegraph.diff.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "diff"]
