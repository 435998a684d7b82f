"""vLLM (CPU build): load the folder in process and read the head with ``LLM.apply_model``.

Runs in the vllm engine venv: ``python vllm_runner.py MANIFEST OUT``. ``VLLM_ENABLE_V1_MULTIPROCESSING=0``
keeps the engine core in this process, so one process loads every folder in turn (an import of vLLM costs
about 40 s here) and its log records are captured per folder. The vocabulary vLLM pads to a multiple of 64
is cut back to the folder's.
"""

from __future__ import annotations

import gc
import os
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

os.environ.update(VLLM_ENABLE_V1_MULTIPROCESSING="0", VLLM_CPU_KVCACHE_SPACE="1", OMP_NUM_THREADS="2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from _common import Loaded, main


def _read(model: Any) -> dict[str, Any]:
    model = getattr(model, "language_model", model)  # a VLM (LLaVA): its language model holds both
    emb = model.model.embed_tokens.weight
    head = getattr(model, "lm_head", None)
    out = {"embedding": emb.detach().float().cpu().numpy().copy()}
    if head is None:
        return out
    out["head"] = head.weight.detach().float().cpu().numpy().copy()
    if getattr(head, "bias", None) is not None:
        out["bias"] = head.bias.detach().float().cpu().numpy().copy()
    out["shared"] = head.weight.data_ptr() == emb.data_ptr()
    return out


def load(entry: dict[str, Any]) -> Loaded:
    """Build the engine on the folder, read what its head holds, drop the engine."""
    from vllm import LLM

    llm = LLM(
        model=entry["folder"],
        dtype="float32",
        enforce_eager=True,
        skip_tokenizer_init=True,
        max_model_len=128,
        seed=0,
        max_num_seqs=4,
        # a VLM runs as its language model alone: no image processor, no vision profiling
        **({"limit_mm_per_prompt": {"image": 0}} if entry["vlm"] else {}),
    )
    got = llm.apply_model(_read)[0]
    del llm
    gc.collect()
    ref = np.load(entry["ref"])
    vocab = int(ref["embedding"].shape[0])
    emb = got["embedding"][:vocab]
    if "head" not in got:
        return Loaded(head=emb, embedding=emb, note="no lm_head module: logits from embed_tokens")
    rows = int(ref["head"].shape[0]) if "head" in ref else vocab
    note = "lm_head shares embed_tokens' weight" if got["shared"] else ""
    bias = got["bias"][:rows] if "bias" in got else None
    return Loaded(head=got["head"][:rows], embedding=emb, bias=bias, note=note)


def _skip(entry: dict[str, Any]) -> str | None:
    if not entry["vlm"]:
        return None
    return (
        "cannot load here: vLLM 0.32's models/llava.py imports pixtral.py, which imports transformers' "
        "image_processing_pixtral and so torchvision; this venv drops torchvision (the vllm-cpu recipe), and "
        "the package index's torchvision 0.28.0 does not load against torch 2.13.0+cpu ('operator "
        "torchvision::nms does not exist'). Tried: 'Model architectures [LlavaForConditionalGeneration] "
        "failed to be inspected'"
    )


if __name__ == "__main__":
    main("vllm", f"vllm-cpu {version('vllm-cpu')}", load, skip=_skip, loggers=("vllm",))
