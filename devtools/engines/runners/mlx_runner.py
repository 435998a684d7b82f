"""MLX: ``mlx_lm.utils.load_model`` the folder (``mlx_lm.load`` without the tokenizer), read parameters.

Runs in the mlx-lm engine venv: ``python mlx_runner.py MANIFEST OUT``. When the model has no ``lm_head``
module, mlx-lm computes logits with ``embed_tokens.as_linear`` (the head is the embedding).
"""

from __future__ import annotations

import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from _common import Loaded, main


def _np(array: Any) -> np.ndarray:
    import mlx.core as mx

    return np.array(array.astype(mx.float32))


def load(entry: dict[str, Any]) -> Loaded:
    """Load the weights as mlx-lm does (strict), then read ``lm_head.weight`` or the embedding."""
    from mlx.utils import tree_flatten
    from mlx_lm.utils import load_model

    model, _ = load_model(Path(entry["folder"]))
    params = dict(tree_flatten(model.parameters()))
    emb_key = next(k for k in params if k.endswith("embed_tokens.weight"))
    emb = _np(params[emb_key])
    head_key = next((k for k in params if k.endswith("lm_head.weight")), None)
    if head_key is None:
        return Loaded(head=emb, embedding=emb, note="no lm_head module: logits from embed_tokens.as_linear")
    bias_key = head_key.replace("weight", "bias")
    bias = _np(params[bias_key]) if bias_key in params else None
    return Loaded(head=_np(params[head_key]), embedding=emb, bias=bias)


if __name__ == "__main__":
    main("mlx-lm", f"mlx-lm {version('mlx-lm')}, mlx {version('mlx')}", load)
