"""Wrappers and their compositions: full paths keep every wrapper segment, canonical paths drop them by type.

Real objects only: ``torch.compile`` (wrapped, never run), ``DistributedDataParallel`` on a single-rank gloo
group, a user's own wrapper module, PEFT, and stacks of them. Each case is "a base model + the prefix the
wrappers add to every full path"; the canonical answers are the base model's own names. A user's
submodule that happens to be called ``model`` or ``module`` is not a wrapper and keeps its name.

Real structures (torch 2.13): ``torch.compile`` gives an ``OptimizedModule`` whose names start with
``_orig_mod.``; DDP names start with ``module.`` (and, unlike ``OptimizedModule``, forwards no
attributes: ``hasattr(ddp, "get_input_embeddings")`` is False); ``torch.compile(DDP(m))`` gives
``_orig_mod.module.``, ``DDP(torch.compile(m))`` gives ``module._orig_mod.``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from models import MODELS, PEFT_MODELS, NamedLikeWrappers, Wrapper, compiled
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

import tiegraph

# torch.compile's first use imports torch.jit code that warns about its own deprecation (also in fixtures).
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")


@dataclass(frozen=True)
class Base:
    """Answers of the unwrapped model: canonical names, and full names relative to the innermost wrapper."""

    input_embedding: str
    tied: list[str]
    groups: list[list[str]]
    input_embedding_full: str
    tied_full: list[str]
    groups_full: list[list[str]]


LLAMA = Base(
    "model.embed_tokens",
    ["lm_head"],
    [["lm_head.weight", "model.embed_tokens.weight"]],
    "model.embed_tokens",
    ["lm_head"],
    [["lm_head.weight", "model.embed_tokens.weight"]],
)
PEFT_LORA = Base(
    "model.embed_tokens",
    ["lm_head"],
    [["lm_head.weight", "model.embed_tokens.weight"]],
    "base_model.model.model.embed_tokens",
    ["base_model.model.lm_head.base_layer"],
    [["base_model.model.lm_head.base_layer.weight", "base_model.model.model.embed_tokens.weight"]],
)
# A plain model whose own submodules are called `model` and `module`: canonical == full, names kept.
NAMED_LIKE = Base(
    "model.embed",
    ["module.head"],
    [["model.embed.weight", "module.head.weight"]],
    "model.embed",
    ["module.head"],
    [["model.embed.weight", "module.head.weight"]],
)


def _llama() -> nn.Module:
    return MODELS["llama-tied"]()


def _lora() -> nn.Module:
    return PEFT_MODELS["lora-lm-head"]()


def _meta(factory: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        with torch.device("meta"):
            return factory()

    return build


@dataclass(frozen=True)
class WrapCase:
    make: Callable[[], nn.Module]
    prefix: str  # what the wrappers add in front of every full path of the base model
    base: Base
    why: str
    distributed: bool = False


#: id -> case. Each case's docstring-worthy reason is in ``why``.
CASES: dict[str, WrapCase] = {
    "compile": WrapCase(
        lambda: compiled(_llama()), "_orig_mod.", LLAMA, "OptimizedModule keeps the model at _orig_mod"
    ),
    "compile-meta": WrapCase(
        lambda: compiled(_meta(_llama)()), "_orig_mod.", LLAMA, "torch.compile over a meta model"
    ),
    "ddp": WrapCase(
        lambda: DDP(_llama()),
        "module.",
        LLAMA,
        "DDP keeps the model at .module, no attribute forwarding",
        True,
    ),
    "user-wrapper": WrapCase(
        lambda: Wrapper(_llama()), "inner.", LLAMA, "a user's wrapper above the PreTrainedModel is a prefix"
    ),
    "user-wrapper-attr-model": WrapCase(
        lambda: Wrapper(_llama(), attr="model"),
        "model.",
        LLAMA,
        "a user's wrapper holding the model as `.model` (a LightningModule shape): still only a prefix",
    ),
    "user-wrapper-nested": WrapCase(
        lambda: Wrapper(Wrapper(_llama())), "inner.inner.", LLAMA, "two user wrappers: both prefixes dropped"
    ),
    "user-wrapper-meta": WrapCase(
        lambda: Wrapper(_meta(_llama)()), "inner.", LLAMA, "a user's wrapper around a meta model"
    ),
    "ddp-compile": WrapCase(
        lambda: DDP(compiled(_llama())), "module._orig_mod.", LLAMA, "DDP(torch.compile(m))", True
    ),
    "compile-ddp": WrapCase(
        lambda: compiled(DDP(_llama())), "_orig_mod.module.", LLAMA, "torch.compile(DDP(m))", True
    ),
    "user-wrapper-compile": WrapCase(
        lambda: Wrapper(compiled(_llama())), "inner._orig_mod.", LLAMA, "Wrapper(torch.compile(m))"
    ),
    "peft-compile": WrapCase(
        lambda: compiled(_lora()), "_orig_mod.", PEFT_LORA, "torch.compile(peft_model) (peft#2922 leak)"
    ),
    "peft-ddp": WrapCase(lambda: DDP(_lora()), "module.", PEFT_LORA, "DDP(peft_model)", True),
    "peft-user-wrapper": WrapCase(lambda: Wrapper(_lora()), "inner.", PEFT_LORA, "Wrapper(peft_model)"),
    "peft-compile-user-wrapper": WrapCase(
        lambda: compiled(Wrapper(_lora())),
        "_orig_mod.inner.",
        PEFT_LORA,
        "torch.compile(Wrapper(peft_model)): three wrapper kinds stacked",
    ),
    "peft-compile-user-wrapper-meta": WrapCase(
        lambda: compiled(Wrapper(_meta(_lora)())),
        "_orig_mod.inner.",
        PEFT_LORA,
        "torch.compile(Wrapper(peft_model)) on meta",
    ),
    "named-like-wrappers": WrapCase(
        NamedLikeWrappers, "", NAMED_LIKE, "submodules called model/module are not wrappers: names kept"
    ),
    "named-like-wrappers-compile": WrapCase(
        lambda: compiled(NamedLikeWrappers()),
        "_orig_mod.",
        NAMED_LIKE,
        "only _orig_mod is dropped; the model's own `model`/`module` stay",
    ),
    "named-like-wrappers-ddp": WrapCase(
        lambda: DDP(NamedLikeWrappers()),
        "module.",
        NAMED_LIKE,
        "DDP's `module` is dropped (type DDP), the model's own `module` below it is kept",
        True,
    ),
    "named-like-wrappers-user-wrapper-attr-module": WrapCase(
        lambda: Wrapper(NamedLikeWrappers(), attr="module"),
        "module.",
        NAMED_LIKE,
        "a user's wrapper whose attribute is `module` above a model with its own `module` child",
    ),
}


@dataclass
class Case:
    model: nn.Module
    tg: tiegraph.TieGraph
    wrap: WrapCase

    def full(self, names: list[str]) -> list[str]:
        return [self.wrap.prefix + n for n in names]


@pytest.fixture(
    scope="module",
    params=[
        pytest.param(name, marks=[pytest.mark.distributed] if case.distributed else [])
        for name, case in CASES.items()
    ],
)
def case(request: pytest.FixtureRequest, build: Callable[..., tiegraph.TieGraph]) -> Case:
    """One wrapped model per case, built once per module (DDP cases get the gloo group)."""
    wrap = CASES[request.param]
    if wrap.distributed:
        request.getfixturevalue("process_group")
    torch.manual_seed(0)
    model = wrap.make()
    return Case(model, build(model), wrap)


def test_full_paths_are_real(case: Case) -> None:
    """The expected full names exist in the wrapped model (the table is the truth, not a guess)."""
    slots = {n for n, _ in case.model.named_parameters(remove_duplicate=False)}
    modules = {n for n, _ in case.model.named_modules(remove_duplicate=False)}
    base = case.wrap.base
    assert {case.wrap.prefix + s for group in base.groups_full for s in group} <= slots
    assert set(case.full(base.tied_full)) | {case.wrap.prefix + base.input_embedding_full} <= modules


def test_input_embedding(case: Case) -> None:
    """The input embedding is found by unwrapping by type; full path keeps the wrapper segments."""
    base = case.wrap.base
    assert case.tg.input_embedding() == base.input_embedding, case.wrap.why
    assert case.tg.input_embedding(full_paths=True) == case.wrap.prefix + base.input_embedding_full, (
        case.wrap.why
    )


def test_tied_to_input_embedding(case: Case) -> None:
    """Canonical tied targets are the base model's names; full ones carry every wrapper prefix."""
    base = case.wrap.base
    assert case.tg.tied_to_input_embedding() == base.tied, case.wrap.why
    assert case.tg.tied_to_input_embedding(full_paths=True) == case.full(base.tied_full), case.wrap.why


