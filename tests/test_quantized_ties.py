"""``untied-by-quantization`` names the end that is quantized, and its advice does what it says.

Real torchao and bitsandbytes (CPU backend) on a tiny tied Llama built from its config: the head alone,
the embedding alone, and both ends (one scheme, or two) quantized apart. Each claim the message makes about
``model.tie_weights()`` and about leaving a module out is carried out here and checked against the
library's real behaviour.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from conftest import BuildFn
from test_deployed import X, tiny_llama
from torch import nn
from transformers import LlamaForCausalLM

import tiegraph


def _embedding(m: nn.Module, _fqn: str) -> bool:
    return isinstance(m, nn.Embedding)


def _both(m: nn.Module, _fqn: str) -> bool:
    return isinstance(m, (nn.Embedding, nn.Linear))


def _torchao(where: str) -> Callable[[nn.Module], None]:
    def quantize(model: nn.Module) -> None:
        from torchao.quantization import Float8WeightOnlyConfig, Int8WeightOnlyConfig, quantize_

        if where == "head":
            quantize_(model, Int8WeightOnlyConfig())  # the default filter: every nn.Linear, the tied head too
        elif where == "embedding":
            quantize_(model, Int8WeightOnlyConfig(), filter_fn=_embedding)
        elif where == "both":
            quantize_(model, Int8WeightOnlyConfig(), filter_fn=_both)
        else:  # two schemes
            quantize_(model, Int8WeightOnlyConfig(), filter_fn=_embedding)
            quantize_(model, Float8WeightOnlyConfig(), filter_fn=lambda _m, fqn: fqn == "lm_head")

    return quantize


def _message(build: BuildFn, model: nn.Module) -> str:
    (found,) = build(model).audit()
    assert found.kind == "untied-by-quantization"
    return found.message


def _forward_works(model: nn.Module) -> bool:
    try:
        with torch.no_grad():
            model(X)
    except (RuntimeError, AttributeError, AssertionError):
        return False
    return True


#: where torchao quantizes -> (the quantized ends the advice names, the labels of lm_head and the embedding)
TORCHAO = {
    "head": ("leave lm_head out of", "torchao.Int8Tensor", "not quantized"),
    "embedding": ("leave model.embed_tokens out of", "not quantized", "torchao.Int8Tensor"),
    "both": ("leave lm_head and model.embed_tokens out of", "torchao.Int8Tensor", "torchao.Int8Tensor"),
    "two-schemes": (
        "leave lm_head and model.embed_tokens out of",
        "torchao.Float8Tensor",
        "torchao.Int8Tensor",
    ),
}


@pytest.mark.parametrize("where", list(TORCHAO))
def test_torchao_advice_names_the_quantized_end(build: BuildFn, where: str) -> None:
    """Before: every case said "leave lm_head out" and called the quantized embedding "unquantized"."""
    model = tiny_llama(64)
    _torchao(where)(model)
    message = _message(build, model)
    leave, head_q, embed_q = TORCHAO[where]
    assert leave + " quantization" in message
    assert f"(lm_head.weight: {head_q}; model.embed_tokens.weight: {embed_q})" in message
    if where == "head":
        assert "put the unquantized model.embed_tokens.weight back into lm_head" in message
    else:
        assert "unquantized model.embed_tokens" not in message
        assert f"puts the quantized model.embed_tokens.weight ({embed_q}) into lm_head" in message
    if head_q != "not quantized" and embed_q != "not quantized":
        assert f"in place of its own {head_q} copy" in message
    assert "bitsandbytes" not in message  # the library that quantized, only


@pytest.mark.parametrize("where", list(TORCHAO))
def test_torchao_tie_weights_does_what_the_message_says(build: BuildFn, where: str) -> None:
    """The head alone: the float embedding goes back and the head's quantization is gone. A quantized
    embedding: its torchao tensor goes into the head, the forward runs, and the pair is one tensor."""
    model = tiny_llama(64)
    _torchao(where)(model)
    model.tie_weights()
    head, embed = model.lm_head.weight, model.model.embed_tokens.weight
    assert head is embed
    assert (type(head) is nn.Parameter) == (where == "head")
    assert _forward_works(model)
    assert build(model).audit() == []


@pytest.mark.parametrize("where", list(TORCHAO))
def test_torchao_filter_in_the_advice_keeps_one_weight(build: BuildFn, where: str) -> None:
    """The filter_fn the message writes, run on a fresh model: the pair stays one unquantized weight."""
    model = tiny_llama(64)
    _torchao(where)(model)
    message = _message(build, model)
    code = message.split("torchao: ", 1)[1].split(")) and then tie", 1)[0] + ")"
    assert code.startswith("quantize_(model, config, filter_fn=")

    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    fresh = tiny_llama(64)
    eval(code, {"quantize_": quantize_, "model": fresh, "config": Int8WeightOnlyConfig(), "torch": torch})
    assert fresh.lm_head.weight is fresh.model.embed_tokens.weight
    assert type(fresh.lm_head.weight) is nn.Parameter
    assert type(fresh.model.layers[0].mlp.up_proj.weight).__name__ == "Int8Tensor"
    assert build(fresh).audit() == []


def _bnb_embedding(model: LlamaForCausalLM, cls: str) -> None:
    import bitsandbytes as bnb

    embed = getattr(bnb.nn, cls)(64, 64)
    embed.load_state_dict({"weight": model.model.embed_tokens.weight.detach().clone()})
    model.model.embed_tokens = embed.to("cpu")


def _bnb_head(model: LlamaForCausalLM, cls: str) -> None:
    import bitsandbytes as bnb

    kwargs = {"quant_type": "fp4"} if cls == "Linear4bit" else {"has_fp16_weights": False}
    head = getattr(bnb.nn, cls)(64, 64, bias=False, **kwargs)
    head.load_state_dict({"weight": model.lm_head.weight.detach().clone()})
    model.lm_head = head.to("cpu")


#: (embedding class, head class or None for a plain nn.Linear) -> whether tie_weights() gives a working model
BITSANDBYTES = {
    ("Embedding4bit", None): False,
    ("Embedding8bit", None): False,
    ("Embedding4bit", "Linear4bit"): True,
    ("Embedding8bit", "Linear8bitLt"): True,
    ("Embedding4bit", "Linear8bitLt"): False,
}


@pytest.mark.parametrize(("embedding", "head"), list(BITSANDBYTES))
def test_bitsandbytes_quantized_embedding(build: BuildFn, embedding: str, head: str | None) -> None:
    """bitsandbytes' weights compute only in a layer of their own format: the message says whether
    tie_weights() ties the pair again or breaks the forward, as measured here."""
    model = tiny_llama(64)
    _bnb_embedding(model, embedding)
    if head:
        _bnb_head(model, head)
    assert _forward_works(model)
    message = _message(build, model)
    assert "leave " + ("lm_head and " if head else "") + "model.embed_tokens out of quantization" in message
    assert "keep model.embed_tokens a torch.nn.Embedding" in message
    assert ("llm_int8_skip_modules=['lm_head']" in message) == bool(head)
    works = BITSANDBYTES[(embedding, head)]
    assert ("tie_weights() ties them again" in message) == works
    assert ("cannot compute with that format (the forward fails)" in message) == (not works)
    model.tie_weights()
    assert _forward_works(model) == works


def _hqq_head(model: LlamaForCausalLM) -> None:
    from hqq.core.quantize import BaseQuantizeConfig, HQQLinear

    config = BaseQuantizeConfig(nbits=4, group_size=64)
    model.lm_head = HQQLinear(model.lm_head, config, compute_dtype=torch.float32, device="cpu")


def _quanto_head(model: LlamaForCausalLM) -> None:
    from optimum.quanto import freeze, qint8, quantize

    quantize(model, weights=qint8)
    freeze(model)


#: the head quantized alone, by each library -> what the message says tie_weights() does
HEAD_ONLY: dict[str, tuple[Callable[[LlamaForCausalLM], None], str]] = {
    "quanto": (_quanto_head, "whose QLinear then quantizes it at every forward"),
    "bitsandbytes-nf4": (lambda m: _bnb_head(m, "Linear4bit"), "a Linear4bit that computes only with"),
    "bitsandbytes-int8": (lambda m: _bnb_head(m, "Linear8bitLt"), "a Linear8bitLt that computes only with"),
    "hqq": (_hqq_head, "a weight it does not compute with (HQQLinear computes with W_q), a tie in name only"),
}


@pytest.mark.parametrize("library", list(HEAD_ONLY))
def test_head_only_tie_weights_as_the_message_says(build: BuildFn, library: str) -> None:
    """Each library's head-only case: what tie_weights() does, carried out (torchao's is tested above)."""
    model = tiny_llama(64)
    quantize, said = HEAD_ONLY[library]
    quantize(model)
    with torch.no_grad():
        before = model(X).logits
    message = _message(build, model)
    assert said in message
    assert "leave lm_head out of quantization" in message
    model.tie_weights()
    assert model.lm_head.weight is model.model.embed_tokens.weight
    if library.startswith("bitsandbytes"):
        assert not _forward_works(model)
        return
    with torch.no_grad():
        after = model(X).logits
    assert torch.equal(before, after)  # quanto: the same weight quantized at forward; hqq: W_q, untouched


def test_torch_ao_dynamic_quantization_unties_once(build: BuildFn) -> None:
    """torch.ao's quantize_dynamic packs the tied head's weight (no slot): the tie is lost, and the finding
    says so once, with the quantization kind; tie_weights() raises, as the message says; the advice's
    qconfig keeps the pair one weight."""
    from torch.ao.quantization import quantize_dynamic

    model = quantize_dynamic(tiny_llama(64), {nn.Linear}, dtype=torch.qint8)
    found = build(model).audit()
    assert [f.kind for f in found] == ["untied-by-quantization"]  # not unresolved-declaration as well
    again = tiegraph.TieGraph.from_json(build(model).to_json()).audit()
    assert [f.message for f in again] == [
        found[0].message
    ]  # the packed layer's label is saved with the graph
    message = found[0].message
    assert "(lm_head.weight: torch.ao.dynamic.qint8, packed into lm_head._packed_params;" in message
    assert "it raises (KeyError" in message
    with pytest.raises(KeyError, match="weight"):
        model.tie_weights()
    code = message.split("torch.ao: ", 1)[1].split(")) and then tie", 1)[0] + ")"
    fresh = eval(code, {"quantize_dynamic": quantize_dynamic, "model": tiny_llama(64), "torch": torch})
    assert fresh.lm_head.weight is fresh.model.embed_tokens.weight
    assert type(fresh.model.layers[0].mlp.up_proj).__module__.startswith("torch.ao.nn.quantized.dynamic")
    assert build(fresh).audit() == []
