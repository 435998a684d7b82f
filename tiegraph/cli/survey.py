"""``tiegraph survey``: build every architecture of transformers' auto mappings on meta and tabulate its ties.

Each (model type, class) pair is built from its default config on the meta device in a worker process
(a forkserver pool that has imported torch and transformers once; workers are replaced every
``MAX_TASKS_PER_CHILD`` models so imported modeling code does not pile up), under a per-model time limit.
An architecture that cannot be built is a row with the reason; nothing it does ends the run.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

from .._text import one_line
from .quiet import quiet_libraries
from .repairs import RepairFailed, build_repaired
from .specs import TASKS, on_meta, task_mapping
from .summary import summarise

__all__ = ["run_survey", "survey_items", "survey_one"]

#: Survey tasks by default: every head with an output over the vocabulary (``base`` only when asked).
DEFAULT_TASKS = tuple(t for t in TASKS if t != "base")
MAX_TASKS_PER_CHILD = 100

Item = tuple[str, str, list[str]]  # model type, class name, tasks


class _Timeout(BaseException):
    """The per-model time limit ran out (a BaseException, so that no ``except Exception`` swallows it)."""


def survey_items(tasks: Sequence[str], only: Sequence[str] = (), limit: int | None = None) -> list[Item]:
    """The (model type, class, tasks) pairs to build, sorted, one per distinct pair.

    Parameters
    ----------
    tasks
        Names from :data:`tiegraph.cli.specs.TASKS`.
    only
        Keep only these model types (empty: all).
    limit
        Keep only the first ``limit`` pairs.
    """
    pairs: dict[tuple[str, str], list[str]] = {}
    for task in tasks:
        for model_type, cls in task_mapping(task).items():
            if only and model_type not in only:
                continue
            pairs.setdefault((model_type, cls), []).append(task)
    items = [(mt, cls, ts) for (mt, cls), ts in sorted(pairs.items())]
    return items[:limit] if limit is not None else items


def _alarm(_signum: int, _frame: Any) -> None:
    raise _Timeout


def _init_worker() -> None:
    quiet_libraries(verbose=False)


#: Packages the survey cannot install here, and why (named in the rows that need them).
NOT_INSTALLABLE = {
    "timm": "timm imports torchvision, and PyPI's torchvision for torch 2.13.0 is a CUDA build that does not "
    "load with the CPU torch (operator torchvision::nms does not exist)",
}
_REQUIRES = re.compile(r"requires the (\w+) library")


def _build_on_meta(make: Any) -> Any:
    with on_meta():
        return make()


def _needed_package(exc: BaseException) -> str:
    match = _REQUIRES.search(str(exc))
    return match.group(1) if match else (getattr(exc, "name", None) or one_line(exc).split(". ")[0])


def _fails_in_transformers(model_type: str, cls: Any, auto: Any) -> str | None:
    """Build the default config in transformers alone (plain meta device): its error, None if it built."""
    import torch
    import transformers

    try:
        config = transformers.AutoConfig.for_model(model_type)
        with torch.device("meta"):
            auto.from_config(config) if auto is not None else cls._from_config(config)
    except Exception as exc:
        return f"{type(exc).__name__}: {one_line(exc)}"
    return None


def survey_one(item: Item, time_limit: float = 60.0) -> dict[str, Any]:
    """Build one architecture on meta from its default config and summarise its graph (runs in a worker).

    A default config that does not build is repaired (:mod:`tiegraph.cli.repairs`); the row records the
    repairs. What still fails gets a status: ``needs-dependency`` (a package missing here, named),
    ``transformers-bug`` (the default config fails in transformers alone too, checked without tiegraph) or
    ``tiegraph-bug`` (it builds in transformers alone, or building the graph failed).
    """
    import transformers

    import tiegraph

    model_type, cls_name, tasks = item
    row: dict[str, Any] = {"model_type": model_type, "class": cls_name, "tasks": tasks}
    start, cpu = time.perf_counter(), time.process_time()
    use_alarm = time_limit > 0 and hasattr(signal, "setitimer")
    previous: Any = None
    stage = "class"
    try:
        if use_alarm:  # inside the try: a short limit may fire before the next line
            previous = signal.signal(signal.SIGALRM, _alarm)  # only the main thread may; workers run there
            signal.setitimer(signal.ITIMER_REAL, time_limit)
        cls = getattr(transformers, cls_name, None)
        if not isinstance(cls, type):
            row["status"] = "transformers-bug"
            row["reason"] = (
                f"the {tasks[0] if tasks else ''} mapping names {cls_name}, which transformers lacks"
            )
            return row
        # The task's auto class, as users build it: it hands composite configs' text config on.
        auto = getattr(transformers, TASKS[tasks[0]][0]) if tasks else None
        stage = "build"
        try:
            model, attempt = build_repaired(model_type, cls, auto, _build_on_meta)
        except RepairFailed as failed:
            row.update(_not_built(failed, model_type, cls, auto))
            return row
        row["repairs"] = list(dict.fromkeys(attempt.repairs))
        if attempt.repairs:
            row["repair_changes"] = attempt.changes
            row["default_error"] = attempt.errors[0]
        stage = "graph"
        tg = tiegraph.build_graph(model)
        row["parameters"] = sum(p.numel() for p in model.parameters())
        row.update(summarise(tg))
        row["status"] = "ok"
    except _Timeout:
        row["status"] = "timeout"
        row["reason"] = f"{stage} took longer than {time_limit:g} s"
    except BaseException as exc:  # a row per architecture, whatever it raises
        row["status"] = "tiegraph-bug" if stage == "graph" else "error"
        row["reason"] = f"{stage}: {type(exc).__name__}: {one_line(exc)}"
    finally:
        if use_alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            if previous is not None:
                signal.signal(signal.SIGALRM, previous)
        row["seconds"] = round(time.perf_counter() - start, 3)
        row["cpu_seconds"] = round(time.process_time() - cpu, 3)
    return row


def _not_built(failed: RepairFailed, model_type: str, cls: type, auto: Any) -> dict[str, Any]:
    """A row's repairs, errors, status and reason when no repair made the default config build."""
    row: dict[str, Any] = {
        "repairs": list(dict.fromkeys(failed.attempt.repairs)),
        "errors": failed.attempt.errors,
    }
    if isinstance(failed.last, ImportError):
        package = _needed_package(failed.last)
        row["status"] = "needs-dependency"
        row["reason"] = f"needs {package}" + (
            f": {NOT_INSTALLABLE[package]}" if package in NOT_INSTALLABLE else ""
        )
    elif (plain := _fails_in_transformers(model_type, cls, auto)) is not None:
        row["status"] = "transformers-bug"
        row["reason"] = (
            f"{plain} (also built by transformers alone; after repairs: {failed.attempt.errors[-1]})"
        )
    else:
        row["status"] = "tiegraph-bug"
        row["reason"] = f"builds in transformers alone but not on tiegraph's meta device: {failed}"
    return row


