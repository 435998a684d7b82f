"""Tiny real models, built from configs (never the hub), shared by the tests and demos.

``MODELS`` maps a short name to a factory ``() -> nn.Module``.  Every factory builds on the current default
device, so ``with torch.device("meta"): MODELS["t5"]()`` gives a meta model and
``with accelerate.init_empty_weights(): MODELS["t5"]()`` gives the accelerate flavour of it.

``PEFT_MODELS`` maps a name to a factory that wraps a fresh tied Llama with a real PEFT adapter.

Sizes: hidden 16, one or two layers, vocab 64; a model takes a few milliseconds to build.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import (
        BartForConditionalGeneration,
        BertForMaskedLM,
        GemmaForCausalLM,
        GPT2LMHeadModel,
        LlamaForCausalLM,
        LlavaForConditionalGeneration,
        PreTrainedModel,
        T5ForConditionalGeneration,
        WhisperForConditionalGeneration,
    )

VOCAB = 64
HIDDEN = 16

# Token ids inside the tiny vocabulary: several configs default to ids of the real vocabularies
# (GPT-2 50256, Whisper 50257), which trip a padding_idx assertion or a warning.
_TOKENS = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}

_LLAMA: dict[str, Any] = {
    "hidden_size": HIDDEN,
    "intermediate_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "vocab_size": VOCAB,
    "max_position_embeddings": 32,
    **_TOKENS,
}


#: A tied tiny Llama's config keywords, for the tests that save it or hand it to the command line
TINY_LLAMA: dict[str, Any] = {**_LLAMA, "tie_word_embeddings": True}


def _config(model_type: str, **kwargs: Any) -> Any:
    from transformers import AutoConfig

    return AutoConfig.for_model(model_type, **kwargs)


def llama(tie_word_embeddings: bool = True) -> LlamaForCausalLM:
    """``LlamaForCausalLM``; Llama defaults to untied, so the flag is explicit."""
    from transformers import AutoModelForCausalLM

    model: LlamaForCausalLM = AutoModelForCausalLM.from_config(
        _config("llama", tie_word_embeddings=tie_word_embeddings, **_LLAMA)
    )
    return model


def llama_tied() -> LlamaForCausalLM:
    return llama(True)


def llama_untied() -> LlamaForCausalLM:
    return llama(False)


def llama_flag_flipped_off() -> LlamaForCausalLM:
    """Tied at construction, then ``config.tie_word_embeddings = False``: the weights stay one tensor."""
    model = llama(True)
    model.config.tie_word_embeddings = False
    return model


def llama_declared_but_copied() -> LlamaForCausalLM:
    """Declared tied (flag on, ``all_tied_weights_keys`` lists lm_head) but lm_head holds a copy."""
    model = llama(True)
    model.lm_head.weight = nn.Parameter(model.lm_head.weight.detach().clone())
    return model


def llama_tied_undeclared() -> LlamaForCausalLM:
    """Untied by config, then tied by hand: a real tie nothing declares."""
    model = llama(False)
    model.lm_head.weight = model.model.embed_tokens.weight
    return model


def gemma() -> GemmaForCausalLM:
    """``GemmaForCausalLM``; Gemma ties by default."""
    from transformers import AutoModelForCausalLM

    cfg = _config("gemma", head_dim=8, **_LLAMA)
    model: GemmaForCausalLM = AutoModelForCausalLM.from_config(cfg)
    return model


def gpt2() -> GPT2LMHeadModel:
    """``GPT2LMHeadModel``: input embedding ``transformer.wte``, head ``lm_head``."""
    from transformers import AutoModelForCausalLM

    cfg = _config("gpt2", n_embd=HIDDEN, n_layer=1, n_head=2, n_positions=32, vocab_size=VOCAB, **_TOKENS)
    model: GPT2LMHeadModel = AutoModelForCausalLM.from_config(cfg)
    return model


def t5() -> T5ForConditionalGeneration:
    """``T5ForConditionalGeneration``: ``shared``, both ``embed_tokens`` and ``lm_head`` are one tensor."""
    from transformers import AutoModelForSeq2SeqLM

    cfg = _config(
        "t5",
        d_model=HIDDEN,
        d_ff=32,
        d_kv=8,
        num_layers=1,
        num_decoder_layers=1,
        num_heads=2,
        vocab_size=VOCAB,
        decoder_start_token_id=0,
        **_TOKENS,
    )
    model: T5ForConditionalGeneration = AutoModelForSeq2SeqLM.from_config(cfg)
    return model


_SEQ2SEQ: dict[str, Any] = {
    "d_model": HIDDEN,
    "encoder_layers": 1,
    "decoder_layers": 1,
    "encoder_attention_heads": 2,
    "decoder_attention_heads": 2,
    "encoder_ffn_dim": 32,
    "decoder_ffn_dim": 32,
    "vocab_size": VOCAB,
    "decoder_start_token_id": 1,
    **_TOKENS,
}


def bart() -> BartForConditionalGeneration:
    """``BartForConditionalGeneration``: ``model.shared``, both ``embed_tokens`` and ``lm_head``."""
    from transformers import AutoModelForSeq2SeqLM

    cfg = _config("bart", max_position_embeddings=32, forced_eos_token_id=2, **_SEQ2SEQ)
    model: BartForConditionalGeneration = AutoModelForSeq2SeqLM.from_config(cfg)
    return model


def whisper() -> WhisperForConditionalGeneration:
    """``WhisperForConditionalGeneration``: output ``proj_out`` tied to ``model.decoder.embed_tokens``."""
    from transformers import WhisperForConditionalGeneration

    cfg = _config(
        "whisper",
        num_mel_bins=8,
        max_source_positions=16,
        max_target_positions=32,
        begin_suppress_tokens=None,
        suppress_tokens=None,
        **_SEQ2SEQ,
    )
    return WhisperForConditionalGeneration(cfg)


def llava(tie_word_embeddings: bool = True, text_tie: bool | None = None) -> LlavaForConditionalGeneration:
    """``LlavaForConditionalGeneration``: CLIP vision tower, Llama text model under ``model.language_model``.

    The top-level ``tie_word_embeddings`` decides; the text config's own flag is ``text_tie`` (default: the
    same as the top-level flag, so the two agree). Both are set after the config is built, as
    ``--set text_config.tie_word_embeddings=...`` does (LlavaConfig's constructor copies a True text flag
    to the top level).
    """
    from transformers import LlavaConfig, LlavaForConditionalGeneration, PreTrainedConfig

    vision = _config(
        "clip_vision_model",
        hidden_size=HIDDEN,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=16,
        patch_size=8,
        projection_dim=HIDDEN,
    )
    text = _config("llama", **_LLAMA)
    cfg = LlavaConfig(
        vision_config=vision.to_dict(),
        text_config=text.to_dict(),
        image_token_index=VOCAB - 1,
        tie_word_embeddings=tie_word_embeddings,
    )
    cfg.tie_word_embeddings = tie_word_embeddings
    assert isinstance(cfg.text_config, PreTrainedConfig)  # the constructor turned the dict into a config
    cfg.text_config.tie_word_embeddings = tie_word_embeddings if text_tie is None else text_tie
    return LlavaForConditionalGeneration(cfg)


def bert_mlm() -> BertForMaskedLM:
    """``BertForMaskedLM``: decoder weight tied to word embeddings, decoder bias tied to predictions.bias."""
    from transformers import BertForMaskedLM

    cfg = _config(
        "bert",
        hidden_size=HIDDEN,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        vocab_size=VOCAB,
        max_position_embeddings=32,
        pad_token_id=0,
    )
    return BertForMaskedLM(cfg)


#: name -> factory of a real transformers model (tiny, from a config).
MODELS: dict[str, Callable[[], PreTrainedModel]] = {
    "llama-tied": llama_tied,
    "llama-untied": llama_untied,
    "llama-flag-flipped-off": llama_flag_flipped_off,
    "llama-declared-but-copied": llama_declared_but_copied,
    "llama-tied-undeclared": llama_tied_undeclared,
    "gemma": gemma,
    "gpt2": gpt2,
    "t5": t5,
    "bart": bart,
    "whisper": whisper,
    "llava": llava,
    "bert-mlm": bert_mlm,
}


# ---------------------------------------------------------------------------------------------- PEFT


def _peft(config: Any) -> PeftModel:
    from peft import get_peft_model

    with warnings.catch_warnings():
        # peft warns about tied embeddings and about adapting an embedding layer; both are the point here.
        warnings.simplefilter("ignore")
        model: PeftModel = get_peft_model(llama(True), config)
        return model


def lora_lm_head() -> PeftModel:
    """LoRA on ``lm_head`` (and ``q_proj``) of a tied Llama: ``lm_head`` becomes a tuner layer."""
    from peft import LoraConfig

    return _peft(LoraConfig(r=2, target_modules=["lm_head", "q_proj"]))


def lora_ensure_weight_tying() -> PeftModel:
    """LoRA on ``embed_tokens`` and ``lm_head`` with ``ensure_weight_tying=True``.

    peft ties the adapters by transposed views:
    ``lm_head.lora_A.weight = Parameter(emb.lora_embedding_B.t())``.
    """
    from peft import LoraConfig

    return _peft(LoraConfig(r=2, target_modules=["embed_tokens", "lm_head"], ensure_weight_tying=True))


def modules_to_save_lm_head() -> PeftModel:
    """``modules_to_save=["lm_head"]``: ``original_module`` stays tied, the active copy is a deepcopy."""
    from peft import LoraConfig

    return _peft(LoraConfig(r=2, target_modules=["q_proj"], modules_to_save=["lm_head"]))


def modules_to_save_embed_tokens() -> PeftModel:
    """``modules_to_save=["embed_tokens"]``: the input embedding itself becomes a ModulesToSaveWrapper."""
    from peft import LoraConfig

    return _peft(LoraConfig(r=2, target_modules=["q_proj"], modules_to_save=["embed_tokens"]))


def modules_to_save_ensure_weight_tying() -> PeftModel:
    """``modules_to_save=["lm_head"]`` with ``ensure_weight_tying=True``: peft saves ``embed_tokens`` too and
    makes the ``lm_head`` copy's weight the embedding copy's, so the copies the forward uses stay tied."""
    from peft import LoraConfig

    return _peft(
        LoraConfig(r=2, target_modules=["q_proj"], modules_to_save=["lm_head"], ensure_weight_tying=True)
    )


def trainable_tokens() -> PeftModel:
    """``TrainableTokensConfig`` on ``embed_tokens`` of a tied model: peft wraps the tied lm_head too."""
    from peft import TrainableTokensConfig

    return _peft(TrainableTokensConfig(target_modules=["embed_tokens"], token_indices=[0, 1, 2]))


def lora_trainable_token_indices() -> PeftModel:
    """LoRA with ``trainable_token_indices``: ``TrainableTokensWrapper`` with a ``token_adapter`` inside."""
    from peft import LoraConfig

    return _peft(LoraConfig(r=2, target_modules=["q_proj"], trainable_token_indices={"embed_tokens": [0, 1]}))


#: name -> factory of a real PEFT model over a fresh tied Llama.
PEFT_MODELS: dict[str, Callable[[], PeftModel]] = {
    "lora-lm-head": lora_lm_head,
    "lora-ensure-weight-tying": lora_ensure_weight_tying,
    "modules-to-save-lm-head": modules_to_save_lm_head,
    "modules-to-save-embed-tokens": modules_to_save_embed_tokens,
    "modules-to-save-ensure-weight-tying": modules_to_save_ensure_weight_tying,
    "trainable-tokens": trainable_tokens,
    "lora-trainable-token-indices": lora_trainable_token_indices,
}


# ------------------------------------------------------------------------------------- plain modules


class Wrapper(nn.Module):
    """A user's own wrapper: holds the model as an attribute, has no ``get_input_embeddings``."""

    def __init__(self, inner: nn.Module, attr: str = "inner") -> None:
        super().__init__()
        self.add_module(attr, inner)


