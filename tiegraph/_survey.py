"""``tiegraph survey``: build every architecture of transformers' auto mappings on meta and tabulate its ties.

Each (model type, class) pair is built from its default config on the meta device in a worker process
(a forkserver pool that has imported torch and transformers once; workers are replaced every
``MAX_TASKS_PER_CHILD`` models so imported modeling code does not pile up), under a per-model time limit.
An architecture that cannot be built is a row with the reason; nothing it does ends the run.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from ._quiet import quiet_libraries
from ._spec import TASKS, _one_line, on_meta, task_mapping
from ._summary import summarise

__all__ = ["format_markdown", "format_summary", "format_table", "run_survey", "survey_items", "survey_one"]

#: Survey tasks by default: every head with an output over the vocabulary (``base`` only when asked).
DEFAULT_TASKS = tuple(t for t in TASKS if t != "base")
MAX_TASKS_PER_CHILD = 100

Item = tuple[str, str, list[str]]  # model type, class name, tasks


class _Timeout(Exception):
    pass


def survey_items(tasks: Sequence[str], only: Sequence[str] = (), limit: int | None = None) -> list[Item]:
    """The (model type, class, tasks) pairs to build, sorted, one per distinct pair.

    Parameters
    ----------
    tasks
        Names from :data:`tiegraph._spec.TASKS`.
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


def _alarm(signum: int, frame: Any) -> None:
    raise _Timeout


def _init_worker() -> None:
    quiet_libraries(verbose=False)


def survey_one(item: Item, time_limit: float = 60.0) -> dict[str, Any]:
    """Build one architecture on meta from its default config and summarise its graph (runs in a worker)."""
    import transformers

    import tiegraph

    model_type, cls_name, tasks = item
    row: dict[str, Any] = {"model_type": model_type, "class": cls_name, "tasks": tasks}
    start, cpu = time.perf_counter(), time.process_time()
    use_alarm = time_limit > 0 and hasattr(signal, "setitimer")
    previous: Any = None
    if use_alarm:
        previous = signal.signal(signal.SIGALRM, _alarm)  # only the main thread may; workers run there
        signal.setitimer(signal.ITIMER_REAL, time_limit)
    stage = "config"
    try:
        config = transformers.AutoConfig.for_model(model_type)
        stage = "class"
        getattr(transformers, cls_name)  # the class must exist
        auto = getattr(transformers, TASKS[tasks[0]][0]) if tasks else None
        stage = "build"
        with on_meta():
            # The task's auto class, as users build it: it hands composite configs' text config on.
            model = auto.from_config(config) if auto else getattr(transformers, cls_name)._from_config(config)
        stage = "graph"
        tg = tiegraph.build_graph(model)
        row["parameters"] = sum(p.numel() for p in model.parameters())
        row.update(summarise(tg))
        row["status"] = "ok"
    except _Timeout:
        row["status"] = "timeout"
        row["reason"] = f"{stage} took longer than {time_limit:g} s"
    except BaseException as exc:  # a row per architecture, whatever it raises
        row["status"] = "error"
        row["reason"] = f"{stage}: {type(exc).__name__}: {_one_line(exc)}"
        if isinstance(exc, ImportError):
            name = getattr(exc, "name", None)
            first = _one_line(exc).split(". ")[0]
            row["reason"] = (
                f"{stage}: needs the {name!r} package" if name else f"{stage}: ImportError: {first}"
            )
    finally:
        if use_alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    row["seconds"] = round(time.perf_counter() - start, 3)
    row["cpu_seconds"] = round(time.process_time() - cpu, 3)
    return row


def _survey_task(args: tuple[Item, float]) -> dict[str, Any]:
    return survey_one(*args)


