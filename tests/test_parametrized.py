"""A parametrization registered on one end of a tie: ``parametrized-tied-weight`` says what happened.

Measured with real torch on a tiny transformers Llama built from its config: ``orthogonal``'s
``right_inverse`` rewrites the shared tensor (the embedding loses its trained values and neither
``remove_parametrizations`` mode restores them), ``spectral_norm``'s leaves it as it was (and
``remove_parametrizations(leave_parametrized=False)`` gives it back, tied); either way the head computes
another weight than the embedding. The advice (untie first) is carried out. The same for torch's
re-parametrizations that keep the tied tensor under a name of their own: pruning (``pruned-tied-weight``),
the hook-based ``spectral_norm`` (``spectral-normed-tied-weight``: ``weight_orig / sigma``) and both
``weight_norm`` APIs (``weight-normed-tied-weight``: ``g * v / ||v||``, apart once ``g`` trains).
"""

from __future__ import annotations

import pytest
import torch
from conftest import BuildFn
from models import llama
from torch import nn
from torch.nn.utils import parametrizations, parametrize, prune

import tiegraph

X = torch.tensor([[1, 2, 3]])


class Doubled(nn.Module):
    """A parametrization of a user's own, with a right_inverse."""

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w * 2

    def right_inverse(self, w: torch.Tensor) -> torch.Tensor:
        return w / 2


def _kinds(found: list[tiegraph.Finding]) -> list[str]:
    return [f.kind for f in found]


def _only(found: list[tiegraph.Finding], kind: str, severity: str, paths: tuple[str, ...]) -> str:
    """The message of the one finding in ``found``, checked to be of ``kind``, ``severity`` and ``paths``."""
    assert _kinds(found) == [kind]
    assert (found[0].severity, found[0].paths) == (severity, paths)
    return found[0].message


@pytest.mark.parametrize("orthogonal_map", ["matrix_exp", "cayley", "householder"])
def test_orthogonal_on_a_tied_head_rewrites_the_embedding(build: BuildFn, orthogonal_map: str) -> None:
    model = llama()
    trained = model.model.embed_tokens.weight.detach().clone()
    parametrizations.orthogonal(model.lm_head, "weight", orthogonal_map=orthogonal_map)
    embedding = model.model.embed_tokens.weight
    assert model.lm_head.parametrizations.weight.original is embedding  # still one Parameter
    assert (embedding - trained).abs().max() > trained.abs().max()  # its trained values are gone
    assert not torch.allclose(model.lm_head.weight, embedding)  # and the head computes another weight
    paths = ("lm_head.weight", "model.embed_tokens.weight")
    message = _only(build(model).audit(), "parametrized-tied-weight", "error", paths)
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


def test_old_spectral_norm_on_a_tied_head(build: BuildFn) -> None:
    """The hook-based spectral_norm keeps the embedding's Parameter as weight_orig (nothing rewritten) and
    the head computes weight_orig / sigma, sigma estimated from its weight_u and weight_v buffers."""
    model = llama()
    embedding = model.model.embed_tokens.weight
    trained = embedding.detach().clone()
    torch.nn.utils.spectral_norm(model.lm_head, "weight")
    assert model.lm_head.weight_orig is embedding
    with torch.no_grad():
        for _ in range(20):  # training mode: each forward runs a power iteration into weight_u, weight_v
            model(X)
    assert torch.equal(embedding, trained)  # registering and the forwards rewrote nothing
    u, v = model.lm_head.weight_u, model.lm_head.weight_v
    sigma = torch.dot(u, torch.mv(embedding, v))
    assert 0 < sigma <= torch.linalg.matrix_norm(trained, ord=2) * (1 + 1e-5)  # power iteration: from below
    assert torch.allclose(model.lm_head.weight, embedding / sigma)
    assert not torch.allclose(model.lm_head.weight, embedding)  # the tied ends compute different weights
    paths = ("lm_head.weight_orig", "model.embed_tokens.weight")
    message = _only(build(model).audit(), "spectral-normed-tied-weight", "error", paths)
    assert "lm_head's forward uses weight_orig / sigma" in message
    assert "while model.embed_tokens.weight uses it undivided" in message
    assert "model.lm_head.weight_orig = torch.nn.Parameter(model.lm_head.weight_orig.detach().clone())" in (
        message
    )
    exec(message.split("untie it (", 1)[1].split(":", 1)[0], {"torch": torch, "model": model})  # the advice
    assert "spectral-normed-tied-weight" not in _kinds(build(model).audit())
    assert torch.equal(embedding, trained)
    assert torch.equal(model.lm_head.weight_orig, trained)
    optimizer = torch.optim.SGD([model.lm_head.weight_orig], lr=0.1)
    model(X).logits.sum().backward()
    optimizer.step()
    assert torch.equal(embedding, trained)  # training the head's own copy leaves the embedding alone
    assert not torch.equal(model.lm_head.weight_orig, trained)


