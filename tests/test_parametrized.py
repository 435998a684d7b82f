"""A parametrization registered on one end of a tie: ``parametrized-tied-weight`` says what happened.

Measured with real torch on a tiny transformers Llama built from its config: ``orthogonal``'s
``right_inverse`` rewrites the shared tensor (the embedding loses its trained values and neither
``remove_parametrizations`` mode restores them), ``spectral_norm``'s leaves it as it was (and
``remove_parametrizations(leave_parametrized=False)`` gives it back, tied); either way the head computes
another weight than the embedding. The advice (untie first) is carried out.
"""

from __future__ import annotations

import pytest
import torch
from conftest import BuildFn
from models import llama
from torch import nn
from torch.nn.utils import parametrizations, parametrize, prune

import tiegraph


class Doubled(nn.Module):
    """A parametrization of a user's own, with a right_inverse."""

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w * 2

    def right_inverse(self, w: torch.Tensor) -> torch.Tensor:
        return w / 2


def _kinds(found: list[tiegraph.Finding]) -> list[str]:
    return [f.kind for f in found]


@pytest.mark.parametrize("orthogonal_map", ["matrix_exp", "cayley", "householder"])
def test_orthogonal_on_a_tied_head_rewrites_the_embedding(build: BuildFn, orthogonal_map: str) -> None:
    model = llama()
    trained = model.model.embed_tokens.weight.detach().clone()
    parametrizations.orthogonal(model.lm_head, "weight", orthogonal_map=orthogonal_map)
    embedding = model.model.embed_tokens.weight
    assert model.lm_head.parametrizations.weight.original is embedding  # still one Parameter
    assert (embedding - trained).abs().max() > trained.abs().max()  # its trained values are gone
    assert not torch.allclose(model.lm_head.weight, embedding)  # and the head computes another weight
    found = build(model).audit()
    assert _kinds(found) == ["parametrized-tied-weight"]
    (finding,) = found
    assert finding.severity == "error"
    assert finding.paths == ("lm_head.weight", "model.embed_tokens.weight")
    message = finding.message
    assert "lm_head's forward uses _Orthogonal(W) while model.embed_tokens.weight uses W itself" in message
    assert "set the shared tensor to _Orthogonal.right_inverse(W)" in message
    assert "neither remove_parametrizations mode brings them back" in message
    for leave in (True, False):  # what the message says about remove_parametrizations
        again = llama()
        before = again.model.embed_tokens.weight.detach().clone()
        parametrizations.orthogonal(again.lm_head, "weight", orthogonal_map=orthogonal_map)
        parametrize.remove_parametrizations(again.lm_head, "weight", leave_parametrized=leave)
        assert not torch.allclose(again.model.embed_tokens.weight, before)


def test_untie_first_keeps_the_embedding(build: BuildFn) -> None:
    """The advice: untie the head, then register: the embedding keeps its trained values."""
    model = llama()
    trained = model.model.embed_tokens.weight.detach().clone()
    model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())
    parametrizations.orthogonal(model.lm_head, "weight")
    assert torch.equal(model.model.embed_tokens.weight, trained)
    assert "parametrized-tied-weight" not in _kinds(build(model).audit())


def test_spectral_norm_rewrites_nothing_and_is_undone_in_place(build: BuildFn) -> None:
    model = llama()
    trained = model.model.embed_tokens.weight.detach().clone()
    parametrizations.spectral_norm(model.lm_head, "weight")
    assert torch.equal(model.model.embed_tokens.weight, trained)
    (finding,) = build(model).audit()
    assert finding.kind == "parametrized-tied-weight"
    assert "right_inverse" not in finding.message
    assert "remove_parametrizations(model.lm_head, 'weight', leave_parametrized=False)" in finding.message
    parametrize.remove_parametrizations(model.lm_head, "weight", leave_parametrized=False)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert torch.equal(model.lm_head.weight, trained)
    assert build(model).audit() == []


@pytest.mark.parametrize("unsafe", [False, True])
def test_own_parametrization_on_the_embedding(build: BuildFn, unsafe: bool) -> None:
    """The embedding parametrized, with a user's class: the head holds right_inverse's output."""
    model = llama()
    trained = model.model.embed_tokens.weight.detach().clone()
    parametrize.register_parametrization(model.model.embed_tokens, "weight", Doubled(), unsafe=unsafe)
    assert torch.allclose(model.lm_head.weight, trained / 2)
    (finding,) = build(model).audit()
    assert finding.kind == "parametrized-tied-weight"
    message = finding.message
    assert "model.embed_tokens's forward uses Doubled(W) while lm_head.weight uses W itself" in message
    assert "so lm_head.weight now holds right_inverse's output" in message


def test_read_back_from_json_hedges(build: BuildFn) -> None:
    """A graph read back keeps no classes: whether right_inverse rewrote the tensor is said as a may."""
    model = llama()
    parametrizations.orthogonal(model.lm_head, "weight")
    again = tiegraph.TieGraph.from_json(build(model).to_json())
    (finding,) = again.audit()
    assert finding.kind == "parametrized-tied-weight"
    assert "may hold right_inverse's output" in finding.message


def test_pruning_a_tied_head(build: BuildFn) -> None:
    """Pruning keeps the embedding's Parameter as weight_orig (the tie is intact) but the head computes
    W * mask, and prune.remove writes the mask into the shared tensor: the embedding is pruned too."""
    model = llama()
    trained = model.model.embed_tokens.weight.detach().clone()
    prune.l1_unstructured(model.lm_head, "weight", amount=0.5)
    (finding,) = build(model).audit()
    assert finding.kind == "pruned-tied-weight"
    assert finding.severity == "warning"
    assert finding.paths == ("lm_head.weight_orig", "model.embed_tokens.weight")
    assert "would write the mask into the shared tensor, pruning model.embed_tokens.weight as well" in (
        finding.message
    )
    prune.remove(model.lm_head, "weight")
    embedding = model.model.embed_tokens.weight
    assert model.lm_head.weight is embedding
    assert int((embedding == 0).sum()) >= embedding.numel() // 2 > int((trained == 0).sum())

    model = llama()  # the advice: untie first, from the bytes that are still the trained ones
    trained = model.model.embed_tokens.weight.detach().clone()
    prune.l1_unstructured(model.lm_head, "weight", amount=0.5)
    model.lm_head.weight_orig = torch.nn.Parameter(model.lm_head.weight_orig.detach().clone())
    assert "pruned-tied-weight" not in _kinds(build(model).audit())
    prune.remove(model.lm_head, "weight")
    assert torch.equal(model.model.embed_tokens.weight, trained)
