"""llama.cpp's converter: ``convert_hf_to_gguf.py`` the folder, read the GGUF with ``gguf.GGUFReader``.

Runs in the llama.cpp-convert engine venv: ``python gguf_runner.py SCRIPT MANIFEST OUT``. The cell's head is
what the GGUF gives the runtime: ``output.weight`` when the converter wrote one, else ``token_embd.weight``
(llama.cpp's loader, ``llama_model::load_tensors`` in src/llama-model.cpp, falls back to the token
embedding when ``output.weight`` is absent). The GGUF is kept beside the folder (``<folder>.gguf``): the
llama.cpp runtime's runner loads it.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from _common import Loaded, folder_digest, kept_gguf, main

SCRIPT = Path(sys.argv.pop(1)) if __name__ == "__main__" else Path()
WORK = Path(tempfile.mkdtemp(prefix="tiegraph-gguf-"))


def _tensors(path: Path) -> dict[str, np.ndarray]:
    from gguf import GGUFReader
    from gguf.quants import dequantize

    reader = GGUFReader(path)
    wanted = ("token_embd.weight", "output.weight", "output.bias")
    found = {}
    for t in reader.tensors:
        if t.name in wanted:
            value = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32)
            found[t.name] = value.reshape([int(d) for d in reversed(t.shape)])
    return found


def load(entry: dict[str, Any]) -> Loaded:
    """Convert to f32 GGUF; a failed conversion raises with the converter's last lines."""
    out = WORK / "model.gguf"  # a neutral name: the converter prints it
    kept = kept_gguf(entry["folder"])  # the runtime's runner loads it instead of converting again
    kept.unlink(missing_ok=True)  # no GGUF of an earlier run stays when this conversion fails
    cmd = [sys.executable, str(SCRIPT), entry["folder"], "--outfile", str(out), "--outtype", "f32"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    lines = (done.stdout + done.stderr).splitlines()
    if done.returncode != 0:
        raise RuntimeError(" | ".join(lines[-2:]))
    found = _tensors(out)
    out.replace(kept)
    kept.with_suffix(".sha256").write_text(folder_digest(entry["folder"]))
    emb = found.get("token_embd.weight")
    said = [line for line in lines if "WARNING" in line or "ERROR" in line]
    bias = found.get("output.bias")
    if "output.weight" in found:
        note = "GGUF has output.weight"
        return Loaded(head=found["output.weight"], embedding=emb, bias=bias, note=note, extra_lines=said)
    note = "GGUF has no output.weight: the runtime uses token_embd"
    return Loaded(head=emb, embedding=emb, bias=bias, note=note, extra_lines=said)


if __name__ == "__main__":
    sdist = SCRIPT.parents[2].name.replace("llama_cpp_python-", "llama-cpp-python ")
    main("llama.cpp-convert", f"convert_hf_to_gguf.py from {sdist} sdist, gguf {version('gguf')}", load)
