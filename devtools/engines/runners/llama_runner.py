"""The llama.cpp runtime (llama-cpp-python): convert the folder, load the GGUF, find which head made logits.

Runs in the llama.cpp-runtime engine venv: ``python llama_runner.py CONVERT_PY SCRIPT MANIFEST OUT`` (the
converter runs in its own venv). The runtime exposes no weights, so the head is read from its outputs: the
final hidden states (an embedding context with pooling ``NONE`` returns the output norm's result) times the
folder's embedding and times its head (plus the folder's head bias, when it has one), compared with the
logits the runtime computed for the same tokens. A GGUF the runtime refuses is the cell's ``load-error``.
"""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from _common import Loaded, folder_digest, kept_gguf, main

TEXT = "the model ties its head"


def _convert(folder: str, out: Path) -> None:
    cmd = [CONVERT_PY, SCRIPT, folder, "--outfile", str(out), "--outtype", "f32"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError("converter: " + " | ".join((done.stdout + done.stderr).splitlines()[-2:]))


def _refused(path: Path) -> str:
    """llama.cpp's own reason for refusing a GGUF: its log's error lines, from loading it again verbosely
    (``verbose=False`` discards them; ``verbose=True`` prints the whole log to ``sys.stderr``).
    """
    from llama_cpp import Llama

    log = io.StringIO()
    with contextlib.redirect_stderr(log), contextlib.suppress(ValueError):
        Llama(model_path=str(path), n_ctx=64, verbose=True).close()
    errors = [" ".join(line.split()) for line in log.getvalue().splitlines() if "error" in line.lower()]
    return " | ".join(errors) or "llama.cpp logged no error line"


def _run(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The last token's logits and final hidden state, computed by the runtime for the same text."""
    from llama_cpp import LLAMA_POOLING_TYPE_NONE, Llama

    try:
        llm = Llama(model_path=str(path), n_ctx=64, logits_all=True, verbose=False, seed=0)
    except ValueError as exc:  # "Failed to load model from file": the reason is in llama.cpp's log
        raise RuntimeError(f"{exc}: {_refused(path)}") from None
    tokens = llm.tokenize(TEXT.encode())
    llm.eval(tokens)
    logits = np.array(llm.scores[len(tokens) - 1], dtype=np.float64)
    llm.close()
    emb = Llama(
        model_path=str(path), n_ctx=64, embedding=True, pooling_type=LLAMA_POOLING_TYPE_NONE, verbose=False
    )
    per_token = emb.embed(TEXT)  # pooling NONE: one vector per token, the output norm's result
    emb.close()
    return logits, np.array(per_token[-1], dtype=np.float64)


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.allclose(a, b, rtol=1e-3, atol=1e-3))


def which_head(ref: dict[str, np.ndarray], logits: np.ndarray, hidden: np.ndarray) -> Loaded:
    """The folder tensor (and bias) whose product with the runtime's hidden state gives its logits."""
    bias = ref.get("bias")
    for name in ("head", "embedding"):
        if name not in ref:
            continue
        rows = min(ref[name].shape[0], logits.shape[0])
        guess = ref[name][:rows].astype(np.float64) @ hidden
        if bias is not None and _close(guess + bias[:rows], logits[:rows]):
            return Loaded(head=ref[name], bias=bias, note=f"logits = hidden @ folder {name} + folder bias")
        if _close(guess, logits[:rows]):
            return Loaded(head=ref[name], note=f"logits = hidden @ folder {name}")
    return Loaded(head=np.full_like(ref["embedding"], np.nan), note="logits match neither")


def _fresh_gguf(folder: str) -> Path | None:
    """The GGUF the converter's runner wrote from exactly these files, if it kept one."""
    kept = kept_gguf(folder)
    stamp = kept.with_suffix(".sha256")
    if kept.is_file() and stamp.is_file() and stamp.read_text() == folder_digest(folder):
        return kept
    return None


def load(entry: dict[str, Any]) -> Loaded:
    """Which of the folder's tensors (and its head bias) reproduces the runtime's logits.

    The GGUF is the one the converter's runner kept for exactly these files; without it (the runtime run
    alone, or the conversion failed) the folder is converted here, and a failed conversion is the error.
    """
    ref = dict(np.load(entry["ref"]))
    kept = _fresh_gguf(entry["folder"])
    if kept is not None:
        return which_head(ref, *_run(kept))
    with tempfile.TemporaryDirectory(prefix="tiegraph-llama-") as work:
        out = Path(work) / "model.gguf"  # a neutral name: the converter prints it
        _convert(entry["folder"], out)
        return which_head(ref, *_run(out))


if __name__ == "__main__":
    CONVERT_PY, SCRIPT = sys.argv.pop(1), sys.argv.pop(1)
    main("llama.cpp-runtime", f"llama-cpp-python {version('llama-cpp-python')}", load)
