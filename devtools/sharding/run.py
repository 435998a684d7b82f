"""``python3 dev.py sharding ...``: the engines that cut a model across processes, in cached venvs.

Usage::

    python3 dev.py sharding env [deepspeed] [megatron]    # build (or reuse) the cached venvs
    python3 dev.py sharding test [deepspeed] [megatron] [pytest args]
                                    # the tests marked with each engine, in its venv (default: both)

The venvs live under ``~/.cache/tiegraph/<engine>/venv`` (see ``env.py``); tiegraph runs there from this
checkout (``PYTHONPATH``), never installed. DeepSpeed runs on the CPU accelerator (``DS_ACCELERATOR=cpu``)
with gloo; its first distributed run compiles a C++ op (about 5 minutes) into torch's extension cache.
Only the standard library is used here.
"""

from __future__ import annotations

import os
import subprocess
import sys
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
    print(f"dev.py sharding: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