def _context() -> Any:
    methods = multiprocessing.get_all_start_methods()
    if "forkserver" in methods:
        ctx = multiprocessing.get_context("forkserver")
        # Imported once in the server; every worker forks from it ready to build.
        ctx.set_forkserver_preload(
            ["torch", "transformers", "transformers.modeling_utils", "tiegraph._survey"]
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


# ---------------------------------------------------------------------------------------------- output
def _cells(row: dict[str, Any]) -> list[str]:
    tied = row.get("tied_to_input_embedding")
    tied_cell = "(no input embedding)" if tied is None else (", ".join(tied) or "-")
    groups = row.get("tie_groups") or []
    groups_cell = str(len(groups)) if groups else "-"
    if groups and max(len(g) for g in groups) > 2:
        groups_cell += f" (max {max(len(g) for g in groups)})"
    declared = row.get("declared")
    if declared is None:
        declared_cell = "?"
    else:
        counts = Counter(d["status"] for d in declared)
        declared_cell = " ".join(f"{k}:{v}" for k, v in sorted(counts.items())) or "-"
    findings = row.get("findings")
    if findings is None:
        findings_cell = "?"
    else:
        kinds = Counter(str(f["kind"]) for f in findings)
        findings_cell = ", ".join(k if v == 1 else f"{k} x{v}" for k, v in sorted(kinds.items())) or "-"
    return [row["model_type"], row["class"], tied_cell, groups_cell, declared_cell, findings_cell]


HEADER = ["architecture", "class", "tied targets", "groups", "declared", "findings"]


def format_table(rows: Iterable[dict[str, Any]]) -> str:
    """A plain-text table of the built rows, then the ones that could not be built with their reasons."""
    rows = list(rows)
    built = [_cells(r) for r in rows if r["status"] == "ok"]
    lines = []
    if built:
        widths = [max(len(h), *(len(c[i]) for c in built)) for i, h in enumerate(HEADER)]
        widths[2] = min(widths[2], 60)
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        lines.append(fmt.format(*HEADER).rstrip())
        lines.append(fmt.format(*("-" * w for w in widths)).rstrip())
        lines.extend(fmt.format(*cells).rstrip() for cells in built)
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        lines.append("")
        lines.append(f"not built ({len(failed)}):")
        lines.extend(
            f"  {r['model_type']} {r['class']}: {r['status']}: {r.get('reason', '')}" for r in failed
        )
    return "\n".join(lines)


def format_summary(rows: Sequence[dict[str, Any]], seconds: float, jobs: int) -> str:
    """One paragraph: counts of built, failed, tied, and findings by kind."""
    ok = [r for r in rows if r["status"] == "ok"]
    status = Counter(r["status"] for r in rows if r["status"] != "ok")
    tied = [r for r in ok if r.get("tied_to_input_embedding")]
    grouped = [r for r in ok if r.get("tie_groups")]
    cpu = sum(r.get("cpu_seconds", 0.0) for r in rows)
    lines = [
        f"{len(rows)} architectures in {seconds:.1f} s on {jobs} worker{'s' if jobs != 1 else ''} "
        f"({cpu:.0f} s of worker CPU time): "
        f"{len(ok)} built"
        + "".join(f", {n} {s}" for s, n in sorted(status.items()))
        + f"; {len(tied)} tie the input embedding to something, {len(grouped)} have tie groups."
    ]
    if ok and all(r.get("findings") is not None for r in ok):
        kinds = Counter(str(f["kind"]) for r in ok for f in r["findings"])
        with_findings = sum(1 for r in ok if r["findings"])
        detail = ", ".join(f"{k} {v}" for k, v in kinds.most_common())
        lines.append(
            f"Audit findings in {with_findings} architectures" + (f" ({detail})." if detail else ".")
        )
    elif ok:
        lines.append("Declared ties and audit findings: missing from some rows (see their reasons).")
    return "\n".join(lines)


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def format_markdown(rows: Sequence[dict[str, Any]], seconds: float, jobs: int, meta: dict[str, Any]) -> str:
    """The survey as a markdown document (the table in ``docs/survey.md``)."""
    versions = ", ".join(f"{k} {v}" for k, v in meta.items() if k != "tasks")
    out = [
        "# Survey of the transformers zoo",
        "",
        f"Generated by `tiegraph survey --markdown docs/survey.md` ({versions}). Every architecture in "
        "transformers' auto mappings for the tasks "
        + ", ".join(f"`{t}`" for t in meta.get("tasks", DEFAULT_TASKS))
        + " is built from its default config on the meta device (no weights exist) and analysed.",
        "",
        "Columns: **tied targets** are the modules that really share memory with the input embedding "
        "(canonical paths); **groups** counts tie groups (largest size when above 2); **declared** counts "
        "the declared ties by status; **findings** lists the audit's finding kinds.",
        "",
        format_summary(rows, seconds, jobs),
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "---|" * len(HEADER),
    ]
    out.extend("| " + " | ".join(_md(c) for c in _cells(r)) + " |" for r in rows if r["status"] == "ok")
    flagged = [r for r in rows if r["status"] == "ok" and r.get("findings")]
    if flagged:
        out += ["", f"## Findings ({len(flagged)} architectures)", ""]
        for r in flagged:
            out.append(f"- **{r['model_type']}** `{r['class']}`:")
            out.extend(
                f"  - `{f['kind']}` ({', '.join(f['paths'] or [])}): {f['message']}" for f in r["findings"]
            )
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        out += ["", f"## Not built ({len(failed)})", "", "| architecture | class | reason |", "|---|---|---|"]
        out.extend(
            f"| {r['model_type']} | {r['class']} | {_md(r['status'] + ': ' + r.get('reason', ''))} |"
            for r in failed
        )
    return "\n".join(out) + "\n"
