"""PEFT flows: adapters on tied modules, and what merge/unload/add_adapter do, via diff.

Real peft 0.21.2 on a tiny tied Llama. LoRA weights are initialised randomly (``init_lora_weights=False``)
so that a merge really changes the weights: the tests check the findings against what the merge does.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import torch
from models import llama, modules_to_save_lm_head
from torch import nn

import tiegraph
from tiegraph.testing import assert_tied, assert_ties_unchanged

if TYPE_CHECKING:
    from peft import PeftModel

EMB = "model.embed_tokens.weight"
PAIR = ("lm_head.weight", EMB)


def _peft(model: nn.Module, config: Any) -> PeftModel:
    from peft import get_peft_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peft_model: PeftModel = get_peft_model(model, config)
        return peft_model


def _lora(**kwargs: Any) -> Any:
    from peft import LoraConfig

    return LoraConfig(r=2, init_lora_weights=False, **kwargs)


def _kinds(
    model: nn.Module | tiegraph.TieGraph, kind: str = "adapter-on-tied-module"
) -> list[tuple[str, ...]]:
    tg = model if isinstance(model, tiegraph.TieGraph) else tiegraph.build_graph(model)
    return [f.paths for f in tg.audit() if f.kind == kind]


@pytest.mark.parametrize(
    ("targets", "extra", "expected"),
    [
        (["lm_head"], {}, [PAIR]),
        (["embed_tokens"], {}, [PAIR]),
        (["embed_tokens", "lm_head"], {}, [PAIR, PAIR]),
        (["embed_tokens", "lm_head"], {"ensure_weight_tying": True}, []),
        (["q_proj"], {}, []),
    ],
)
def test_adapter_on_tied_module(targets: list[str], extra: dict[str, Any], expected: list[Any]) -> None:
    """A LoRA layer on either end of the tie, alone, is a finding; tied adapters and q_proj are not."""
    model = _peft(llama(True), _lora(target_modules=targets, **extra))
    assert _kinds(model) == expected


def test_no_finding_on_an_untied_model() -> None:
    assert _kinds(_peft(llama(False), _lora(target_modules=["lm_head"]))) == []


def test_the_message_says_what_merging_does() -> None:
    (finding,) = [
        f
        for f in tiegraph.build_graph(_peft(llama(True), _lora(target_modules=["lm_head"]))).audit()
        if f.kind == "adapter-on-tied-module"
    ]
    assert finding.message.startswith(
        "PEFT adapters on lm_head (Linear) are not tied to anything, but its base weight lm_head.weight "
        "shares memory with model.embed_tokens.weight: merging"
    )
    assert "changes model.embed_tokens too (peft#2018)" in finding.message
    assert "ensure_weight_tying=True" in finding.message


def test_finding_is_read_from_json_too() -> None:
    import json

    tg = tiegraph.build_graph(_peft(llama(True), _lora(target_modules=["lm_head"])))
    again = tiegraph.TieGraph.from_json(json.loads(json.dumps(tg.to_json())))
    assert _kinds(again) == _kinds(tg) == [PAIR]


def test_merge_and_unload_of_lora_on_a_tied_head_changes_the_embedding() -> None:
    """peft#2018, as the finding says: the merge keeps the tie and writes the delta into the embedding."""
    torch.manual_seed(0)
    model = llama(True)
    bare = tiegraph.build_graph(model)
    embedding = model.model.embed_tokens.weight.detach().clone()
    peft_model = _peft(model, _lora(target_modules=["lm_head"]))
    wrapped = tiegraph.build_graph(peft_model)
    d = tiegraph.diff(bare, wrapped)
    assert [f.kind for f in d.findings_added] == ["adapter-on-tied-module"]
    assert "new finding adapter-on-tied-module: lm_head.weight, model.embed_tokens.weight" in str(d)
    merged = peft_model.merge_and_unload()
    after = tiegraph.diff(wrapped, merged)
    assert after.broken == []
    assert after.removed == [
        "lm_head.lora_A.default.weight",
        "lm_head.lora_B.default.weight",
    ]
    assert [f.kind for f in after.findings_resolved] == ["adapter-on-tied-module"]
    assert_ties_unchanged(bare, merged)  # the tie survives ...
    assert not torch.equal(merged.model.embed_tokens.weight, embedding)  # ... and the embedding moved


