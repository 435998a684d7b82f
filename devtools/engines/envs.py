"""One cached virtual environment per engine, under ``~/.cache/tiegraph/engines/<engine-id>/``.

Each engine's versions are pinned in ``requirements/<engine-id>.txt`` beside this file; the venv is rebuilt
only when that file (or the recipe below) changes, so a version moves only when someone bumps the pin.
``torch==2.13.0`` (the CPU build) is always installed first, so no requirement can pull a CUDA build.
Standard library only: this module runs before any engine venv exists.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REQUIREMENTS = HERE / "requirements"
CACHE = Path(os.environ.get("TIEGRAPH_ENGINES_CACHE", Path.home() / ".cache" / "tiegraph" / "engines"))
TORCH = "torch==2.13.0"
LLAMA_SDIST = "llama-cpp-python==0.3.36"


@dataclass(frozen=True)
class Recipe:
    """How one engine's environment is built."""

    engine: str
    venv: bool = True  # False: nothing installs (SGLang is CUDA only); only files are downloaded
    uninstall: tuple[str, ...] = ()  # what the engine pulls in and this machine must not keep
    sdist: bool = False  # unpack the llama-cpp-python sdist (its converter script) into the env dir
    env: dict[str, str] = field(default_factory=dict)  # extra environment for pip
    extra_pip: tuple[str, ...] = ()


RECIPES: dict[str, Recipe] = {
    r.engine: r
    for r in (
        Recipe("transformers-5"),
        Recipe("transformers-4"),
        Recipe("llama.cpp-convert", sdist=True),
        Recipe("optimum-onnx"),
        Recipe("mlx-lm"),
        Recipe("ort-genai-builder"),
        Recipe("vllm", uninstall=("torchvision", "torchaudio", "torchcodec")),
        Recipe("sglang", venv=False),
        Recipe(
            "llama.cpp-runtime",
            env={
                # the library alone: no multimodal (llava/mtmd) library, tests, examples or tools
                "CMAKE_ARGS": "-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF "
                "-DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF",
                "CMAKE_BUILD_PARALLEL_LEVEL": "2",
            },
            extra_pip=("--no-binary", "llama-cpp-python"),
        ),
    )
}
ORDER = tuple(RECIPES)  # fast engines first, the 20-minute source build last


def env_dir(engine: str) -> Path:
    """The cache folder of one engine's environment."""
    return CACHE / engine


def python(engine: str) -> Path:
    """The python of one engine's venv."""
    return env_dir(engine) / "venv" / "bin" / "python"


def wanted_stamp(recipe: Recipe) -> str:
    """What the stamp file must hold for the cached environment to be reused."""
    text = (REQUIREMENTS / f"{recipe.engine}.txt").read_bytes()
    return f"requirements sha256 {hashlib.sha256(text).hexdigest()}\nrecipe {recipe!r}\ntorch {TORCH}\n"


def is_built(engine: str) -> bool:
    """Whether the engine's cached environment exists and matches its pinned requirements."""
    stamp = env_dir(engine) / "stamp"
    return stamp.exists() and stamp.read_text() == wanted_stamp(RECIPES[engine])


def _run(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> None:
    with log.open("a") as out:
        out.write(f"\n$ {' '.join(cmd)}\n")
        out.flush()
        rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env).returncode
    if rc != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])} ... failed (exit {rc}); see {log}")


def _unpack_sdist(where: Path, log: Path) -> None:
    """Download the llama-cpp-python sdist (source only, no deps) and unpack it: the converter lives there."""
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "--no-binary",
            "llama-cpp-python",
            "--no-deps",
            LLAMA_SDIST,
            "-d",
            str(where),
        ],
        log,
    )
    archive = next(where.glob("llama_cpp_python-*.tar.gz"))
    with tarfile.open(archive) as tar:
        tar.extractall(where, filter="data")


def converter_script() -> Path:
    """``convert_hf_to_gguf.py`` inside the unpacked sdist."""
    found = sorted(
        env_dir("llama.cpp-convert").glob("llama_cpp_python-*/vendor/llama.cpp/convert_hf_to_gguf.py")
    )
    if not found:
        raise FileNotFoundError("llama.cpp-convert is not built: run `python3 dev.py engines --build-only`")
    return found[-1]


def build(engine: str) -> float:
    """Build (or reuse) one engine's environment; the seconds it took (0 when reused).

    A lock file beside the environment lets two runs share the cache: the second waits, then reuses.
    """
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / f"{engine}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return 0.0 if is_built(engine) else _build(RECIPES[engine])


def _build(recipe: Recipe) -> float:
    engine = recipe.engine
    start = time.monotonic()
    where = env_dir(engine)
    shutil.rmtree(where, ignore_errors=True)
    where.mkdir(parents=True)
    log = where / "build.log"
    reqs = str(REQUIREMENTS / f"{engine}.txt")
    if not recipe.venv:
        _run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-r", reqs, "-d", str(where)], log)
    else:
        py = str(python(engine))
        _run([sys.executable, "-m", "venv", str(where / "venv")], log)
        # --no-compile: byte-compiling torch's thousands of modules at install time is most of a cold build.
        pip = [py, "-m", "pip", "install", "-q", "--no-compile"]
        _run([*pip, TORCH], log)
        _run([*pip, *recipe.extra_pip, "-r", reqs, TORCH], log, {**os.environ, **recipe.env})
        if recipe.uninstall:
            _run([py, "-m", "pip", "uninstall", "-y", "-q", *recipe.uninstall], log)
    if recipe.sdist:
        _unpack_sdist(where, log)
    (where / "stamp").write_text(wanted_stamp(recipe))
    return time.monotonic() - start
