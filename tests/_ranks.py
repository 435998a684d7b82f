"""Start a worker script on real gloo ranks (CPU, loopback, a FileStore) and collect what each wrote.

``run_ranks(worker, out, world, timeout, python=...)`` runs ``python worker OUT`` once per rank with
``RANK``, ``WORLD_SIZE`` and ``TIEGRAPH_TEST_STORE`` set; each rank writes ``OUT/rank<N>.json``, a dict that
holds ``crash`` (a traceback) when the rank failed. Hung ranks are killed after ``timeout`` seconds and the
test fails: the suite never hangs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest


def run_ranks(
    worker: Path,
    out: Path,
    world: int,
    timeout: float,
    *,
    python: str = sys.executable,
    env: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """What every rank of ``worker`` wrote, in rank order; fails the test on a hang, a crash or no output."""
    root = os.fspath(Path(__file__).resolve().parent.parent)  # this checkout's tiegraph, not an installed one
    paths = [root, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    base = {
        **os.environ,
        **(env or {}),
        "PYTHONPATH": os.pathsep.join(paths),
        "WORLD_SIZE": str(world),
        "TIEGRAPH_TEST_STORE": os.fspath(out / "store"),
        "GLOO_SOCKET_IFNAME": "lo",  # loopback only
        "OMP_NUM_THREADS": "1",
    }
    procs = [
        subprocess.Popen(
            [python, os.fspath(worker), os.fspath(out)],
            env={**base, "RANK": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in range(world)
    ]
    logs = []
    try:
        for proc in procs:
            logs.append(proc.communicate(timeout=timeout)[0])
    except subprocess.TimeoutExpired:
        for proc in procs:
            proc.kill()
        pytest.fail(f"the {world} ranks of {worker.name} did not finish within {timeout} s (hang)")
    results = []
    for rank, proc in enumerate(procs):
        path = out / f"rank{rank}.json"
        assert path.exists(), f"rank {rank} exited {proc.returncode} without results:\n{logs[rank][-3000:]}"
        data = json.loads(path.read_text())
        assert "crash" not in data, f"rank {rank} crashed:\n{data['crash']}"
        results.append(data)
    return results