def test_unload_removes_the_adapters_and_leaves_the_ties() -> None:
    model = llama(True)
    bare = tiegraph.build_graph(model)
    peft_model = _peft(model, _lora(target_modules=["lm_head", "q_proj"]))
    wrapped = tiegraph.build_graph(peft_model)
    unloaded = peft_model.unload()
    d = tiegraph.diff(wrapped, unloaded)
    assert len(d.removed) == 4
    assert d.broken == d.made == []
    assert [f.kind for f in d.findings_resolved] == ["adapter-on-tied-module"]
    assert_ties_unchanged(bare, unloaded)


def test_ensure_weight_tying_merge_keeps_the_tie_but_adds_the_delta_twice() -> None:
    """No adapter-on-tied-module finding (the adapters are tied), and the merge keeps the tie. Pinned
    here as measured with peft 0.21.2: both tuner layers merge the same (tied) delta into the one shared
    tensor, so the merged embedding is W + 2 * delta and the merged model's logits differ from the
    adapted model's."""
    torch.manual_seed(0)
    model = llama(True)
    bare = tiegraph.build_graph(model)
    embedding = model.model.embed_tokens.weight.detach().clone()
    peft_model = _peft(model, _lora(target_modules=["embed_tokens", "lm_head"], ensure_weight_tying=True))
    assert _kinds(peft_model) == []
    tuned: Any = peft_model.base_model.model  # (PEFT's layers: nn.Module types them Tensor | Module)
    delta = tuned.lm_head.get_delta_weight("default").detach().clone()
    merged = peft_model.merge_and_unload()
    assert_ties_unchanged(bare, merged)
    assert torch.allclose(merged.model.embed_tokens.weight, embedding + 2 * delta, atol=1e-4)


def test_modules_to_save_with_ensure_weight_tying_is_clean() -> None:
    """PEFT's own fix for peft#2777: the active copies of embedding and head are one tensor: no finding
    (it was modules-to-save-copy-untied twice), and the merged model stays tied."""
    from peft import LoraConfig

    model = llama(True)
    bare = tiegraph.build_graph(model)
    peft_model = _peft(
        model,
        LoraConfig(r=2, target_modules=["q_proj"], modules_to_save=["lm_head"], ensure_weight_tying=True),
    )
    tg = tiegraph.build_graph(peft_model)
    assert tg.audit() == []
    assert_tied(peft_model, "lm_head", "model.embed_tokens")
    merged = peft_model.merge_and_unload()
    assert_ties_unchanged(bare, merged)


def test_modules_to_save_without_tying_breaks_the_tie_on_merge() -> None:
    """peft#2777: merge_and_unload swaps in the active deepcopy: the merged model is untied."""
    from peft import LoraConfig

    model = llama(True)
    bare = tiegraph.build_graph(model)
    merged = _peft(
        model, LoraConfig(r=2, target_modules=["q_proj"], modules_to_save=["lm_head"])
    ).merge_and_unload()
    d = tiegraph.diff(bare, merged)
    assert d.broken == [PAIR]
    assert (d.tied_before, d.tied_after) == (["lm_head"], [])


def test_trainable_tokens_share_their_delta_and_merge_tied() -> None:
    """TrainableTokens on a tied embedding: peft wraps lm_head too and shares the delta: no finding; the
    diff from the bare model shows the made pairs; merging keeps the tie."""
    from peft import TrainableTokensConfig

    model = llama(True)
    bare = tiegraph.build_graph(model)
    peft_model = _peft(model, TrainableTokensConfig(target_modules=["embed_tokens"], token_indices=[0, 1, 2]))
    d = tiegraph.diff(bare, peft_model)
    assert _kinds(peft_model) == []
    assert d.broken == []
    assert (
        "lm_head.trainable_tokens_delta.default",
        "model.embed_tokens.trainable_tokens_delta.default",
    ) in d.made
    assert_ties_unchanged(bare, peft_model.merge_and_unload())