class _Holder(nn.Module):
    def __init__(self, **children: nn.Module) -> None:
        super().__init__()
        for name, child in children.items():
            self.add_module(name, child)


class NamedLikeWrappers(nn.Module):
    """A plain model whose own submodules are called ``model`` and ``module`` (neither is a wrapper).

    ``model.embed`` is the input embedding; ``module.head`` shares its weight.
    """

    def __init__(self) -> None:
        super().__init__()
        embed, head = nn.Embedding(VOCAB, HIDDEN), nn.Linear(HIDDEN, VOCAB, bias=False)
        head.weight = embed.weight
        self.model = _Holder(embed=embed)
        self.module = _Holder(head=head)

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_submodule("embed")


class NoInputEmbedding(nn.Module):
    """A plain model with a tie and no ``get_input_embeddings``."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, HIDDEN)
        self.head = nn.Linear(HIDDEN, VOCAB, bias=False)
        self.head.weight = self.emb.weight


def compiled(model: nn.Module) -> nn.Module:
    """``torch.compile(model)``: an ``OptimizedModule`` (torch's stubs call it a plain callable)."""
    return cast(nn.Module, torch.compile(model))


def seeded(factory: Callable[[], nn.Module], seed: int = 0) -> nn.Module:
    """Build with a fixed seed, so values are reproducible (tests compare identities, not values)."""
    torch.manual_seed(seed)
    return factory()
