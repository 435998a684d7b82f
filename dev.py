#!/usr/bin/env python3
"""Bootstrap and run tiegraph's developer tasks with nothing but Python 3.10+.

Usage::

    python3 dev.py demo  [tiegraph demo args]   # short report of the ties of a few tiny models
    python3 dev.py test  [pytest args]          # the whole test suite
    python3 dev.py check                        # ruff check, ruff format --check, mypy tiegraph

Every command first makes sure ``.venv`` is ready:

1. ``.venv`` is created with the ``venv`` module if it does not exist.
2. If torch is not importable in it, torch is installed first, on its own, from ``torch==2.13.0``
   (or the pip arguments in ``$TIEGRAPH_TORCH_SPEC``, e.g. ``"torch==2.5.1 --index-url URL"``), so that
   the next step never pulls a multi-GB CUDA build as a dependency.
3. ``pip install -e .[test]`` runs when the stamp file ``.venv/.tiegraph-install-stamp`` does not hold
   the sha256 of the current ``pyproject.toml``, this checkout's path and whether ``tiegraph/__init__.py``
   exists, or when no tiegraph ``*.dist-info`` is in the venv. Repeat runs skip it.

The exit code is the child's (pytest exits 5 when it collected no test, and that stays non-zero).
Only the standard library is used here.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / ".tiegraph-install-stamp"
DEFAULT_TORCH_SPEC = "torch==2.13.0"
USAGE = __doc__.split("Every command")[0].strip() if __doc__ else "python3 dev.py demo|test|check [args]"


def _say(msg: str) -> None:
    print(f"dev.py: {msg}", flush=True)


def _run(cmd: Sequence[str | os.PathLike[str]]) -> int:
    return subprocess.run([str(c) for c in cmd], cwd=ROOT).returncode


def _must(cmd: Sequence[str | os.PathLike[str]], what: str) -> None:
    rc = _run(cmd)
    if rc != 0:
        _say(f"{what} failed (exit {rc}): {shlex.join(str(c) for c in cmd)}")
        sys.exit(rc)


def _ensure_venv() -> None:
    if PY.exists():
        return
    _say(f"creating {VENV.relative_to(ROOT)} with {sys.executable}")
    rc = _run([sys.executable, "-m", "venv", VENV])
    if rc != 0:
        _say("`python3 -m venv` failed; on Debian/Ubuntu: apt-get install python3-venv")
        sys.exit(rc)
    # Editable installs of a pyproject-only project need pip >= 21.3 (Python 3.10.0 ships 21.2).
    pips = glob.glob(str(VENV / "lib" / "python*" / "site-packages" / "pip-*.dist-info"))
    version = tuple(int(p) for p in Path(pips[0]).name[4:-10].split(".")[:2] if p.isdigit()) if pips else ()
    if version < (21, 3):
        _must([PY, "-m", "pip", "install", "-q", "--upgrade", "pip>=21.3"], "upgrading pip")


def _ensure_torch() -> None:
    # find_spec, not `import torch`: same answer for an installed torch, without a 1-2 s import per run.
    if _run([PY, "-c", "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is None)"]) == 0:
        return
    spec = os.environ.get("TIEGRAPH_TORCH_SPEC", DEFAULT_TORCH_SPEC)
    _say(f"installing torch first ({spec}); set TIEGRAPH_TORCH_SPEC to choose another build")
    _must([PY, "-m", "pip", "install", "-q", *shlex.split(spec)], "installing torch")


def _wanted_stamp() -> str:
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    # An editable install maps only the packages setuptools found at install time: a tiegraph/ with no
    # __init__.py yet maps nothing, so its appearance must trigger a reinstall too.
    package = (ROOT / "tiegraph" / "__init__.py").exists()
    return f"pyproject.toml sha256 {digest}\ncheckout {ROOT}\ntiegraph package {package}\n"


def _ensure_project() -> None:
    wanted = _wanted_stamp()
    installed = glob.glob(str(VENV / "lib" / "python*" / "site-packages" / "tiegraph-*.dist-info"))
    if installed and STAMP.exists() and STAMP.read_text() == wanted:
        return
    _say("installing tiegraph (editable) with its test extras: pip install -e .[test]")
    _must([PY, "-m", "pip", "install", "-q", "-e", ".[test]"], "installing tiegraph")
    STAMP.write_text(wanted)


def _exec(cmd: Sequence[str | os.PathLike[str]]) -> int:
    """Run ``cmd`` in the checkout and return its exit code (signals as 128 + number, like a shell)."""
    sys.stdout.flush()
    try:
        rc = subprocess.run([str(c) for c in cmd], cwd=ROOT).returncode
    except KeyboardInterrupt:
        return 130
    return 128 - rc if rc < 0 else rc


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help", "help"}:
        print(USAGE)
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command not in {"demo", "test", "check"}:
        print(f"dev.py: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    if command == "check" and rest:
        print("dev.py: check takes no arguments", file=sys.stderr)
        return 2
    if sys.version_info < (3, 10):  # noqa: UP036 -- dev.py runs under whatever python3 the machine has
        _say(f"tiegraph needs Python >= 3.10, this is {sys.version.split()[0]}")
        return 2

    _ensure_venv()
    _ensure_torch()
    _ensure_project()

    if command == "demo":
        return _exec([BIN / "tiegraph", "demo", *rest])
    if command == "test":
        return _exec([PY, "-m", "pytest", *rest])
    # check: run all three so one report shows every problem; fail with the first failure's code.
    codes = [
        _exec([PY, "-m", "ruff", "check", "."]),
        _exec([PY, "-m", "ruff", "format", "--check", "."]),
        _exec([PY, "-m", "mypy", "tiegraph"]),
    ]
    return next((c for c in codes if c != 0), 0)


if __name__ == "__main__":
    sys.exit(main())
