"""Canonical names: the model-root rule (DESIGN.md, Naming) with one model root and with several."""

from __future__ import annotations

import pytest
from conftest import BuildFn
from models import llama_tied
from torch import nn

import tiegraph
from tiegraph._canonical import Namer
from tiegraph.errors import NoInputEmbeddingError


class Pair(nn.Module):
    """A DPO-style container: a policy and a frozen reference, both tied Llamas, side by side."""

    def __init__(self) -> None:
        super().__init__()
        self.policy = llama_tied()
        self.ref = llama_tied()


class Holder(nn.Module):
    """A user's own container around exactly one model."""

    def __init__(self) -> None:
        super().__init__()
        self.model = llama_tied()
        self.extra = nn.Linear(2, 2)


def test_two_model_roots_keep_their_prefixes(build: BuildFn) -> None:
    """Neither ``policy.`` nor ``ref.`` is dropped, and nothing is silently the policy's."""
    tg = build(Pair())
    assert tg.tie_groups() == [
        ["policy.lm_head.weight", "policy.model.embed_tokens.weight"],
        ["ref.lm_head.weight", "ref.model.embed_tokens.weight"],
    ]
    assert tg.tie_groups() == tg.tie_groups(full_paths=True)
    assert tg.input_embedding() is None
    with pytest.raises(NoInputEmbeddingError, match=r"2 model roots side by side: 'policy' .*'ref'"):
        tg.tied_to_input_embedding()
    assert [(t.target, t.source, t.status) for t in tg.declared_ties()] == [
        ("policy.lm_head.weight", "policy.model.embed_tokens.weight", "tied"),
        ("ref.lm_head.weight", "ref.model.embed_tokens.weight", "tied"),
    ]


def test_two_model_roots_with_a_chosen_embedding(build: BuildFn) -> None:
    pair = Pair()
    tg = build(pair, input_embedding=pair.ref.model.embed_tokens)
    assert tg.input_embedding() == "ref.model.embed_tokens"
    assert tg.tied_to_input_embedding() == ["ref.lm_head"]
    assert tiegraph.tied_to_input_embedding(pair, input_embedding="policy.model.embed_tokens") == [
        "policy.lm_head"
    ]


def test_one_model_root_drops_the_prefix_above_it(build: BuildFn) -> None:
    """A user's container named ``model`` around one Llama: its segment is dropped (it is above the root)."""
    tg = build(Holder())
    assert tg.tie_groups() == [["lm_head.weight", "model.embed_tokens.weight"]]
    assert tg.tie_groups(full_paths=True) == [["model.lm_head.weight", "model.model.embed_tokens.weight"]]
    assert tg.tied_to_input_embedding() == ["lm_head"]
    assert tg.input_embedding(full_paths=True) == "model.model.embed_tokens"
    assert tg.component("extra.weight") == ["extra.weight"]  # outside the root: unchanged


def test_one_object_at_two_paths_is_one_root(build: BuildFn) -> None:
    pair = Pair()
    pair.ref = pair.policy  # the same model registered twice: one root, not two
    tg = build(pair)
    assert tg._index.model_roots == ["policy"]
    assert tg.input_embedding() == "model.embed_tokens"
    assert "lm_head" in tg.tied_to_input_embedding()


def test_namer_lives_in_naming() -> None:
    tg = tiegraph.build_graph(Pair())
    assert isinstance(tg._index.namer.__self__, Namer)  # type: ignore[union-attr]
    assert tg._index.model_roots == ["policy", "ref"]
    assert tg._index.model_root is None