def test_module_level_tied_to_input_embedding(case: Case) -> None:
    """``tiegraph.tied_to_input_embedding(wrapped)``: no ``_orig_mod.`` / ``module.`` leak (peft#2922)."""
    assert tiegraph.tied_to_input_embedding(case.model) == case.wrap.base.tied, case.wrap.why


def test_tie_groups(case: Case) -> None:
    """Tie group slot names: canonical without wrapper segments, full with them."""
    base = case.wrap.base
    assert case.tg.tie_groups() == base.groups, case.wrap.why
    assert case.tg.tie_groups(full_paths=True) == [case.full(g) for g in base.groups_full], case.wrap.why


def test_component_by_canonical_and_full_name(case: Case) -> None:
    """``component`` accepts a canonical or a full slot name and answers in the asked naming."""
    base = case.wrap.base
    head = base.tied[0] + ".weight"
    (head_full,) = [s for s in base.groups_full[0] if s.startswith(base.tied_full[0] + ".")]
    head_full = case.wrap.prefix + head_full
    assert case.tg.component(head) == base.groups[0]
    assert case.tg.component(head, full_paths=True) == case.full(base.groups_full[0])
    assert case.tg.component(head_full) == base.groups[0]
    assert case.tg.component(head_full, full_paths=True) == case.full(base.groups_full[0])


# ------------------------------------------------------------------------------------ premises


@pytest.mark.usefixtures("process_group")
def test_ddp_does_not_forward_attributes() -> None:
    """DDP, unlike OptimizedModule and PeftModel, forwards no attributes: tools relying on
    ``model.get_input_embeddings()`` through DDP fail, so tiegraph must unwrap it by type."""
    torch.manual_seed(0)
    model = _llama()
    assert hasattr(torch.compile(model), "get_input_embeddings")
    assert not hasattr(DDP(model), "get_input_embeddings")


def test_user_module_named_module_is_not_unwrapped(build: Callable[..., tiegraph.TieGraph]) -> None:
    """A user's submodule called ``module`` (not a DDP) keeps its name in canonical slot names."""
    model = NamedLikeWrappers()
    tg = build(model)
    assert tg.graph.nodes["s:module.head.weight"]["canonical"] == "module.head.weight"
    assert tg.graph.nodes["m:model.embed"]["canonical"] == "model.embed"
