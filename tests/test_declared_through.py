"""A declaration resolves through torch's re-parametrizations: parametrize, pruning, weight and spectral norm.

``torch.nn.utils.parametrize`` moves a weight to ``parametrizations.weight.original`` (several originals,
``original0``/``original1``, for the new ``weight_norm``), pruning and the old ``spectral_norm`` to
``weight_orig``, the old ``weight_norm`` to ``weight_g``/``weight_v``; ``weight`` is then a computed
attribute, no slot. The declared ``lm_head.weight`` names the tensor that carries the tie: it is never an
``unresolved-declaration`` (which said "fix that _tied_weights_keys entry"), and the tie is judged on the
memory as for any slot. Real torch utilities on a tiny transformers Llama built from its config, and on
plain modules declaring a dict or a transformers 4 list (whose input-embedding end resolves so too).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from conftest import BuildFn
from models import llama
from torch import nn
from torch.nn.utils import parametrizations, prune

X = torch.tensor([[1, 2, 3]])


def _new_weight_norm(module: nn.Module) -> None:
    parametrizations.weight_norm(module, "weight")


def _old_weight_norm(module: nn.Module) -> None:
    torch.nn.utils.weight_norm(module, "weight")


def _prune(module: nn.Module) -> None:
    prune.l1_unstructured(module, "weight", amount=0.3)


def _new_spectral_norm(module: nn.Module) -> None:
    parametrizations.spectral_norm(module, "weight")


def _old_spectral_norm(module: nn.Module) -> None:
    torch.nn.utils.spectral_norm(module, "weight")


#: utility -> (the slot that carries the declared weight, under the module; whether it is another Parameter
#: object over the same bytes: storage-only-tie, which .half() splits)
UTILITIES: dict[str, tuple[Callable[[nn.Module], None], str, bool]] = {
    "weight_norm": (_new_weight_norm, "parametrizations.weight.original1", True),
    "old-weight_norm": (_old_weight_norm, "weight_v", True),
    "prune": (_prune, "weight_orig", False),
    "spectral_norm": (_new_spectral_norm, "weight", False),  # one original: named weight already
    "old-spectral_norm": (_old_spectral_norm, "weight_orig", False),
}


def _expected(utility: str, storage_only: bool) -> list[str]:
    """The findings left: storage-only-tie and weight-normed-tied-weight (weight_norm's direction, a new
    Parameter, computed into g * v / ||v||), parametrized-tied-weight for a parametrization with one original
    and spectral-normed-tied-weight for the hook-based one (the head computes W / sigma, the embedding W),
    pruned-tied-weight (W * mask)."""
    if utility == "spectral_norm":
        return ["parametrized-tied-weight"]
    if utility == "old-spectral_norm":
        return ["spectral-normed-tied-weight"]
    if utility == "prune":
        return ["pruned-tied-weight"]
    return ["storage-only-tie", "weight-normed-tied-weight"] if storage_only else []


def _module(model: nn.Module, end: str) -> nn.Module:
    return model.get_submodule("lm_head" if end == "head" else "model.embed_tokens")


#: spectral_norm is left off the embedding (torch would normalise it over the other dimension)
CASES = [
    (u, end)
    for u in UTILITIES
    for end in ("head", "embedding")
    if not (u.endswith("spectral_norm") and end == "embedding")
]


@pytest.mark.parametrize(("utility", "end"), CASES)
def test_declaration_resolves_through(build: BuildFn, utility: str, end: str) -> None:
    apply, carrier, storage_only = UTILITIES[utility]
    model = llama()
    apply(_module(model, end))
    tg = build(model)
    found = tg.audit()
    kinds = [f.kind for f in found]
    assert kinds == _expected(utility, storage_only)  # no unresolved-declaration, no stale keys
    (tie,) = tg.declared_ties()
    assert tie.status == "tied"
    name = ("lm_head." if end == "head" else "model.embed_tokens.") + carrier
    assert name in (tie.target, tie.source)
    assert tg.tied_to_input_embedding() == ["lm_head"]
    with torch.no_grad():
        model(X)


@pytest.mark.parametrize("utility", ["weight_norm", "old-weight_norm"])
def test_weight_norm_storage_only_tie_is_real_and_its_advice_works(build: BuildFn, utility: str) -> None:
    """weight_norm makes the direction a new Parameter over the embedding's bytes: .half() splits it, as
    storage-only-tie says; its advice (one Parameter) keeps the pair one tensor through .half()."""
    apply, carrier, _ = UTILITIES[utility]
    model = llama()
    apply(model.lm_head)
    found, normed = build(model).audit()
    assert (found.kind, normed.kind) == ("storage-only-tie", "weight-normed-tied-weight")
    path = f"lm_head.{carrier}"
    owner, _, attr = path.rpartition(".")
    model.half()
    assert (
        model.get_submodule(owner).get_parameter(attr).data_ptr()
        != model.model.embed_tokens.weight.data_ptr()
    )

    model = llama()
    apply(model.lm_head)
    assert f"model.{path} = model.model.embed_tokens.weight" in found.message
    setattr(model.get_submodule(owner), attr, model.model.embed_tokens.weight)
    assert [f.kind for f in build(model).audit()] == ["weight-normed-tied-weight"]  # g still trains apart
    model.half()
    assert model.get_submodule(owner).get_parameter(attr) is model.model.embed_tokens.weight


@pytest.mark.parametrize("declared", ["dict", "list"])
@pytest.mark.parametrize("utility", ["weight_norm", "old-weight_norm", "prune"])
def test_an_untied_copy_stays_declared_not_tied(build: BuildFn, utility: str, declared: str) -> None:
    """A head holding its own copy, then re-parametrized: the declaration (a dict on the Llama, a
    transformers 4 list) still resolves, and the pair is judged not tied (the finding that says so), not an
    entry to fix."""
    apply, carrier, _ = UTILITIES[utility]
    model: nn.Module = llama() if declared == "dict" else Listed()
    head, embedding = ("lm_head", "model.embed_tokens") if declared == "dict" else ("head", "embed")
    module = model.get_submodule(head)
    module.weight = nn.Parameter(module.get_parameter("weight").detach().clone())
    apply(module)
    found = build(model).audit()
    assert "unresolved-declaration" not in [f.kind for f in found]
    (declared_not_tied,) = [f for f in found if f.kind == "declared-not-tied"]
    assert declared_not_tied.paths == tuple(sorted((f"{head}.{carrier}", f"{embedding}.weight")))


class Listed(nn.Module):
    """A transformers 4 style list: the target is tied to the input embedding's slot of its attribute."""

    _tied_weights_keys = ["head.weight"]  # noqa: RUF012

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.embed.weight

    def get_input_embeddings(self) -> nn.Module:
        return self.embed


