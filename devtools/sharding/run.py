"""``python3 dev.py sharding ...``: the engines that cut a model across processes, in cached venvs.

Usage::

    python3 dev.py sharding env [deepspeed] [megatron]   # build (or reuse) the cached venvs
    python3 dev.py sharding test [pytest args]           # the tests marked `deepspeed`, in DeepSpeed's venv

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
    python = env.build("deepspeed")
    environ = dict(os.environ)
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(env.ROOT), environ.get("PYTHONPATH", "")]))
    environ.setdefault("DS_ACCELERATOR", "cpu")
    cmd = [str(python), "-m", "pytest", "-p", "no:cacheprovider", "-m", "deepspeed", "tests", *args]
    return subprocess.run(cmd, cwd=env.ROOT, env=environ).returncode


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
