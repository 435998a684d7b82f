"""transformers (4 or 5): ``from_pretrained`` the folder, read ``get_output_embeddings().weight``.

Runs in the transformers-4 or transformers-5 engine venv:
``python transformers_runner.py ENGINE MANIFEST OUT``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
import transformers
from _common import Loaded, main


def _array(t: torch.Tensor | None) -> Any:
    return None if t is None else t.detach().float().numpy().copy()


def load(entry: dict[str, Any]) -> Loaded:
    """Load with the Auto class a user would call and read what the head holds."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoModelForSeq2SeqLM

    auto: Any = AutoModelForImageTextToText if entry["vlm"] else AutoModelForCausalLM  # (three Auto classes)
    auto = AutoModelForSeq2SeqLM if entry.get("seq2seq") else auto
    dtype_key = "dtype" if transformers.__version__.startswith("5") else "torch_dtype"
    model = auto.from_pretrained(entry["folder"], **{dtype_key: torch.float32})
    head_module, emb_module = model.get_output_embeddings(), model.get_input_embeddings()
    head, emb = head_module.weight, emb_module.weight
    shared = "the head shares the embedding's storage" if head.data_ptr() == emb.data_ptr() else ""
    bias = getattr(head_module, "bias", None)
    if entry.get("seq2seq"):  # BART adds final_logits_bias (a buffer of shape 1 x vocab) to the logits
        bias = model.final_logits_bias.reshape(-1)
    return Loaded(head=_array(head), embedding=_array(emb), bias=_array(bias), note=shared)


if __name__ == "__main__":
    engine = sys.argv.pop(1)
    transformers.logging.set_verbosity_warning()
    main(engine, f"transformers {transformers.__version__}", load, loggers=("transformers",))
