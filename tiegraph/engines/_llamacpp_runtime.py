"""llama.cpp's runtime: what the head holds when it loads the GGUF its converter wrote from a folder.

Read from the llama-cpp-python 0.3.36 sdist (``vendor/llama.cpp/src/models``): ``llama.cpp`` and
``qwen2.cpp`` ``load_tensors`` create ``output`` with ``TENSOR_NOT_REQUIRED`` and fall back to ``token_embd``
(``TENSOR_DUPLICATED``) when the GGUF has none; ``gemma.cpp`` always uses ``token_embd``. The GGUF is the
converter's (:mod:`tiegraph.engines._llamacpp_convert`), so the head is the one the converter wrote; a head
of another vocabulary size fails ``llama_model_loader::check_tensor_dims`` ("has wrong shape"). An
``output.bias`` the converter wrote is read by ``qwen2.cpp`` (``output_b``); ``llama.cpp`` creates no such
tensor, so ``done_getting_tensors`` fails ("wrong number of tensors"). ``python3 dev.py engines`` runs the
runtime (llama-cpp-python built from that sdist, CPU) on the converter's GGUFs and reads its head from its
logits; the two errors are the ones llama.cpp logs there.
"""

from __future__ import annotations

from dataclasses import replace

from . import _llamacpp_convert
from ._rule import Case

__all__ = ["RULE"]

_WRONG_SHAPE = Case("load-error", True, "src/llama-model-loader.cpp: tensor 'output.weight' has wrong shape")

RULE = replace(
    _llamacpp_convert.RULE,
    engine="llama.cpp-runtime",
    table={**_llamacpp_convert.TABLE, (True, "mismatch"): _WRONG_SHAPE, (False, "mismatch"): _WRONG_SHAPE},
    companions={"bias": "load-error", "qwen2:bias": "kept", "gemma:bias": "load-error"},
    verified=True,
    source_ref=(
        "src/models/llama.cpp, src/models/qwen2.cpp: load_tensors (output TENSOR_NOT_REQUIRED, else "
        "token_embd TENSOR_DUPLICATED); src/models/gemma.cpp: load_tensors (output = token_embd); "
        "on the GGUF of " + _llamacpp_convert.SOURCE
    ),
)