def _survey_task(args: tuple[Item, float]) -> dict[str, Any]:
    return survey_one(*args)


def _context() -> Any:
    methods = multiprocessing.get_all_start_methods()
    if "forkserver" in methods:
        ctx = multiprocessing.get_context("forkserver")
        # Imported once in the server; every worker forks from it ready to build.
        ctx.set_forkserver_preload(
            ["torch", "transformers", "transformers.modeling_utils", "tiegraph.cli.survey"]
        )
        return ctx
    return multiprocessing.get_context("spawn")


def run_survey(
    items: Sequence[Item], *, jobs: int | None = None, time_limit: float = 60.0, progress: bool = True
) -> list[dict[str, Any]]:
    """Build every item in worker processes; rows come back sorted like ``items``.

    A worker that stops answering for ``time_limit + 60`` seconds (stuck where the alarm cannot reach)
    ends the pool; the items not yet done become ``not-run`` rows.
    """
    from tqdm import tqdm  # type: ignore[import-untyped]

    jobs = max(1, jobs or os.cpu_count() or 1)
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    bar = tqdm(
        total=len(items), file=sys.stderr, disable=not progress, unit="model", desc="survey", leave=False
    )
    ctx = _context()
    pool = ctx.Pool(jobs, initializer=_init_worker, maxtasksperchild=MAX_TASKS_PER_CHILD)
    try:
        results = pool.imap_unordered(_survey_task, [(item, time_limit) for item in items], chunksize=1)
        for _ in items:
            try:
                row = results.next(timeout=time_limit + 60 if time_limit > 0 else None)
            except multiprocessing.TimeoutError:
                break
            rows[(row["model_type"], row["class"])] = row
            bar.set_postfix_str(row["model_type"], refresh=False)
            bar.update()
    finally:
        pool.terminate()
        pool.join()
        bar.close()
    out = []
    for model_type, cls, tasks in items:
        row = rows.get((model_type, cls))
        if row is None:
            row = {"model_type": model_type, "class": cls, "tasks": tasks, "status": "not-run"}
            row["reason"] = "a worker stopped answering before this architecture was built"
        out.append(row)
    return out
