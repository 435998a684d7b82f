"""The cached environments the sharding engines run in (DeepSpeed, Megatron-core), outside the clone.

Each lives under ``~/.cache/tiegraph/<name>/venv`` (``$TIEGRAPH_CACHE`` replaces ``~/.cache/tiegraph``) and is
reused while its stamp file holds the sha256 of the pins that built it (``constraints-<name>.txt`` beside
this file, plus the main ``constraints.txt`` for the packages both share). Build order matters:

1. ``torch==2.13.0`` (the CPU build) first and on its own, so that nothing later pulls a CUDA build;
2. the pinned transformers, pytest and tiegraph's own dependencies, from the main ``constraints.txt``;
3. the engine: DeepSpeed from its sdist with ``DS_BUILD_OPS=0`` and no build isolation (its C++ ops are
   compiled on first use instead), Megatron-core from its wheel;
4. DeepSpeed only: the one C++ op its CPU accelerator needs on gloo (``ShareMemCommBuilder``), compiled
   now into torch's extension cache (``~/.cache/torch_extensions``, ``$TORCH_EXTENSIONS_DIR``), so that a
   test run does not spend its time limit compiling.

Measured on the 2-core CI machine: see ``.ci/run``.

tiegraph itself is not installed there: the tests run with the checkout on ``PYTHONPATH``.
Only the standard library is used here.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
MAIN_CONSTRAINTS = ROOT / "constraints.txt"
TORCH = "torch==2.13.0"
# Packages from the main pins every engine venv gets (tiegraph's runtime dependencies and the test runner).
SHARED = ("transformers", "networkx", "pydot", "safetensors", "tqdm", "pytest", "numpy", "accelerate")
#: engine -> (environment of its pip install, extra pip flags)
ENGINES: dict[str, tuple[dict[str, str], list[str]]] = {
    "deepspeed": ({"DS_BUILD_OPS": "0"}, ["--no-build-isolation"]),  # ops compile on first use instead
    "megatron": ({}, []),
}


def cache_root() -> Path:
    """``$TIEGRAPH_CACHE`` or ``~/.cache/tiegraph``."""
    return Path(os.environ.get("TIEGRAPH_CACHE", Path.home() / ".cache" / "tiegraph"))


def venv_python(name: str) -> Path:
    """The python of the cached venv of engine ``name``."""
    return cache_root() / name / "venv" / "bin" / "python"


def pins(name: str) -> Path:
    """The committed constraints file of engine ``name``."""
    return HERE / f"constraints-{name}.txt"


def _stamp(name: str) -> Path:
    return cache_root() / name / "venv" / ".tiegraph-stamp"


def _wanted(name: str) -> str:
    digest = hashlib.sha256(pins(name).read_bytes() + MAIN_CONSTRAINTS.read_bytes()).hexdigest()
    return f"{name} {digest}\n"


def is_ready(name: str) -> bool:
    """Whether engine ``name``'s venv exists and was built from the current pins."""
    stamp = _stamp(name)
    return venv_python(name).exists() and stamp.exists() and stamp.read_text() == _wanted(name)


def _say(msg: str) -> None:
    print(f"dev.py sharding: {msg}", flush=True)


def _pip(name: str, args: list[str], extra_env: dict[str, str] | None = None) -> None:
    env = dict(os.environ, **(extra_env or {}))
    cmd = [str(venv_python(name)), "-m", "pip", "install", "-q", *args]
    _say(shlex.join(cmd))
    started = time.monotonic()
    rc = subprocess.run(cmd, env=env).returncode
    if rc != 0:
        raise SystemExit(f"dev.py sharding: pip failed (exit {rc}) building the {name} venv")
    _say(f"  done in {time.monotonic() - started:.0f} s")


def _engine_requirements(name: str) -> list[str]:
    lines = (line.split("#")[0].strip() for line in pins(name).read_text().splitlines())
    return [line for line in lines if line and line.startswith(name)]


#: Compiles (or loads from torch's extension cache) the op DeepSpeed's CPU accelerator loads at init.
WARM_OPS = (
    "from deepspeed.accelerator import get_accelerator; "
    "get_accelerator().create_op_builder('ShareMemCommBuilder').load()"
)


def warm_ops() -> None:
    """Compile DeepSpeed's CPU communication op now (about 5 minutes the first time, cached after)."""
    started = time.monotonic()
    env = dict(os.environ, DS_ACCELERATOR="cpu")
    rc = subprocess.run([str(venv_python("deepspeed")), "-c", WARM_OPS], env=env).returncode
    if rc != 0:
        raise SystemExit(f"dev.py sharding: compiling DeepSpeed's CPU op failed (exit {rc})")
    _say(f"DeepSpeed's CPU op ready in {time.monotonic() - started:.0f} s (torch's extension cache)")


def build(name: str) -> Path:
    """Build (or reuse) the venv of engine ``name`` and return its python."""
    if is_ready(name):
        _say(f"{name} venv ready: {venv_python(name)}")
        if name == "deepspeed":
            warm_ops()  # (a few seconds when torch's extension cache holds it)
        return venv_python(name)
    started = time.monotonic()
    venv = venv_python(name).parent.parent
    if not venv_python(name).exists():
        venv.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    both = ["-c", str(MAIN_CONSTRAINTS), "-c", str(pins(name))]
    _pip(name, [TORCH])
    _pip(name, [*both, "setuptools", "wheel", *SHARED])
    extra_env, flags = ENGINES[name]
    _pip(name, [*both, *flags, *_engine_requirements(name)], extra_env)
    if name == "deepspeed":
        warm_ops()
    _stamp(name).write_text(_wanted(name))
    _say(f"{name} venv built in {time.monotonic() - started:.0f} s: {venv_python(name)}")
    return venv_python(name)


if __name__ == "__main__":
    for engine in sys.argv[1:] or ["deepspeed"]:
        build(engine)
