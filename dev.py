#!/usr/bin/env python3
"""Bootstrap and run tiegraph's developer tasks with nothing but Python 3.10+.

Usage::

    python3 dev.py demo  [tiegraph demo args]   # short report of the ties of a few tiny models
    python3 dev.py test  [pytest args]          # the whole test suite (on 2 processes unless -n is given)
    python3 dev.py check                        # ruff check, ruff format --check, mypy (strict)
    python3 dev.py docs  [sphinx-build args]    # the documentation site in docs/_build/html (warnings fail)
    python3 dev.py site                         # open the built site in headless Chromium, check every page
    python3 dev.py notebooks                    # execute notebooks/*.py into notebooks/*.ipynb with outputs
    python3 dev.py sharding env|test [args]     # DeepSpeed, Megatron-core in cached venvs (devtools/sharding)
    python3 dev.py engines [--fast|--only IDS]  # load generated folders with the real engines (venvs cached
                                                # in ~/.cache/tiegraph/engines/; devtools/engines;
                                                # --no-write: compare only, as CI runs --fast)
    python3 dev.py minimums [pytest args]       # the core tests at the lowest versions pyproject claims
                                                # (venv cached in ~/.cache/tiegraph/minimums/)
    python3 dev.py conformance [--peer NAME]    # the peers' tie tests with their helpers, then tiegraph's

Every command first makes sure ``.venv`` is ready:

1. ``.venv`` is created with the ``venv`` module if it does not exist.
2. If torch is not importable in it, torch is installed first, on its own, from ``torch==2.13.0``
   (or the pip arguments in ``$TIEGRAPH_TORCH_SPEC``, e.g. ``"torch==2.5.1 --index-url URL"``), so that
   the next step never pulls a multi-GB CUDA build as a dependency.
3. ``pip install -c constraints.txt -e .[test,dev,docs]`` runs when the stamp file
   ``.venv/.tiegraph-install-stamp`` does not hold the sha256 of the current ``pyproject.toml`` and
   ``constraints.txt``, this checkout's path, whether ``tiegraph/__init__.py`` exists and the two
   environment switches below, or when no tiegraph ``*.dist-info`` is in the venv. Repeat runs skip it.
   ``constraints.txt`` pins the versions the suite was run with; ``TIEGRAPH_NO_CONSTRAINTS=1`` installs
   without it (another Python or platform), and a ``TIEGRAPH_TORCH_SPEC`` drops only its torch line.

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
CONSTRAINTS = ROOT / "constraints.txt"
EXTRAS = "test,dev,docs"
DEFAULT_TORCH_SPEC = "torch==2.13.0"
DEFAULT_TEST_PROCESSES = "2"  # CI has 2 cores; pass -n to choose (-n 0 runs in this process)
COMMANDS = (
    "demo",
    "test",
    "check",
    "docs",
    "site",
    "notebooks",
    "sharding",
    "engines",
    "minimums",
    "conformance",
)
USAGE = (
    __doc__.split("Every command")[0].strip() if __doc__ else f"python3 dev.py {'|'.join(COMMANDS)} [args]"
)


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


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "missing"


def _wanted_stamp() -> str:
    # An editable install maps only the packages setuptools found at install time: a tiegraph/ with no
    # __init__.py yet maps nothing, so its appearance must trigger a reinstall too.
    package = (ROOT / "tiegraph" / "__init__.py").exists()
    return (
        f"pyproject.toml sha256 {_sha256(ROOT / 'pyproject.toml')}\n"
        f"constraints.txt sha256 {_sha256(CONSTRAINTS)}\n"
        f"TIEGRAPH_NO_CONSTRAINTS {os.environ.get('TIEGRAPH_NO_CONSTRAINTS', '')!r}\n"
        f"TIEGRAPH_TORCH_SPEC {os.environ.get('TIEGRAPH_TORCH_SPEC', '')!r}\n"
        f"checkout {ROOT}\ntiegraph package {package}\n"
    )


def _constraint_args() -> list[str]:
    """``["-c", file]`` for the pinned install, or nothing when the pins are switched off."""
    if os.environ.get("TIEGRAPH_NO_CONSTRAINTS") or not CONSTRAINTS.exists():
        return []
    if not os.environ.get("TIEGRAPH_TORCH_SPEC"):
        return ["-c", str(CONSTRAINTS)]
    # The user chose another torch build: keep every pin but torch's, which would fight that choice.
    lines = CONSTRAINTS.read_text().splitlines()
    kept = [line for line in lines if not line.replace(" ", "").lower().startswith("torch==")]
    path = VENV / "constraints-without-torch.txt"
    path.write_text("\n".join(kept) + "\n")
    return ["-c", str(path)]


def _ensure_project() -> None:
    wanted = _wanted_stamp()
    installed = glob.glob(str(VENV / "lib" / "python*" / "site-packages" / "tiegraph-*.dist-info"))
    if installed and STAMP.exists() and STAMP.read_text() == wanted:
        return
    cmd = ["pip", "install", "-q", *_constraint_args(), "-e", f".[{EXTRAS}]"]
    _say(f"installing tiegraph (editable) with its extras: {shlex.join(cmd)}")
    _must([PY, "-m", *cmd], "installing tiegraph")
    STAMP.write_text(wanted)


def _tool_env() -> dict[str, str]:
    """The environment for commands that start Jupyter kernels: their state stays in the checkout.

    IPython keeps a history database and profile under ``~/.ipython`` and Jupyter writes connection files
    under ``~/.local/share/jupyter``; both go to ``.venv/`` instead, and the history is switched off.
    """
    state = VENV / "jupyter-state"
    env = dict(os.environ)
    env.setdefault("IPYTHONDIR", str(state / "ipython"))
    env.setdefault("JUPYTER_RUNTIME_DIR", str(state / "runtime"))
    env.setdefault("JUPYTER_DATA_DIR", str(state / "data"))
    env.setdefault("JUPYTER_CONFIG_DIR", str(state / "config"))
    env.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    return env


def _has_processes_flag(args: Sequence[str]) -> bool:
    """Whether pytest args already say how many processes: ``-n N``, ``-nN``, ``--numprocesses``, no xdist."""
    return any(a.startswith(("-n", "--numprocesses")) or a.endswith("no:xdist") for a in args)


def _exec(cmd: Sequence[str | os.PathLike[str]], env: dict[str, str] | None = None) -> int:
    """Run ``cmd`` in the checkout and return its exit code (signals as 128 + number, like a shell)."""
    sys.stdout.flush()
    try:
        rc = subprocess.run([str(c) for c in cmd], cwd=ROOT, env=env).returncode
    except KeyboardInterrupt:
        return 130
    return 128 - rc if rc < 0 else rc


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help", "help"}:
        print(USAGE)
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        print(f"dev.py: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    if command in {"check", "site", "notebooks"} and rest:
        print(f"dev.py: {command} takes no arguments", file=sys.stderr)
        return 2
    if sys.version_info < (3, 10):  # noqa: UP036 -- dev.py runs under whatever python3 the machine has
        _say(f"tiegraph needs Python >= 3.10, this is {sys.version.split()[0]}")
        return 2

    # their own cached venvs, not .venv: DeepSpeed/Megatron (sharding), the lowest versions claimed (minimums)
    scripts = {
        "sharding": ROOT / "devtools" / "sharding" / "run.py",
        "minimums": ROOT / "devtools" / "minimums.py",
    }
    if command in scripts:
        return _exec([sys.executable, scripts[command], *rest])

    _ensure_venv()
    _ensure_torch()
    _ensure_project()

    if command == "demo":
        return _exec([BIN / "tiegraph", "demo", *rest])
    if command == "test":
        # Two worker processes unless the caller chose (-n N, -n 0, -p no:xdist); each has its own kernel.
        processes = [] if _has_processes_flag(rest) else ["-n", DEFAULT_TEST_PROCESSES]
        return _exec([PY, "-m", "pytest", *processes, *rest], env=_tool_env())
    if command == "docs":
        # -W: a warning fails the build; --keep-going: report all of them first; -n: every reference resolves.
        out = ROOT / "docs" / "_build" / "html"
        return _exec(
            [PY, "-m", "sphinx", "-j", "auto", "-W", "--keep-going", "-n", "-b", "html", *rest, "docs", out],
            _tool_env(),
        )
    if command == "site":
        return _exec(
            [PY, ROOT / "docs" / "check_site.py", ROOT / "docs" / "_build" / "html"], env=_tool_env()
        )
    if command == "notebooks":
        return _exec([PY, ROOT / "notebooks" / "execute.py"], env=_tool_env())
    if command in {"engines", "conformance"}:  # dev-only code: devtools/engines/, devtools/conformance/
        return _exec([PY, "-m", f"devtools.{command}", *rest])
    # check: run all three so one report shows every problem; fail with the first failure's code.
    codes = [
        _exec([PY, "-m", "ruff", "check", "."]),
        _exec([PY, "-m", "ruff", "format", "--check", "."]),
        _exec([PY, "-m", "mypy"]),  # strict over [tool.mypy] files: the package, tests, scripts, notebooks
    ]
    return next((c for c in codes if c != 0), 0)


if __name__ == "__main__":
    sys.exit(main())
