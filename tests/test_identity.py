"""Storage ties (several Parameter objects over shared bytes) and what the audit says about them."""

from __future__ import annotations

import subprocess
import sys
from typing import TYPE_CHECKING

import pytest
import torch
from models import llama, lora_ensure_weight_tying
from torch import nn

import tiegraph
import tiegraph.testing
from tiegraph._graph import view_of
from tiegraph._identity import storage_ties

if TYPE_CHECKING:
    from transformers import LlamaForCausalLM


def _assigned() -> LlamaForCausalLM:
    """A tied Llama reloaded with ``load_state_dict(..., assign=True)``: two Parameters over one tensor."""
    model = llama()
    model.load_state_dict(model.state_dict(), assign=True)
    assert model.lm_head.weight is not model.model.embed_tokens.weight
    return model


def _kinds(model: nn.Module | tiegraph.TieGraph) -> list[str]:
    tg = model if isinstance(model, tiegraph.TieGraph) else tiegraph.build_graph(model)
    return [f.kind for f in tg.audit()]


def test_assign_load_is_a_storage_only_tie() -> None:
    """The finding's advice makes one Parameter, loses no value, and then survives .half() (real torch)."""
    model = _assigned()
    found = [f for f in tiegraph.build_graph(model).audit() if f.kind == "storage-only-tie"]
    assert [(f.severity, f.paths) for f in found] == [
        ("warning", ("lm_head.weight", "model.embed_tokens.weight"))
    ]
    advice = "model.lm_head.weight = model.model.embed_tokens.weight"
    assert advice in found[0].message
    assert "nothing trained is lost" in found[0].message
    # what the message claims: a cast unties a storage tie
    assert tiegraph.build_graph(_assigned().half()).tie_groups() == []
    before = model.model.embed_tokens.weight.detach().clone()
    model.lm_head.weight = model.model.embed_tokens.weight  # the advice, as written
    assert "storage-only-tie" not in _kinds(model)
    assert torch.equal(model.lm_head.weight, before)
    assert tiegraph.build_graph(model.half()).tie_groups() == [
        ["lm_head.weight", "model.embed_tokens.weight"]
    ]


@pytest.mark.usefixtures("process_group")
def test_fully_shard_splits_a_storage_tie_and_keeps_an_identity_tie() -> None:
    """The message's FSDP2 claim, on a real (one-rank gloo) fully_shard."""
    from torch.distributed.fsdp import fully_shard

    identity, storage = llama(), _assigned()
    fully_shard(identity)
    fully_shard(storage)
    assert tiegraph.build_graph(identity).tie_groups() == [["lm_head.weight", "model.embed_tokens.weight"]]
    assert tiegraph.build_graph(storage).tie_groups() == []


def test_peft_transposed_adapters_are_information() -> None:
    """PEFT's ensure_weight_tying ties adapters as transposed views: info, never a failure of --strict."""
    model = lora_ensure_weight_tying()
    found = [f for f in tiegraph.build_graph(model).audit() if f.kind.startswith("storage-")]
    assert {(f.kind, f.severity) for f in found} == {("storage-tie-by-view", "info")}
    assert len(found) == 2
    assert "transposed" in found[0].message
    assert "autocast_adapter_dtype=False" in found[0].message
    assert "= model." not in found[0].message  # no assignment advice: these cannot be one Parameter
    tiegraph.testing.assert_no_findings(model)
    assert len(tiegraph.build_graph(model.half()).tie_groups()) == 1  # the claim: .half() unties the adapters


def test_peft_autocast_of_a_half_model_unties_the_adapters() -> None:
    """The advice's PEFT caveat, measured: float32 autocast of adapters on a float16 model unties them."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=2, target_modules=["embed_tokens", "lm_head"], ensure_weight_tying=True)
    tied = get_peft_model(llama().half(), config, autocast_adapter_dtype=False)
    assert len(tiegraph.build_graph(tied).tie_groups()) == 3
    config = LoraConfig(r=2, target_modules=["embed_tokens", "lm_head"], ensure_weight_tying=True)
    cast = get_peft_model(llama().half(), config)
    assert len(tiegraph.build_graph(cast).tie_groups()) == 1


@pytest.mark.parametrize(
    ("make", "alias"),
    [
        (lambda w: nn.Parameter(w.detach()), True),
        (lambda w: nn.Parameter(w.t()), False),  # square: same shape and bytes, other strides
        (lambda w: nn.Parameter(w[:2]), False),
    ],
    ids=["alias", "transposed-square", "slice"],
)
def test_alias_or_view(make: object, alias: bool) -> None:
    """Same bytes in the same layout is an alias; a transposed square view is not, also after JSON."""
    m = nn.Module()
    m.a, m.b = nn.Linear(4, 4, bias=False), nn.Linear(4, 4, bias=False)
    m.b.weight = make(m.a.weight)  # type: ignore[operator]
    tg = tiegraph.build_graph(m)
    expected = "storage-only-tie" if alias else "storage-tie-by-view"
    assert expected in _kinds(tg)
    assert _kinds(tiegraph.TieGraph.from_json(tg.to_json())) == _kinds(tg)
    ties = storage_ties(view_of(tg))
    assert [t.alias for t in ties] == [alias]


def test_identity_tie_says_nothing() -> None:
    assert not any(k.startswith("storage-") for k in _kinds(llama()))


def test_identity_room_imports_first() -> None:
    """A later room (sharding) imports the kinds from here: no import cycle when it is imported first."""
    code = "import tiegraph._identity as i; print(sorted(i.KINDS))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=".")
    assert "storage-only-tie" in out.stdout
