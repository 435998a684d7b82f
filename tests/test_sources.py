"""What build_graph accepts besides a plain module tree: TorchScript modules and exported programs.

Regression tests: ``torch.jit.script``/``torch.jit.trace`` modules raised a raw ``KeyError: '_parameters'``
/ ``TypeError`` from the walk, and ``build_graph(torch.export.export(...))`` a ``TypeError``; all three
hold named parameters and buffers with their ties, and are analysed like the module they came from.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable

import pytest
import torch
from conftest import BuildFn
from invariants import check_invariants
from models import TINY_LLAMA
from torch import nn

import tiegraph

# (torch 2.13 deprecates TorchScript; users still hold scripted and traced models)
pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning")


class _Tied(nn.Module):
    """An identity tie (head), a view tie (proj: first rows of the embedding), a persistent and a
    non-persistent buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.embed.weight
        self.proj = nn.Linear(4, 4)
        self.proj.weight = nn.Parameter(self.embed.weight[:4])
        self.register_buffer("kept", torch.zeros(3))
        self.register_buffer("scratch", torch.ones(2), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        # (kept, scratch: buffers; torch.jit.script refuses the class-level annotations that would type them)
        out: torch.Tensor = self.head(h).sum() + self.proj(h).sum() + self.kept.sum() + self.scratch.sum()  # type: ignore[operator]
        return out


_TOKENS = torch.tensor([1, 2, 3])
_GROUP = [["embed.weight", "head.weight", "proj.weight"]]
_SLOTS = ["embed.weight", "head.weight", "proj.bias", "proj.weight", "kept", "scratch"]


def _script() -> nn.Module:
    return torch.jit.script(_Tied())


def _trace() -> nn.Module:
    traced: nn.Module = torch.jit.trace(_Tied(), _TOKENS)
    return traced


@pytest.mark.parametrize("make", [_script, _trace], ids=["script", "trace"])
def test_torchscript_module_ties(make: Callable[[], nn.Module], build: BuildFn) -> None:
    """A scripted or traced module keeps the original Parameter objects: its ties are the model's."""
    scripted = make()
    assert isinstance(scripted, torch.jit.ScriptModule)
    tg = build(scripted, input_embedding="embed")
    assert tg.tie_groups() == _GROUP
    assert tg.tied_to_input_embedding() == ["head", "proj"]
    names = {n for n, _ in scripted.named_parameters(remove_duplicate=False)}
    names |= {n for n, _ in scripted.named_buffers(remove_duplicate=False)}
    assert sorted(names) == sorted(_SLOTS)


def test_traced_transformers_model(build: BuildFn) -> None:
    """A traced tiny Llama (``torchscript=True``, as transformers documents tracing) keeps its tied head."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model("llama", **TINY_LLAMA, torchscript=True, use_cache=False)
    model = AutoModelForCausalLM.from_config(config).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (the tracer's own warnings about Python control flow)
        traced = torch.jit.trace(model, torch.tensor([[1, 2, 3]]), strict=False)
    tg = build(traced, input_embedding="model.embed_tokens")
    assert tg.tie_groups() == [["lm_head.weight", "model.embed_tokens.weight"]]


def test_exported_program_ties() -> None:
    """An ExportedProgram: its state_dict keeps both names of a tied head (one object), and the graph
    names every parameter and buffer as the original model does."""
    model = _Tied()
    ep = torch.export.export(model, (_TOKENS,))
    assert ep.state_dict["head.weight"] is ep.state_dict["embed.weight"]  # what export keeps of a tie
    tg = tiegraph.build_graph(ep, input_embedding="embed")
    check_invariants(ep.module(), tg)
    assert tg.tie_groups() == _GROUP
    assert tg.tied_to_input_embedding() == ["head", "proj"]
    assert sorted(tg.component("")) == sorted(_SLOTS)
    assert str(tiegraph.diff(model, ep, input_embedding="embed")).startswith("ties unchanged")


def test_exported_program_metadata_after_its_module_is_gone() -> None:
    """The module tree ``ep.module()`` gives is the builder's own: details are read before it is collected."""
    ep = torch.export.export(_Tied(), (_TOKENS,))
    data = tiegraph.build_graph(ep, input_embedding="embed").to_json()
    assert any(node.get("shape") == [10, 4] for node in data["nodes"])


def test_exported_transformers_model() -> None:
    """A tiny Gemma (tied by default) exported with torch.export: the head stays tied to the embedding."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(
        "gemma", **{**TINY_LLAMA, "num_key_value_heads": 2, "head_dim": 8}, use_cache=False
    )
    model = AutoModelForCausalLM.from_config(config).eval()
    ep = torch.export.export(model, (torch.tensor([[1, 2, 3]]),))
    tg = tiegraph.build_graph(ep, input_embedding="model.embed_tokens")
    assert tg.tie_groups() == [["lm_head.weight", "model.embed_tokens.weight"]]
    assert {"lm_head.weight", "model.embed_tokens.weight"} <= set(ep.state_dict)


def test_other_objects_name_what_is_accepted() -> None:
    expected = "torch.nn.Module or a torch.export.ExportedProgram, got builtins.dict"
    with pytest.raises(TypeError, match=re.escape(expected)):
        tiegraph.build_graph({"w": torch.zeros(2)})  # type: ignore[arg-type]


def test_module_without_init_is_a_clear_error() -> None:
    """A module class whose ``__init__`` never called ``nn.Module.__init__`` has no slot dicts."""

    class NoInit(nn.Module):
        def __init__(self) -> None:
            pass

    with pytest.raises(tiegraph.TiegraphError, match=r"was nn.Module.__init__ called"):
        tiegraph.build_graph(NoInit())
