"""Start a worker script on real gloo ranks (CPU, loopback, a FileStore) and collect what each wrote.

``run_ranks(worker, out, world, timeout, python=...)`` runs ``python worker OUT`` once per rank with
``RANK``, ``WORLD_SIZE`` and ``TIEGRAPH_TEST_STORE`` set; each rank writes ``OUT/rank<N>.json``, a dict that
holds ``crash`` (a traceback) when the rank failed. Hung ranks are killed after ``timeout`` seconds and the
test fails: the suite never hangs. ``worker_main(run)`` is the rank side: a worker script ends with it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback
from collections.abc import Callable
from datetime import timedelta
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


def worker_main(run: Callable[[int], dict[str, Any]]) -> None:
    """The rank side of :func:`run_ranks`: join the gloo group, write ``run(rank)`` as JSON, leave, exit.

    ``RANK``, ``WORLD_SIZE`` and ``TIEGRAPH_TEST_STORE`` come from the environment and the output folder
    from ``sys.argv[1]``; an exception in ``run`` is written as ``crash`` (its traceback) and exits 1.
    """
    import torch.distributed as dist

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    dist.init_process_group(
        "gloo",
        init_method="file://" + os.environ["TIEGRAPH_TEST_STORE"],
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=60),
    )
    try:
        results = run(rank)
    except BaseException:
        results = {"crash": traceback.format_exc()}
    Path(sys.argv[1], f"rank{rank}.json").write_text(json.dumps(results, indent=1))
    dist.destroy_process_group()
    sys.exit(0 if "crash" not in results else 1)
