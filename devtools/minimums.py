"""``python3 dev.py minimums [pytest args]``: the core suite at the lowest versions pyproject.toml claims.

The venv lives in ``~/.cache/tiegraph/minimums/venv`` and is reused while ``constraints-minimums.txt`` is
unchanged (a stamp file holds its sha256). It gets torch first, then tiegraph's own dependencies at the
floors that file pins (every other package as ``constraints.txt`` pins it), and the packages the core
tests import; tiegraph runs from this checkout (``PYTHONPATH``), never installed. The core tests are the
ones about the graph itself (storage, property, declarations, naming, diff, sources, lazy details, export);
the quantizer, engine and notebook tests need the full test environment and are left to ``dev.py test``.

Measured on the 2-core machine: building the venv about 3 minutes (torch from a local wheel, the rest from
the package index), the run about 5 minutes. Only the standard library is used here.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONSTRAINTS = ROOT / "constraints-minimums.txt"
HOME = Path(os.environ.get("TIEGRAPH_CACHE", Path.home() / ".cache" / "tiegraph")) / "minimums"
VENV = HOME / "venv"
PY = VENV / "bin" / "python"
STAMP = VENV / ".tiegraph-minimums-stamp"
#: what the core tests import beside tiegraph's own dependencies
TEST_PACKAGES = ["pytest", "pytest-xdist", "hypothesis", "pygraphviz", "peft", "accelerate", "ipython"]
CORE_TESTS = [
    "tests/test_storage_cases.py",
    "tests/test_property.py",
    "tests/test_declared.py",
    "tests/test_naming.py",
    "tests/test_diff.py",
    "tests/test_sources.py",
    "tests/test_lazy.py",
    "tests/test_export.py",
]


def _must(cmd: list[str]) -> None:
    rc = subprocess.run(cmd, cwd=ROOT).returncode
    if rc:
        print(f"dev.py minimums: failed (exit {rc}): {' '.join(cmd)}", file=sys.stderr)
        sys.exit(rc)


def _pin(name: str) -> str:
    """The ``name==version`` line of the minimums file."""
    for line in CONSTRAINTS.read_text().splitlines():
        if line.lower().startswith(f"{name}=="):
            return line.strip()
    raise SystemExit(f"dev.py minimums: {CONSTRAINTS.name} pins no {name}")


def build() -> Path:
    """The cached venv's Python, built (or rebuilt when the minimums file changed)."""
    wanted = hashlib.sha256(CONSTRAINTS.read_bytes()).hexdigest()
    if PY.exists() and STAMP.exists() and STAMP.read_text() == wanted:
        return PY
    print(f"dev.py minimums: building {VENV} from {CONSTRAINTS.name}", flush=True)
    _must([sys.executable, "-m", "venv", "--clear", str(VENV)])
    pip = [str(PY), "-m", "pip", "install", "-q"]
    _must([*pip, _pin("torch")])  # first and alone: never a CUDA build pulled in as a dependency
    requirements = ["networkx", "pydot", "safetensors", "huggingface_hub", "tqdm", "transformers"]
    _must([*pip, "-c", str(CONSTRAINTS), *requirements, *TEST_PACKAGES])
    STAMP.write_text(wanted)
    return PY


def main(argv: list[str]) -> int:
    """Build or reuse the venv and run the core tests there (``argv``: extra pytest arguments)."""
    python = build()
    environ = dict(os.environ)
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), environ.get("PYTHONPATH", "")]))
    versions = (
        "import torch, transformers, networkx, pydot; print(torch.__version__, transformers.__version__, "
    )
    versions += "networkx.__version__, pydot.__version__)"
    subprocess.run([str(python), "-c", versions], cwd=ROOT, env=environ)
    cmd = [str(python), "-m", "pytest", "-p", "no:cacheprovider", "-q", *CORE_TESTS, *argv]
    return subprocess.run(cmd, cwd=ROOT, env=environ).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