def _weight_norm(model: nn.Module, api: str) -> tuple[nn.Parameter, nn.Parameter]:
    """weight_norm on the tied head, by either API: (g, v)."""
    head = model.get_submodule("lm_head")
    if api == "old":
        torch.nn.utils.weight_norm(head, "weight")
        names = ("weight_g", "weight_v")
    else:
        parametrizations.weight_norm(head, "weight")
        names = ("parametrizations.weight.original0", "parametrizations.weight.original1")
    return head.get_parameter(names[0]), head.get_parameter(names[1])


#: weight_norm's API -> the canonical names of its g and v on the head
WEIGHT_NORMS = {
    "old": ("lm_head.weight_g", "lm_head.weight_v"),
    "new": (
        "lm_head.parametrizations.weight.original0",
        "lm_head.parametrizations.weight.original1",
    ),
}


@pytest.mark.parametrize("api", list(WEIGHT_NORMS))
def test_weight_norm_on_a_tied_head_drifts_once_g_trains(build: BuildFn, api: str) -> None:
    """weight_norm's direction v is the embedding's bytes and the head computes g * v / ||v||: equal at
    registration, apart after one step on g; the padding row (zero in v) is NaN in the head."""
    model = llama()
    embedding = model.model.embed_tokens.weight
    g, v = _weight_norm(model, api)
    assert v is not embedding
    assert v.data_ptr() == embedding.data_ptr()
    rows = slice(1, None)  # row 0 is the embedding's padding row: zero
    assert model.model.embed_tokens.padding_idx == 0
    assert not embedding[0].any()
    with torch.no_grad():
        assert torch.allclose(model.lm_head.weight[rows], embedding[rows])
        assert model.lm_head.weight[0].isnan().all()
    found = build(model).audit()
    assert _kinds(found) == ["storage-only-tie", "weight-normed-tied-weight"]
    finding = found[1]
    assert finding.severity == "warning"
    norm, direction = WEIGHT_NORMS[api]
    assert finding.paths == (direction, "model.embed_tokens.weight")
    message = finding.message
    assert (
        f"lm_head computes its weight by weight_norm as g * v / ||v|| (g: {norm}, v: {direction})" in message
    )
    assert "drift apart once g trains" in message
    assert "a row where v is zero, such as an embedding's padding row, is NaN in lm_head's weight" in message

    optimizer = torch.optim.SGD([g], lr=0.5)
    model(X).logits[..., rows].sum().backward()
    optimizer.step()
    with torch.no_grad():
        model(X)  # the hook-based weight_norm computes weight before each forward
        head = model.lm_head.weight
        assert torch.allclose(head[rows], (g * v / v.norm(dim=1, keepdim=True))[rows])
        assert (head[rows] - embedding[rows]).abs().max() > 0.1  # drifted

    trained = embedding.detach().clone()  # the advice: untie v; nothing trained is lost
    advice = message.split("else untie it (", 1)[1].split(":", 1)[0]
    assert advice == f"model.{direction} = torch.nn.Parameter(model.{direction}.detach().clone())"
    exec(advice, {"torch": torch, "model": model})
    assert "weight-normed-tied-weight" not in _kinds(build(model).audit())
    assert torch.equal(embedding, trained)
    assert torch.equal(v.detach(), trained)
    with torch.no_grad():
        model(X)
        assert torch.allclose(model.lm_head.weight[rows], head[rows])  # the head computes what it did


def test_weight_normed_kind_read_back_from_json(build: BuildFn) -> None:
    """A graph read back from JSON keeps the slot names and classes the finding is judged on."""
    model = llama()
    parametrizations.weight_norm(model.lm_head, "weight")
    again = tiegraph.TieGraph.from_json(build(model).to_json())
    assert _kinds(again.audit()) == ["storage-only-tie", "weight-normed-tied-weight"]
