"""Tiny local stand-ins for the hub models the peers' tie tests name, in the hub cache layout.

Each is built from a config (tiny sizes, the real model's architecture and tie flag) with a word-level
tokenizer, saved under ``<HF_HOME>/hub/models--org--name/snapshots/<commit>/`` with ``refs/main``, so
``from_pretrained(model_id)`` finds it with ``HF_HUB_OFFLINE=1``. A test that reads only a model's config
(:data:`CONFIGS`) gets the real model's config and nothing else. Nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

COMMIT = "0" * 40
VOCAB = 1000
_TOKENS = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
_SMALL = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "vocab_size": VOCAB}
_LLAMA = {**_SMALL, "intermediate_size": 32, "num_key_value_heads": 1, "max_position_embeddings": 64}

#: model id -> (model_type, config keywords, auto class): every hub model the selected tests name
MODELS: dict[str, tuple[str, dict[str, Any], str]] = {
    "peft-internal-testing/opt-125m": (  # 768 wide as the real one: a test's arithmetic assumes it
        "opt",
        {
            **_SMALL,
            "hidden_size": 768,
            "ffn_dim": 32,
            "word_embed_proj_dim": 768,
            "max_position_embeddings": 64,
        },
        "AutoModelForCausalLM",
    ),
    "peft-internal-testing/tiny-random-BertModel": (
        "bert",
        {**_SMALL, "intermediate_size": 32, "is_decoder": True},
        "AutoModelForCausalLM",
    ),
    "peft-internal-testing/tiny-random-t5": (
        "t5",
        {
            "d_model": 16,
            "d_ff": 32,
            "d_kv": 8,
            "num_layers": 1,
            "num_heads": 2,
            "vocab_size": VOCAB,
            "decoder_start_token_id": 0,
        },
        "AutoModelForSeq2SeqLM",
    ),
    "trl-internal-testing/tiny-random-LlamaForCausalLM": ("llama", _LLAMA, "AutoModelForCausalLM"),
    "peft-internal-testing/tiny-random-LlamaForCausalLM": ("llama", _LLAMA, "AutoModelForCausalLM"),
    "hf-internal-testing/tiny-random-Gemma3ForCausalLM": (
        "gemma3_text",
        {**_LLAMA, "head_dim": 8, "sliding_window": 16},
        "AutoModelForCausalLM",
    ),
}


#: model id -> (model_type, the real config's keywords): models whose tests read the config alone and build
#: the model under ``init_empty_weights()``, so the real sizes cost nothing and decide the device map
CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "bigscience/T0pp": (  # T5 v1.1 XXL (LM-adapted): 24 + 24 blocks, untied head, shared embedding
        "t5",
        {
            "d_model": 4096,
            "d_ff": 10240,
            "d_kv": 64,
            "num_heads": 64,
            "num_layers": 24,
            "num_decoder_layers": 24,
            "vocab_size": 32128,
            "feed_forward_proj": "gated-gelu",
            "relative_attention_num_buckets": 32,
            "layer_norm_epsilon": 1e-6,
            "tie_word_embeddings": False,
            "decoder_start_token_id": 0,
            "pad_token_id": 0,
            "eos_token_id": 1,
        },
    ),
}


def snapshot(hf_home: Path, model_id: str) -> Path:
    """Where ``model_id``'s files live in the hub cache under ``hf_home``."""
    org, name = model_id.split("/")
    return hf_home / "hub" / f"models--{org}--{name}" / "snapshots" / COMMIT


def build(hf_home: Path) -> list[str]:
    """Make every stand-in that is missing; returns the ids made."""
    made = []
    for model_id in [*MODELS, *CONFIGS]:
        folder = snapshot(hf_home, model_id)
        complete = (folder / "config.json").exists() and (
            model_id in CONFIGS or (folder / "tokenizer.json").exists()
        )
        if complete and _same(model_id, folder):
            continue
        _save(model_id, folder)
        refs = folder.parents[1] / "refs"
        refs.mkdir(parents=True, exist_ok=True)
        (refs / "main").write_text(COMMIT)
        made.append(model_id)
    return made


def _same(model_id: str, folder: Path) -> bool:
    """Whether the saved stand-in was made from today's entry (its config keeps every keyword)."""
    import json

    saved = json.loads((folder / "config.json").read_text())
    kwargs = MODELS[model_id][1] if model_id in MODELS else CONFIGS[model_id][1]
    return all(saved.get(key) == value for key, value in kwargs.items())


def _save(model_id: str, folder: Path) -> None:
    import torch
    import transformers

    if model_id in CONFIGS:  # the config alone
        model_type, kwargs = CONFIGS[model_id]
        transformers.AutoConfig.for_model(model_type, **kwargs).save_pretrained(folder)
        return
    model_type, kwargs, auto = MODELS[model_id]
    config = transformers.AutoConfig.for_model(model_type, **_TOKENS, **kwargs)
    torch.manual_seed(0)
    model = getattr(transformers, auto).from_config(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    _tokenizer().save_pretrained(folder)


def _tokenizer() -> Any:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    special = ["<pad>", "<s>", "</s>", "<unk>"]
    words = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    words += [
        "hello",
        "world",
        "the",
        "quick",
        "brown",
        "fox",
        "jumps",
        "over",
        "lazy",
        "dog",
        "this",
        "is",
        "test",
    ]
    vocab: dict[str, int] = {}
    for token in [*special, *words, *(f"w{i}" for i in range(VOCAB))]:
        if len(vocab) < VOCAB:
            vocab.setdefault(token, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
