"""``python3 dev.py sharding ...``: the engines that cut a model across processes, in cached venvs.

Usage::

    python3 dev.py sharding env [deepspeed] [megatron]    # build (or reuse) the cached venvs
    python3 dev.py sharding test [deepspeed] [megatron] [pytest args]
                                    # the tests marked with each engine, in its venv (default: both)
    python3 dev.py sharding record      # run the DeepSpeed recipe and both engines' tests for real, and
                                        # write what they printed to docs/recipes/deepspeed-output.txt

The venvs live under ``~/.cache/tiegraph/<engine>/venv`` (see ``env.py``); tiegraph runs there from this
checkout (``PYTHONPATH``), never installed. DeepSpeed runs on the CPU accelerator (``DS_ACCELERATOR=cpu``)
with gloo; its first distributed run compiles a C++ op (about 5 minutes) into torch's extension cache.
Only the standard library is used here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import env

USAGE = (__doc__ or "").split("The venvs")[0].strip()


def _test(args: list[str]) -> int:
    engines = [a for a in args if a in env.ENGINES] or list(env.ENGINES)
    rest = [a for a in args if a not in env.ENGINES]
    worst = 0
    for name in engines:
        python = env.build(name)
        environ = dict(os.environ)
        paths = [str(env.ROOT), environ.get("PYTHONPATH", "")]
        environ["PYTHONPATH"] = os.pathsep.join(filter(None, paths))
        environ.setdefault("DS_ACCELERATOR", "cpu")
        tests = sorted(str(p.relative_to(env.ROOT)) for p in (env.ROOT / "tests").glob(f"test_*{name}*.py"))
        if not tests:
            print(f"dev.py sharding: no tests/test_*{name}*.py: nothing of {name} ran", flush=True)
            worst = worst or 5
            continue
        cmd = [str(python), "-m", "pytest", "-p", "no:cacheprovider", "-m", name, *tests, *rest]
        print(f"dev.py sharding: {' '.join(cmd)}", flush=True)
        rc = subprocess.run(cmd, cwd=env.ROOT, env=environ).returncode
        worst = worst or rc
    return worst


OUTPUT = env.ROOT / "docs" / "recipes" / "deepspeed-output.txt"


def _ranks(python: Path, script: Path, world: int = 2) -> str:
    """Run ``script`` on ``world`` gloo CPU ranks; what rank 0 said (every rank's output if one fails)."""
    with tempfile.TemporaryDirectory() as tmp:
        base = dict(os.environ, DS_ACCELERATOR="cpu", WORLD_SIZE=str(world), GLOO_SOCKET_IFNAME="lo")
        said = Path(tmp) / "said.txt"
        base.update(TIEGRAPH_STORE=str(Path(tmp) / "store"), OMP_NUM_THREADS="1", PYTHONPATH=str(env.ROOT))
        base.update(TIEGRAPH_RECIPE_OUT=str(said))
        procs = [
            subprocess.Popen(
                [str(python), str(script)],
                env={**base, "RANK": str(rank)},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for rank in range(world)
        ]
        outs = [proc.communicate(timeout=1800) for proc in procs]
        if any(proc.returncode for proc in procs):
            logs = "\n".join(out + err for out, err in outs)
            raise SystemExit(f"dev.py sharding record: the recipe failed:\n{logs[-5000:]}")
        return said.read_text()


def _record() -> int:
    """Run the recipe and the tests for real; write what they printed where the docs include it."""
    python = env.build("deepspeed")
    printed = _ranks(python, env.HERE / "recipe.py")
    versions = subprocess.run(
        [str(python), "-c", "import deepspeed, torch; print(deepspeed.__version__, torch.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[-2:]
    summary = []
    for name in env.ENGINES:
        done = subprocess.run(
            [sys.executable, __file__, "test", name, "-q"], capture_output=True, text=True, cwd=env.ROOT
        )
        lines = [line for line in done.stdout.splitlines() if " passed" in line or " failed" in line]
        summary.append(f"#   {name}: {lines[-1].strip('= ') if lines else f'exit {done.returncode}'}")
        if done.returncode:
            print(done.stdout[-5000:])
            return done.returncode
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    header = [
        f"# Recorded by python3 dev.py sharding record on {when}: DeepSpeed {versions[0]}, torch "
        f"{versions[1]}, DS_ACCELERATOR=cpu, 2 gloo CPU ranks (what rank 0 printed).",
        "# The engines' tests (python3 dev.py sharding test) in the same run:",
        *summary,
    ]
    OUTPUT.write_text("\n".join(header) + "\n" + printed)
    print(f"dev.py sharding record: wrote {OUTPUT.relative_to(env.ROOT)}")
    return 0


def main(argv: list[str]) -> int:
    """Run ``dev.py sharding`` with ``argv`` (after the word ``sharding``)."""
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "env":
        unknown = sorted(set(rest) - set(env.ENGINES))
        if unknown:
            print(f"dev.py sharding env: unknown engine {unknown[0]!r} (known: {', '.join(env.ENGINES)})")
            return 2
        for name in rest or ["deepspeed"]:
            env.build(name)
        return 0
    if command == "test":
        return _test(rest)
    if command == "record":
        return _record()
    print(f"dev.py sharding: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
