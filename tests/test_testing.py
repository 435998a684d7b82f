"""``tiegraph.testing``: assertions users put in their own tests, and their messages."""

from __future__ import annotations

import re
import warnings

import pytest
import torch
from models import compiled, llama
from torch import nn

import tiegraph
from tiegraph.errors import PathNotFoundError
from tiegraph.testing import assert_not_tied, assert_tied, assert_ties_unchanged


def test_assert_tied_passes_on_a_tied_model_by_module_or_slot_name() -> None:
    model = llama(True)
    assert_tied(model, "lm_head", "model.embed_tokens")
    assert_tied(model, "model.embed_tokens", "lm_head")
    assert_tied(model, "lm_head.weight", "model.embed_tokens.weight")
    assert_tied(tiegraph.build_graph(model), "lm_head", "model.embed_tokens")


def test_assert_tied_fails_on_an_untied_model_saying_what_each_slot_shares() -> None:
    with pytest.raises(AssertionError) as info:
        assert_tied(llama(False), "lm_head", "model.embed_tokens")
    assert str(info.value) == (
        "lm_head is not tied to model.embed_tokens: lm_head.weight shares memory with nothing"
    )


def test_assert_not_tied_names_the_shared_pair() -> None:
    assert_not_tied(llama(False), "lm_head", "model.embed_tokens")
    with pytest.raises(
        AssertionError, match=r"^lm_head\.weight shares memory with model\.embed_tokens\.weight$"
    ):
        assert_not_tied(llama(True), "lm_head", "model.embed_tokens")


def test_wrapped_models_answer_by_canonical_and_full_names() -> None:
    """PEFT LoRA on lm_head: the tie lives on lm_head.base_layer.weight; both names find it."""
    from peft import LoraConfig, get_peft_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = get_peft_model(llama(True), LoraConfig(r=2, target_modules=["lm_head"]))
    assert_tied(model, "lm_head", "model.embed_tokens")
    assert_tied(model, "base_model.model.lm_head.base_layer", "base_model.model.model.embed_tokens")
    assert_not_tied(model, "lm_head.lora_A.default", "model.embed_tokens")


def test_modules_to_save_copy_is_what_assert_tied_sees() -> None:
    """peft#2777: original_module shares memory with the embedding, the active copy (what forward uses)
    does not, so assert_tied fails and says so."""
    from peft import LoraConfig, get_peft_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = get_peft_model(
            llama(True), LoraConfig(r=2, target_modules=["q_proj"], modules_to_save=["lm_head"])
        )
    with pytest.raises(AssertionError, match=r"lm_head\.weight shares memory with nothing"):
        assert_tied(model, "lm_head", "model.embed_tokens")


def test_a_typo_is_not_a_pass() -> None:
    with pytest.raises(PathNotFoundError, match="'lm_haed' names no slot or module"):
        assert_not_tied(llama(False), "lm_haed", "model.embed_tokens")


def test_assert_ties_unchanged_passes_across_wrappers_and_fails_with_the_diff() -> None:
    model = llama(True)
    before = tiegraph.build_graph(model)
    assert_ties_unchanged(before, compiled(model))
    assert_ties_unchanged(model, model)
    model.lm_head.weight = nn.Parameter(model.lm_head.weight.detach().clone())
    expected = str(tiegraph.diff(before, model))
    with pytest.raises(
        AssertionError,
        match=re.escape("lm_head.weight no longer shares memory with model.embed_tokens.weight"),
    ) as info:
        assert_ties_unchanged(before, model)
    assert str(info.value) == expected
    assert str(info.value).splitlines()[1] == (
        "tied to the input embedding model.embed_tokens: lm_head before, nothing after"
    )


def test_helpers_hide_their_frames_from_pytest_tracebacks() -> None:
    """Failures point at the user's line: every helper sets __tracebackhide__."""
    import tiegraph.testing as testing

    for fn in (testing.assert_tied, testing.assert_not_tied, testing.assert_ties_unchanged):
        assert "__tracebackhide__" in fn.__code__.co_varnames


def test_assert_tied_names_the_same_place_twice() -> None:
    """``assert_tied(m, "lm_head", "lm_head")`` said "lm_head holds no tensor"; it is a usage error naming
    the slots; the root module ``""`` is named in messages, never blank."""
    from tiegraph.errors import TiegraphError

    model = llama()
    with pytest.raises(TiegraphError, match=r"lm_head and lm_head name the same slots \(lm_head.weight\)"):
        tiegraph.testing.assert_tied(model, "lm_head", "lm_head")
    with pytest.raises(TiegraphError, match=r"the model root \(''\) and the model root \(''\) name the same"):
        tiegraph.testing.assert_tied(model, "", "")
    m = torch.nn.Module()
    m.embed = torch.nn.Embedding(4, 2)
    m.norm = torch.nn.ReLU()
    with pytest.raises(
        AssertionError, match=r"^norm is not tied to the model root \(''\): norm holds no tensor"
    ):
        tiegraph.testing.assert_tied(m, "norm", "")