def test_an_adapter_added_after_the_fact_is_seen() -> None:
    """add_adapter on a PeftModel that adapted only q_proj: the new adapter on lm_head adds the finding."""
    peft_model = _peft(llama(True), _lora(target_modules=["q_proj"]))
    before = tiegraph.build_graph(peft_model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peft_model.add_adapter("second", _lora(target_modules=["lm_head"]))
    d = tiegraph.diff(before, peft_model)
    assert [f.kind for f in d.findings_added] == ["adapter-on-tied-module"]
    assert d.added == ["lm_head.lora_A.second.weight", "lm_head.lora_B.second.weight"]
    assert d.broken == []


def test_inject_adapter_in_model_on_a_plain_model() -> None:
    """peft.inject_adapter_in_model adapts a model in place, without a PeftModel around it."""
    from peft import inject_adapter_in_model

    model = llama(True)
    before = tiegraph.build_graph(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inject_adapter_in_model(_lora(target_modules=["lm_head"]), model)
    d = tiegraph.diff(before, model)
    assert [f.kind for f in d.findings_added] == ["adapter-on-tied-module"]
    assert d.broken == []


def test_cli_modules_to_save_with_lora_tied_is_clean_under_strict(capsys: pytest.CaptureFixture[str]) -> None:
    """The recommended setup passes --strict (it exited 1 with two false modules-to-save-copy-untied)."""
    from tiegraph.cli import main

    argv = ["inspect", "llama", "--set", "tie_word_embeddings=true", "--set", "num_hidden_layers=1"]
    argv += ["--peft", "lora-tied:q_proj", "--peft", "modules-to-save:lm_head", "--strict"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Findings: none" in out
    assert "wrapped: PEFT lora-tied on q_proj; PEFT modules-to-save on lm_head" in out


def test_cli_diff_shows_what_lora_on_a_tied_head_does(capsys: pytest.CaptureFixture[str]) -> None:
    """The diff recipe's command: exit 1 with --strict (0 without it), and the finding the wrapper adds."""
    from tiegraph.cli import main

    assert main(["diff", "gemma", "gemma", "--peft", "lora:lm_head", "--strict"]) == 1
    out = capsys.readouterr().out
    assert "new finding adapter-on-tied-module: lm_head.weight, model.embed_tokens.weight" in out
    assert "2 slots added: lm_head.lora_A.default.weight, lm_head.lora_B.default.weight" in out


def test_modules_to_save_message_claims_nothing_peft_does_not_do(tmp_path: Path) -> None:
    """modules-to-save-copy-untied said "a merged model reloads tied"; with the installed PEFT,
    merge_and_unload sets tie_word_embeddings=False and the reload keeps the trained head. The message
    makes no claim about merging; what it advises (save with the flag False) keeps the trained head."""
    from transformers import AutoModelForCausalLM

    model = modules_to_save_lm_head()
    [finding] = [f for f in tiegraph.build_graph(model).audit() if f.kind == "modules-to-save-copy-untied"]
    assert "merge" not in finding.message
    assert "reloads tied" not in finding.message
    assert "save with config.tie_word_embeddings=False so that a reload keeps both" in finding.message
    tuned: Any = model.base_model.model  # (PEFT's layers: nn.Module types them Tensor | Module)
    copy = tuned.lm_head.modules_to_save.default
    with torch.no_grad():
        copy.weight.add_(1.0)  # "trained"
    trained = copy.weight.detach().clone()
    merged = model.merge_and_unload()
    assert merged.config.tie_word_embeddings is False  # what the installed PEFT does
    merged.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert torch.equal(reloaded.lm_head.weight, trained)
    assert tiegraph.build_graph(reloaded).tied_to_input_embedding() == []
