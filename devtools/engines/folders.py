"""Generate the folders every engine is asked to load: situations x architectures.

Run inside the transformers-5 engine venv (it has torch, transformers, safetensors and sentencepiece):
``<venv>/bin/python folders.py OUT``. Each folder is what ``save_pretrained`` wrote for a tiny model, then
edited (config keys at every level, ``lm_head.weight`` added, removed or replaced, shards, a padded head, a
head bias). Beside the folders, ``refs/<arch>__<situation>.npz`` holds the folder's embedding and head in
float32 (what a runner compares the loaded head with) and ``manifest.json`` lists every folder.
Everything is seeded: the same command writes the same bytes.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

if TYPE_CHECKING:
    from transformers import PreTrainedModel

VOCAB = 320  # sentencepiece with byte fallback needs 256 + specials; a multiple of 64 for vLLM's padding
PADDED_HEAD = 384  # vocab-mismatch: a head padded past the embedding's vocabulary
SIZES: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "vocab_size": VOCAB,
    "max_position_embeddings": 128,
}
ARCHES: dict[str, str] = {"llama": "llama", "qwen2": "qwen2", "gemma": "gemma"}
SEEDS = {"llama": 1, "qwen2": 2, "gemma": 3, "llava": 4, "bart": 5}
# An encoder-decoder whose head has a companion elsewhere in the files: BART (and Marian) add a learned
# ``final_logits_bias`` to the logits of a head tied to ``model.shared``. Loaded by the consumers that have
# the architecture; the others' rules are not read for it (the harness records why).
SEQ2SEQ_ENGINES = ("transformers-5", "transformers-4", "optimum-onnx")
SEQ2SEQ_WHY = (
    "the folder is a BART encoder-decoder (final_logits_bias). vLLM 0.32 has no BART of its own "
    "(vllm/model_executor/models/registry.py _OOT_SUPPORTED_MODELS points BartForConditionalGeneration to "
    "the out-of-tree bart-plugin, not on the package index here); llama.cpp's convert_hf_to_gguf.py "
    "registers no BART; the other consumers' rules are not read for it"
)
# situation -> (config flag: True / False / None for no key at any level, head: None / "equal" / "different")
CORE: dict[str, tuple[bool | None, str | None]] = {
    "tied-no-head": (True, None),
    "tied-head-equal": (True, "equal"),
    "tied-head-different": (True, "different"),
    "untied-head": (False, "different"),
    "untied-no-head": (False, None),
    "nokey-head-different": (None, "different"),
    "nokey-no-head": (None, None),
}
VARIANTS = ("sharded", "vocab-mismatch", "head-bias")
SITUATIONS = (*CORE, "text-config-only", *VARIANTS, "final-logits-bias")
EMBED = "embed_tokens.weight"
SHARED = "model.shared.weight"  # BART's input embedding, the one tensor its tied embeddings are saved as
HEAD = "lm_head.weight"
META = {"format": "pt"}


def _corpus() -> list[str]:
    rng = np.random.default_rng(0)
    words = [
        "the",
        "model",
        "ties",
        "its",
        "head",
        "to",
        "the",
        "embedding",
        "and",
        "an",
        "engine",
        "loads",
        "a",
        "folder",
        "of",
        "tensors",
    ]
    return [" ".join(rng.choice(words, size=12)) for _ in range(2000)]


def train_tokenizer(out: Path) -> Path:
    """A tiny sentencepiece model (byte fallback) trained here: the converters need one in the folder."""
    import sentencepiece as spm

    out.mkdir(parents=True, exist_ok=True)
    text = out / "corpus.txt"
    text.write_text("\n".join(_corpus()) + "\n")
    spm.SentencePieceTrainer.train(
        input=str(text),
        model_prefix=str(out / "tokenizer"),
        vocab_size=VOCAB,
        model_type="bpe",
        byte_fallback=True,
        character_coverage=1.0,
        hard_vocab_limit=False,
        num_threads=1,
        minloglevel=2,
        bos_id=1,
        eos_id=2,
        unk_id=0,
        pad_id=-1,
    )
    return out / "tokenizer.model"


def _add_tokenizer(folder: Path, sp_model: Path) -> None:
    shutil.copy(sp_model, folder / "tokenizer.model")
    config = {
        "tokenizer_class": "LlamaTokenizer",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "add_bos_token": True,
        "add_eos_token": False,
        "legacy": False,
        "model_max_length": 128,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")


def _base_model(arch: str) -> PreTrainedModel:
    """An untied tiny model (its head is a random tensor distinct from the embedding), seeded."""
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(SEEDS[arch])
    config = AutoConfig.for_model(ARCHES[arch], **SIZES, tie_word_embeddings=False)
    model: PreTrainedModel = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    return model


def _base_vlm() -> PreTrainedModel:
    """A tiny LLaVA (CLIP vision tower, llama text model), untied, seeded."""
    from transformers import AutoConfig, CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration

    torch.manual_seed(SEEDS["llava"])
    text = AutoConfig.for_model("llama", **SIZES, tie_word_embeddings=False)
    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
        projection_dim=32,
    )
    config = LlavaConfig(
        text_config=text, vision_config=vision, image_token_index=VOCAB - 1, tie_word_embeddings=False
    )
    model: LlavaForConditionalGeneration = LlavaForConditionalGeneration(config).eval()
    return model


def _base_bart() -> PreTrainedModel:
    """A tiny BART, tied as BART ships, with a learned (non-zero) ``final_logits_bias``, seeded."""
    from transformers import BartConfig, BartForConditionalGeneration

    torch.manual_seed(SEEDS["bart"])
    config = BartConfig(
        vocab_size=VOCAB,
        d_model=64,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        max_position_embeddings=128,
        tie_word_embeddings=True,
    )
    model: BartForConditionalGeneration = BartForConditionalGeneration(config).eval()
    with torch.no_grad():
        model.final_logits_bias.copy_(torch.randn(model.final_logits_bias.shape))
    return model


def _set_flag(config: dict[str, Any], flag: bool | None) -> None:
    """Set ``tie_word_embeddings`` at every level of the config (or remove it everywhere when ``None``)."""
    if flag is None:
        config.pop("tie_word_embeddings", None)
    else:
        config["tie_word_embeddings"] = flag
    for value in config.values():
        if isinstance(value, dict) and "model_type" in value:
            _set_flag(value, flag)


def _edit_config(folder: Path, flag: bool | None, situation: str) -> None:
    path = folder / "config.json"
    config = json.loads(path.read_text())
    if situation == "text-config-only":
        _set_flag(config, None)
        config["text_config"]["tie_word_embeddings"] = False
    else:
        _set_flag(config, flag)
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _head_tensors(tensors: dict[str, torch.Tensor], head: str | None, situation: str) -> None:
    """Add, remove or replace the head (and its companions) in the state dict, in place."""
    embed = _embedding_key(tensors)
    if head is None:
        tensors.pop(HEAD, None)
    elif head == "equal":
        tensors[HEAD] = tensors[embed].clone()
    gen = torch.Generator().manual_seed(99)
    if situation == "vocab-mismatch":
        extra = torch.randn(PADDED_HEAD - VOCAB, tensors[embed].shape[1], generator=gen) * 0.02
        tensors[HEAD] = torch.cat([tensors[HEAD], extra]).contiguous()
    if situation == "head-bias":
        tensors["lm_head.bias"] = torch.randn(VOCAB, generator=gen)


def _embedding_key(tensors: dict[str, torch.Tensor]) -> str:
    return SHARED if SHARED in tensors else next(k for k in tensors if k.endswith(EMBED))


def _write_tensors(folder: Path, tensors: dict[str, torch.Tensor], sharded: bool) -> None:
    for old in [*folder.glob("model*.safetensors"), *folder.glob("*.index.json")]:
        old.unlink()
    if not sharded:
        save_file(tensors, str(folder / "model.safetensors"), metadata=META)
        return
    # Two shards, as save_pretrained(max_shard_size=...) names them: the embedding first, the head last.
    names = sorted(tensors, key=lambda k: (k == HEAD, not k.endswith(EMBED), k))
    half = len(names) // 2
    parts = {
        "model-00001-of-00002.safetensors": names[:half],
        "model-00002-of-00002.safetensors": names[half:],
    }
    weight_map = {}
    for file, keys in parts.items():
        save_file({k: tensors[k] for k in keys}, str(folder / file), metadata=META)
        weight_map.update(dict.fromkeys(keys, file))
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


def _plan(situation: str) -> tuple[bool | None, str | None]:
    if situation in CORE:
        return CORE[situation]
    return {
        "sharded": (True, "different"),
        "vocab-mismatch": (False, "different"),
        "head-bias": (True, None),
        "text-config-only": (None, "different"),
        "final-logits-bias": (True, None),
    }[situation]


def make_folder(base: Path, out: Path, refs: Path, arch: str, situation: str) -> dict[str, Any]:
    """Copy the saved base folder and edit it into one situation; its manifest entry."""
    flag, head = _plan(situation)
    folder = out / arch / situation
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(base, folder)
    _edit_config(folder, flag, situation)
    tensors = load_file(str(base / "model.safetensors"))
    _head_tensors(tensors, head, situation)
    _write_tensors(folder, tensors, sharded=situation == "sharded")
    arrays: dict[str, Any] = {"embedding": tensors[_embedding_key(tensors)].float().numpy()}
    head_key = next((k for k in tensors if k.endswith(HEAD)), None)  # a VLM saves language_model.lm_head
    if head_key is not None:
        arrays["head"] = tensors[head_key].float().numpy()
    for bias in ("lm_head.bias", "final_logits_bias"):  # the runners compare either as the head's bias
        if bias in tensors:
            arrays["bias"] = tensors[bias].float().numpy().reshape(-1)
    ref = refs / f"{arch}__{situation}.npz"
    np.savez(ref, **arrays)
    what: dict[str, Any] = {"flag": flag, "head": head, "vlm": situation == "text-config-only"}
    if situation == "final-logits-bias":
        what.update(seq2seq=True, engines=list(SEQ2SEQ_ENGINES), why_not=SEQ2SEQ_WHY)
    return {"arch": arch, "situation": situation, "folder": str(folder), "ref": str(ref), **what}


APART = ("text-config-only", "final-logits-bias")  # situations of their own base model


def _folders(
    model: PreTrainedModel, out: Path, refs: Path, sp_model: Path, arch: str, key: str, wanted: list[str]
) -> list[dict[str, Any]]:
    """Save one base model, then every wanted situation of it."""
    base = out / "base" / f"{arch}{key and '-' + key}"
    shutil.rmtree(base, ignore_errors=True)
    model.save_pretrained(base)
    _add_tokenizer(base, sp_model)
    return [make_folder(base, out, refs, arch, s) for s in wanted]


def generate(out: Path) -> list[dict[str, Any]]:
    """Write every folder under ``out`` and return the manifest (also written to ``out/manifest.json``)."""
    out.mkdir(parents=True, exist_ok=True)
    refs = out / "refs"
    refs.mkdir(exist_ok=True)
    sp_model = train_tokenizer(out / "tokenizer")
    manifest = []
    for arch in ARCHES:
        models = {"": _base_model(arch)}
        if arch == "llama":
            models["text-config-only"] = _base_vlm()
        for key, model in models.items():
            wanted = [key] if key else [s for s in SITUATIONS if s not in APART]
            manifest += _folders(model, out, refs, sp_model, arch, key, wanted)
    manifest += _folders(_base_bart(), out, refs, sp_model, "bart", "", ["final-logits-bias"])
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


if __name__ == "__main__":
    print(json.dumps(generate(Path(sys.argv[1]))))
