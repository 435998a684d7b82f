"""One rule for PEFT's copies (:mod:`tiegraph._copies`): the copy the forward uses decides every answer.

Regression: with ``modules_to_save=["lm_head"]`` on a tied Llama, ``tied_to_input_embedding``,
``tie_groups()`` and ``component("lm_head")`` answered for ``original_module`` (tied) while ``assert_tied``
and ``diff`` answered for the active copy (a deepcopy, untied), so ``tiegraph.tied_to_input_embedding(model)``
said ``['lm_head']`` for the very untie the README shows. Now every query, helper and report follows the
copy the forward uses, and the original is a fact of its own (the report's ``modules_to_save`` line, the
JSON summary, the picture's labels, the finding, and ``component()`` of its full path). Real PEFT over tiny
tied Llamas built from configs.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
import torch
from models import (
    llama,
    modules_to_save_embed_tokens,
    modules_to_save_ensure_weight_tying,
    modules_to_save_lm_head,
    trainable_tokens,
)
from torch import nn

import tiegraph
import tiegraph.testing
from tiegraph.cli.summary import summarise

if TYPE_CHECKING:
    from peft import PeftModel

P = "base_model.model."
ORIGINAL = P + "lm_head.original_module"
COPY = P + "lm_head.modules_to_save.default"
EMBED = P + "model.embed_tokens"


def test_every_answer_follows_the_copy_the_forward_uses(build: Callable[..., tiegraph.TieGraph]) -> None:
    """The README's untie: queries, helpers, diff and reports all say lm_head is no longer tied."""
    model = modules_to_save_lm_head()
    tg = build(model)
    assert tiegraph.tied_to_input_embedding(model) == []
    assert tiegraph.tied_to_input_embedding(model, full_paths=True) == []
    assert tg.tied_to_input_embedding() == tg.tied_to_input_embedding(full_paths=True) == []
    assert tg.tie_groups() == tg.tie_groups(full_paths=True) == []
    assert tg.component("lm_head") == ["lm_head.weight"]
    assert tg.component("lm_head", full_paths=True) == [COPY + ".weight"]
    assert tg.component("model.embed_tokens") == ["model.embed_tokens.weight"]
    tiegraph.testing.assert_not_tied(model, "lm_head", "model.embed_tokens")
    with pytest.raises(AssertionError, match=r"lm_head\.weight shares memory with nothing"):
        tiegraph.testing.assert_tied(model, "lm_head", "model.embed_tokens")
    assert tiegraph.diff(llama(True), model).broken == [("lm_head.weight", "model.embed_tokens.weight")]
    assert [d.status for d in tg.declared_ties()] == ["not-tied"]
    assert [f.kind for f in tg.audit()] == ["modules-to-save-copy-untied"]
    summary = summarise(tg)
    assert summary["tied_to_input_embedding"] == []
    assert summary["tie_groups"] == []
    assert [d["status"] for d in summary["declared"]] == ["not-tied"]
    assert "Tie groups (0)" in tg.report()


def test_the_original_is_a_fact_of_its_own(build: Callable[..., tiegraph.TieGraph]) -> None:
    """The original_module a copy stands in for still shares the embedding's weight: the report, the JSON
    summary, the finding and the picture say so, and its full path asks about it from memory."""
    model = modules_to_save_lm_head()
    tg = build(model)
    assert tg.component(ORIGINAL + ".weight", full_paths=True) == [ORIGINAL + ".weight", EMBED + ".weight"]
    assert tg.component(ORIGINAL, full_paths=True) == [ORIGINAL + ".weight", EMBED + ".weight"]
    tiegraph.testing.assert_tied(model, ORIGINAL, "model.embed_tokens")
    tiegraph.testing.assert_not_tied(model, ORIGINAL, "lm_head")
    report = tg.report()
    words = " ".join(report.split())  # the line wraps at the report's width
    assert (
        "modules_to_save: lm_head [base_model.model.lm_head], the forward uses modules_to_save.default;"
        in words
    )
    assert "original_module (not used) shares memory with model.embed_tokens.weight" in words
    assert summarise(tg)["modules_to_save"] == [
        {
            "module": "lm_head",
            "path": "base_model.model.lm_head",
            "uses": "modules_to_save.default",
            "not_used": {"original_module": ["model.embed_tokens.weight"]},
        }
    ]
    (finding,) = tg.audit()
    assert "its original_module, which the forward no longer uses, is still tied to it" in finding.message
    dot = tg.to_dot()
    assert "it shares memory with nothing the forward uses" in dot
    assert "not used by the forward: a modules_to_save copy stands in" in dot
    assert "the copy the forward uses" in dot
    assert ORIGINAL + ".weight" in dot  # drawn, with its share edge to the embedding
    reloaded = tiegraph.TieGraph.from_json(tg.to_json())
    assert reloaded.report() == report
    assert reloaded.component(ORIGINAL, full_paths=True) == tg.component(ORIGINAL, full_paths=True)


