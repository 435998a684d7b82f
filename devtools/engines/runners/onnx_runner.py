"""optimum's ONNX export and the ONNX Runtime GenAI model builder: export the folder, read the initializers.

Runs in the optimum-onnx or ort-genai-builder engine venv: ``python onnx_runner.py ENGINE MANIFEST OUT``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Loaded, main
from _onnx import head_and_embedding

WORK = Path(tempfile.mkdtemp(prefix="tiegraph-onnx-"))
VOCAB = 320


def _optimum(folder: str, out: Path, seq2seq: bool = False) -> list[str]:
    from optimum.exporters.onnx import main_export

    task = "text2text-generation" if seq2seq else "text-generation"  # BART: its ForConditionalGeneration
    main_export(folder, output=out, task=task, device="cpu", do_validation=False)
    return []


def _genai(folder: str, out: Path) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "onnxruntime_genai.models.builder",
        "-i",
        folder,
        "-o",
        str(out),
        "-p",
        "fp32",
        "-e",
        "cpu",
        "-c",
        str(out / "cache"),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    lines = (done.stdout + done.stderr).splitlines()
    if done.returncode != 0:
        raise RuntimeError(" | ".join(lines[-2:]))
    # The builder's output, transformers' load report included (run_one keeps the lines about the head),
    # less its progress bars ("Saving lm_head.MatMul.weight ... it/s"), which name the head on every run.
    return [line for line in lines if "it/s" not in line]


def load(entry: dict[str, Any]) -> Loaded:
    """Export, then read the head the exported graph computes logits with."""
    out = WORK / "export"  # a neutral name: the builder prints it, and "tied-..." would read as a warning
    shutil.rmtree(out, ignore_errors=True)
    if ENGINE == "ort-genai-builder":
        said = _genai(entry["folder"], out)
    else:
        said = _optimum(entry["folder"], out, seq2seq=bool(entry.get("seq2seq")))
    model = next(p for p in sorted(out.glob("*.onnx")) if "decoder" in p.name or p.name == "model.onnx")
    head, emb, bias = head_and_embedding(model, VOCAB)
    shutil.rmtree(out, ignore_errors=True)
    return Loaded(head=head, embedding=emb, bias=bias, note=f"read from {model.name}", extra_lines=said)


if __name__ == "__main__":
    ENGINE = sys.argv.pop(1)
    package = "onnxruntime-genai" if ENGINE == "ort-genai-builder" else "optimum-onnx"
    # Both read the folder through transformers; its version decides the head as much as theirs does.
    stack = f"{package} {version(package)} (transformers {version('transformers')})"
    main(ENGINE, stack, load, loggers=("optimum", "transformers", ""))