class Plain(nn.Module):
    """A plain module declaring its tie (names resolved by tiegraph, not by transformers)."""

    _tied_weights_keys = {"head.weight": "embed.weight"}  # noqa: RUF012

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.embed.weight


@pytest.mark.parametrize("utility", list(UTILITIES))
def test_plain_module_declaration_resolves_through(build: BuildFn, utility: str) -> None:
    apply, _, storage_only = UTILITIES[utility]
    model = Plain()
    apply(model.head)
    kinds = [f.kind for f in build(model).audit()]
    assert kinds == _expected(utility, storage_only)


#: every utility on either end (spectral_norm too: the embedding end of a list resolved by attribute alone)
LISTED = [(u, end) for u in UTILITIES for end in ("head", "embed")]


@pytest.mark.parametrize(("utility", "end"), LISTED)
def test_list_declaration_resolves_through(build: BuildFn, utility: str, end: str) -> None:
    """A list's target and the input embedding's slot resolve through their carriers as a dict's do: the
    re-parametrized end is the tensor that carries it, on the head or on the embedding."""
    apply, carrier, storage_only = UTILITIES[utility]
    model = Listed()
    apply(model.get_submodule(end))
    tg = build(model)
    assert [f.kind for f in tg.audit()] == _expected(utility, storage_only)
    (tie,) = tg.declared_ties()
    assert (tie.status, tie.declared_as) == ("tied", ("head.weight", "<input embedding>"))
    assert f"{end}.{carrier}" == (tie.target if end == "head" else tie.source)