def test_a_copy_still_tied_is_tied(build: Callable[..., tiegraph.TieGraph]) -> None:
    """ensure_weight_tying=True: peft saves embed_tokens too and the lm_head copy holds the embedding copy's
    weight; the copies the forward uses are tied, so every answer says tied, and nothing is found."""
    model = modules_to_save_ensure_weight_tying()
    inner: Any = model.base_model.model  # (the tuner's model: torch types submodules as Tensor | Module)
    head, embed = inner.lm_head, inner.model.embed_tokens
    assert head.modules_to_save["default"].weight is embed.modules_to_save["default"].weight
    tg = build(model)
    assert tiegraph.tied_to_input_embedding(model) == ["lm_head"]
    assert tg.tied_to_input_embedding(full_paths=True) == [COPY]
    assert tg.tie_groups(full_paths=True) == [[COPY + ".weight", EMBED + ".modules_to_save.default.weight"]]
    tiegraph.testing.assert_tied(model, "lm_head", "model.embed_tokens")
    assert [(d.status, d.target_copy, d.source_copy) for d in tg.declared_ties()] == [
        ("tied", "active", "active")
    ]
    assert tg.audit() == []


def test_modules_to_save_on_the_embedding(build: Callable[..., tiegraph.TieGraph]) -> None:
    """The input embedding itself wrapped: lm_head shares its original_module, not the copy the forward
    embeds with, so nothing is tied; the finding names the embedding's copy."""
    model = modules_to_save_embed_tokens()
    tg = build(model)
    assert tg.tied_to_input_embedding() == []
    tiegraph.testing.assert_not_tied(model, "lm_head", "model.embed_tokens")
    tiegraph.testing.assert_tied(model, "lm_head", EMBED + ".original_module")
    assert "model.embed_tokens.modules_to_save.default.weight" in tg.audit()[0].message


def _quiet_adapter(model: PeftModel, name: str, modules_to_save: list[str] | None = None) -> None:
    from peft import LoraConfig

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.add_adapter(name, LoraConfig(r=2, target_modules=["q_proj"], modules_to_save=modules_to_save))


def test_the_graph_records_the_copy_in_use_at_build(build: Callable[..., tiegraph.TieGraph]) -> None:
    """Several adapters: set_adapter changes which copy the forward uses, and so what a graph built after it
    says; a graph built before says what it said (a graph is a record)."""
    model = modules_to_save_lm_head()
    before = build(model)
    _quiet_adapter(model, "plain")  # no copy of lm_head: PEFT's forward falls back to original_module
    model.set_adapter("plain")
    plain = build(model)
    assert plain.tied_to_input_embedding(full_paths=True) == [ORIGINAL]
    words = " ".join(plain.report().split())
    assert (
        "the forward uses original_module; modules_to_save.default (not used) shares memory with nothing"
        in words
    )
    assert plain.audit() == []
    _quiet_adapter(model, "other", modules_to_save=["lm_head"])
    model.set_adapter("other")
    other = build(model)
    assert other.tied_to_input_embedding() == []
    assert other.component("lm_head", full_paths=True) == [P + "lm_head.modules_to_save.other.weight"]
    assert [f.kind for f in other.audit()] == ["modules-to-save-copy-untied"]
    assert before.tied_to_input_embedding() == []  # built before: unchanged
    assert before.component("lm_head", full_paths=True) == [COPY + ".weight"]


def test_disabled_adapters_use_the_original(build: Callable[..., tiegraph.TieGraph]) -> None:
    """Inside ``disable_adapter()`` the wrapper calls original_module: tied again while that lasts."""
    model = modules_to_save_lm_head()
    with model.disable_adapter():
        tg = build(model)
    assert tg.tied_to_input_embedding(full_paths=True) == [ORIGINAL]
    assert tg.tie_groups() == [["lm_head.weight", "model.embed_tokens.weight"]]
    assert tg.audit() == []


def test_trainable_tokens_hold_no_stand_in(build: Callable[..., tiegraph.TieGraph]) -> None:
    """Trainable tokens (the sibling wrapper) keep one base weight the forward reads, with rows laid over
    it: no copy stands in, so every slot counts and the tie is reported as before."""
    model = trainable_tokens()
    tg = build(model)
    assert tg.tied_to_input_embedding() == ["lm_head"]
    assert [P + "lm_head.base_layer.weight", EMBED + ".base_layer.weight"] in tg.tie_groups(full_paths=True)
    assert "modules_to_save" not in tg.report()


class _Bridged(nn.Module):
    """Two halves of one storage (``a``, ``b``) that the original_module's weight covers whole, and a
    ModulesToSaveWrapper around it: only the unused original joins them."""

    def __init__(self) -> None:
        from peft.utils.other import ModulesToSaveWrapper

        super().__init__()
        base = torch.zeros(8, 4)
        head = nn.Linear(4, 8, bias=False)
        head.weight = nn.Parameter(base)
        self.head = ModulesToSaveWrapper(head, "default")  # type: ignore[no-untyped-call]
        self.a = nn.Parameter(base[:4])
        self.b = nn.Parameter(base[4:])
        self.c = nn.Parameter(base[4:6])


def test_an_unused_copy_joins_nothing(build: Callable[..., tiegraph.TieGraph]) -> None:
    """Tie groups over the slots in use are computed again from the share pairs: ``a`` and ``b`` share
    memory only through the unused original_module, so they are not one group; ``b`` and ``c`` overlap."""
    model = _Bridged()
    assert (
        model.a.untyped_storage().data_ptr() == model.head.original_module.weight.untyped_storage().data_ptr()
    )
    tg = build(model)
    assert tg.tie_groups() == [["b", "c"]]
    assert tg.component("a") == ["a"]
    assert tg.component("head.original_module.weight", full_paths=True) == [
        "a",
        "b",
        "c",
        "head.original_module.weight",
    ]
    tiegraph.testing.assert_not_tied(model, "a", "b")
