"""The ``tiegraph`` commands: ``inspect``, ``diff``, ``survey`` and ``demo``, over the public API.

Models are built by :mod:`tiegraph.cli.specs` on the meta device (checkpoint headers are read by
:mod:`tiegraph._checkpoint`), so nothing is downloaded and no weight memory is allocated.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from .._formats import FORMAT_OF_SUFFIX
from .._text import did_you_mean, one_line, plural
from .specs import TASKS, UsageError

if TYPE_CHECKING:
    from torch import nn

    from .._acceptance import Acceptance
    from .._diff import TieDiff
    from .._graph import TieGraph
    from .specs import Built


__all__ = ["demo_command", "diff_command", "inspect_command", "survey_command"]


# ---------------------------------------------------------------------------------------------- inspect
def _output_format(fmt: str | None, output: str | None) -> str:
    if output:
        by_suffix = FORMAT_OF_SUFFIX.get(Path(output).suffix.lower())
        if fmt is None and by_suffix is None:
            raise UsageError(f"cannot tell the format of {output} from its suffix; pass --format")
        fmt = fmt or by_suffix
    fmt = fmt or "text"
    if fmt in ("png", "pdf") and not output:
        raise UsageError(f"--format {fmt} is binary: give -o FILE.{fmt}")
    return fmt


def inspect_command(args: argparse.Namespace) -> int:
    """``tiegraph inspect``: build one SPEC, wrap it, report its ties (text, JSON, DOT or a picture)."""
    from .. import _checkpoint
    from . import engines, quiet, specs, wrap
    from . import summary as summaries

    fmt = _output_format(args.format, args.output)
    if args.output:
        _writable(Path(args.output))
    sets = specs.parse_sets(args.sets)
    peft = wrap.parse_peft(args.peft)
    _needs_a_directory(args)
    built, model, wrappers, tg = _build(args.spec, args, sets, peft, compile=args.compile)
    built = engines.named_as_given(built, args)  # a hub id: its id and snapshot, not the cache folder
    checkpoint_lines: list[str] = []
    if built.checkpoint is not None:  # its problems are recorded as findings of tg
        checkpoint_lines = _checkpoint.check_checkpoint(
            tg, built.model, built.checkpoint, check_values=args.check_values
        )
    engine_lines, engine_data, engine_fails, acceptances = engines.engines_section(args, _acceptances(args))
    summary, plan = summaries.summarise(tg, accept=acceptances), _shard_plan(model, args.shard_plan)
    problem = any(f["severity"] in ("error", "warning") and not f["accepted"] for f in summary["findings"])

    if fmt != "text":
        for note in built.notes:
            print(f"tiegraph inspect: note: {note}", file=sys.stderr)
    if fmt == "text":
        text = _text_report(tg, built, wrappers, acceptances)
        text += "".join(
            f"\n{line}"
            for line in [*checkpoint_lines, *(f"shard plan: {f.severity}: {f}" for f in plan), *engine_lines]
        )
        _emit(text + "\n", args.output)
    elif fmt == "json":
        data = summaries.inspect_data(
            built, wrappers, model, summary, checkpoint_lines, plan, engine_data, tg
        )
        _emit(json.dumps(data, indent=1, default=str) + "\n", args.output)
    elif fmt == "dot":
        _emit(tg.to_dot(), args.output)
    elif fmt == "svg" and not args.output:
        with quiet.stderr_silenced():
            _emit(tg.to_svg(), None)
    else:
        with quiet.stderr_silenced():
            _write_picture(tg, args.output, fmt)
    if args.output:
        print(f"wrote {args.output}", file=sys.stderr)
    if args.strict and (problem or any(f.fails for f in plan) or engine_fails):
        why = [_why_strict(summary, plan)] if problem or any(f.fails for f in plan) else []
        why += [engines.strict_reason(engine_fails)] if engine_fails else []
        print(f"tiegraph inspect: --strict: {'; '.join(why)}", file=sys.stderr)
        return 1
    return 0


def _needs_a_directory(args: argparse.Namespace) -> None:
    """``--check-values`` and ``--engines`` read saved files: SPEC must be a checkpoint directory.

    A hub id is read from the local hub cache: SPEC becomes its snapshot folder (``args.hub_id``: the id).
    """
    from . import engines, specs

    flag = next(
        (f for f, on in (("--check-values", args.check_values), ("--engines", args.engines)) if on), ""
    )
    snapshot = engines.hub_snapshot(args.spec) if flag else None
    if snapshot is not None:
        args.hub_id, args.spec = args.spec, snapshot
    elif flag and not Path(args.spec).expanduser().is_dir():
        if specs.looks_like_path(args.spec):
            raise UsageError(f"no such directory: {args.spec}")
        raise UsageError(f"{flag} needs a checkpoint directory as SPEC, not {args.spec!r}")


def _shard_plan(model: Any, text: str | None) -> list[Any]:
    """The findings of ``--shard-plan`` (none without it); a bad plan is a usage error."""
    if not text:
        return []
    from ..errors import TiegraphError
    from ..sharding import check_shard_plan
    from ..sharding._plan import parse_plan

    try:
        return check_shard_plan(model, parse_plan(model, text))
    except TiegraphError as error:
        raise UsageError(f"--shard-plan: {error}") from None


def _why_strict(summary: dict[str, Any], plan: Sequence[Any] = ()) -> str:
    """One line: what made a --strict run fail (errors and warnings not accepted, of the shard plan too)."""
    failing = [
        f["kind"]
        for f in summary.get("findings") or []
        if f["severity"] in ("error", "warning") and not f["accepted"]
    ] + [f.kind for f in plan if f.fails]
    return f"the audit found {plural(len(failing), 'error or warning', 'errors or warnings')} " + (
        f"not accepted ({', '.join(dict.fromkeys(failing))})"
    )


def _acceptances(args: argparse.Namespace) -> list[Acceptance]:
    """The nearest pyproject.toml's [tool.tiegraph] acceptances, then --accept's."""
    from .._acceptance import parse, read_pyproject

    return [*read_pyproject(), *(parse(text, "--accept") for text in args.accept)]


def _write_picture(tg: TieGraph, output: str, fmt: str) -> None:
    path = Path(output)
    if fmt == "svg":
        _write(path, tg.to_svg())
    elif path.suffix.lower() == f".{fmt}":
        _writable(path)
        try:
            tg.write(path)
        except OSError as exc:
            raise UsageError(f"cannot write {output}: {exc.strerror or exc}") from None
    else:
        raise UsageError(f"--format {fmt} writes only to a .{fmt} file, not {output}")


def _writable(path: Path) -> None:
    """Fail early, with exit 2, when ``path`` cannot be written (before minutes of work)."""
    if path.is_dir():
        raise UsageError(f"cannot write {path}: it is a directory")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"cannot write {path}: no such directory {parent}")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UsageError(f"cannot write {path}: permission denied")


def _write(path: Path, text: str) -> None:
    """Write text output; an OS error is bad input (exit 2), not an internal error."""
    _writable(path)
    try:
        path.write_text(text)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None


def _emit(text: str, output: str | None) -> None:
    if output:
        _write(Path(output), text)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()


def _text_report(
    tg: TieGraph,
    built: Built | None = None,
    wrappers: Sequence[str] = (),
    accept: Sequence[Acceptance] = (),
) -> str:
    """The text shown for one model: what was built, the tied targets, then :meth:`TieGraph.report`."""
    from .summary import count_parameters, human_count

    lines = []
    if built is not None:
        count = count_parameters(built.model)
        size = f"{human_count(count)} parameter{'' if count == 1 else 's'}"
        lines.append(f"{built.spec}: {built.cls} ({built.source}), {size}")
        lines.extend(f"note: {note}" for note in built.notes)
    if wrappers:
        lines.append(f"wrapped: {'; '.join(wrappers)}")
    lines.append(f"tied to the input embedding: {_tied_line(tg)}")
    lines.append(tg.report(accept=accept).rstrip())
    return "\n".join(lines)


def _tied_line(tg: TieGraph) -> str:
    from ..errors import NoInputEmbeddingError

    try:
        tied = tg.tied_to_input_embedding()
    except NoInputEmbeddingError:
        return "(no input embedding found; name one with --input-embedding)"
    if not tied:
        return "nothing"
    full = tg.tied_to_input_embedding(full_paths=True)
    return ", ".join(tied) + (f"  [{', '.join(full)}]" if full != tied else "")


# ---------------------------------------------------------------------------------------------- survey
def _split(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def survey_command(args: argparse.Namespace) -> int:
    """``tiegraph survey``: build every architecture asked for in worker processes, tabulate the rows."""
    import os

    from . import survey, survey_report

    tasks, only = _survey_choices(args)
    for target in (args.json, args.markdown):
        if target:
            _writable(Path(target))
    old = _read_survey(args.compare) if args.compare else None
    items = survey.survey_items(tasks, only, args.limit)
    if not items:
        raise UsageError(f"no architecture of {', '.join(only)} has a head for {', '.join(tasks)}")
    jobs = max(1, min(args.jobs or os.cpu_count() or 1, len(items)))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    start = time.perf_counter()
    rows = survey.run_survey(items, jobs=jobs, time_limit=args.time_limit, progress=not args.no_progress)
    timing = {"seconds": round(time.perf_counter() - start, 2), "jobs": jobs, "load": load}
    print(survey_report.format_table(rows))
    print()
    print(survey_report.format_summary(rows, timing))
    meta = _versions() | {"tasks": tasks}
    data = {**meta, **timing, "results": rows}
    if old is not None:
        print()
        print(survey_report.format_compare(survey_report.compare(old, data), args.compare))
    if args.json:
        _write(Path(args.json), json.dumps(data, indent=1, default=str) + "\n")
        print(f"wrote {args.json}", file=sys.stderr)
    if args.markdown:
        _write(Path(args.markdown), survey_report.format_markdown(rows, timing, meta))
        print(f"wrote {args.markdown}", file=sys.stderr)
    return 0


def _survey_choices(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """The tasks and model types ``survey`` was asked for, and its numbers, checked (bad ones: exit 2)."""
    from . import specs, survey

    tasks = _split(args.tasks) or list(survey.DEFAULT_TASKS)
    bad = [t for t in tasks if t not in TASKS]
    if bad:
        raise UsageError(f"unknown task {bad[0]!r}; choose from {', '.join(TASKS)}")
    only = _split(args.only)
    if only:
        known = specs.model_types()
        unknown = [t for t in only if t not in known]
        if unknown:
            raise UsageError(f"unknown model type {unknown[0]!r}" + did_you_mean(unknown[0], known, n=5))
    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit must be at least 1")
    if args.jobs is not None and args.jobs < 1:
        raise UsageError(f"--jobs must be at least 1, not {args.jobs}")
    if not args.time_limit > 0:
        raise UsageError(f"--time-limit must be a positive number of seconds, not {args.time_limit:g}")
    return tasks, only


def _read_survey(path: str) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read --compare {path}: {one_line(exc, limit=None)}") from None
    if not isinstance(data, dict) or not isinstance(data.get("results"), list):
        raise UsageError(f"--compare {path} is not a survey written by --json (no results list)")
    return data


def _versions() -> dict[str, Any]:
    import torch
    import transformers

    return {"tiegraph": __version__, "transformers": transformers.__version__, "torch": torch.__version__}


# ---------------------------------------------------------------------------------------------- demo
def demo_command(args: argparse.Namespace) -> int:
    """``tiegraph demo``: the tour of tiny models, with their pictures written into a folder."""
    from .demo import run_demo

    if args.out:
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise UsageError(f"cannot write pictures into {args.out}: it is a file, not a folder")
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot write pictures into {args.out}: {exc.strerror or exc}") from None
        if not os.access(out, os.W_OK):
            raise UsageError(f"cannot write pictures into {args.out}: permission denied")
    else:
        out = Path(tempfile.mkdtemp(prefix="tiegraph-demo-"))
    start = time.perf_counter()
    run_demo(out, sys.stdout, _text_report)
    print(f"done in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


def _diff_side(spec: str, args: argparse.Namespace, *, after: bool) -> tuple[TieGraph, str]:
    """The graph of one side, and one line saying what it is."""
    from . import engines, specs, wrap

    sets = specs.parse_sets(args.sets) if after else []
    peft = wrap.parse_peft(args.peft) if after else None
    path = Path(spec).expanduser()
    if path.is_file():
        if after and (sets or args.compile or any((peft or {}).values())):
            raise UsageError(f"{spec} is a JSON graph: --set, --peft and --compile cannot rebuild it")
        return _read_graph(path), f"{spec} (graph read from JSON)"
    built, model, wrappers, tg = _build(spec, args, sets, peft, compile=after and args.compile)
    how = f"; wrapped: {'; '.join(wrappers)}" if wrappers else ""
    tg, loaded = engines.as_loaded_side(built, model, tg, args)  # a checkpoint: what loading it gives
    return tg, f"{built.spec}: {built.cls} ({built.source}){how}{loaded}"


def _build(
    spec: str,
    args: argparse.Namespace,
    sets: Sequence[tuple[list[str], Any]],
    peft: dict[str, list[str]] | None,
    *,
    compile: bool,
) -> tuple[Built, nn.Module, list[str], TieGraph]:
    """Build ``spec`` as the build options in ``args`` say, wrap it, and build the wrapped model's graph."""
    from .._build import build_graph
    from . import specs, wrap

    built = specs.build_spec(
        spec,
        cls_name=args.cls,
        task=args.task,
        sets=sets,
        trust_remote_code=args.trust_remote_code,
        allow_code=args.allow_code,
        meta=args.meta,
    )
    model, wrappers = wrap.wrap(built.model, peft, compile)
    return built, model, wrappers, build_graph(model, input_embedding=args.input_embedding)


def _read_graph(path: Path) -> TieGraph:
    """A graph from ``inspect --format json`` output (its ``graph`` entry) or ``TieGraph.to_json()`` data."""
    from .._graph import TieGraph

    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UsageError(f"{path} is not a JSON graph: {one_line(exc, limit=None)}") from None
    # inspect's JSON holds the graph under "graph"; TieGraph.to_json() data has its own "graph" (the graph's
    # attributes) beside "nodes"
    if isinstance(data, dict) and "nodes" not in data and isinstance(data.get("graph"), dict):
        data = data["graph"]
    return TieGraph.from_json(data)


def _accepted_changes(
    d: TieDiff, acceptances: Sequence[Acceptance]
) -> tuple[set[tuple[str, tuple[str, ...]]], list[str]]:
    """Findings added or resolved that an acceptance matches, and the acceptances that match none.

    A diff lists changes only, so an acceptance that matches none of them is a line of the report, not a
    finding (what it accepts did not change).
    """
    from .._acceptance import accept

    changes = [*d.findings_added, *d.findings_resolved]
    accepted = {(f.kind, f.paths) for f in accept(changes, acceptances) if f.accepted}
    unmatched = [f"{a} (from {a.origin})" for a in acceptances if not any(a.matches(f) for f in changes)]
    return accepted, unmatched


def _mark_accepted(line: str, accepted: set[tuple[str, tuple[str, ...]]]) -> str:
    """A diff report line about a finding that is accepted, marked so."""
    for kind, paths in accepted:
        if line.endswith(f"finding {kind}: {', '.join(paths)}"):
            return line + " (accepted)"
    return line


def diff_command(args: argparse.Namespace) -> int:
    """``tiegraph diff``: build or read A and B and say what changed about their ties."""
    from .._diff import diff

    before, what_a = _diff_side(args.a, args, after=False)
    after, what_b = _diff_side(args.b, args, after=True)
    d = diff(before, after)
    accepted, unmatched = _accepted_changes(d, _acceptances(args))
    if args.format == "json":
        data = {
            "a": what_a,
            "b": what_b,
            "changed": bool(d),
            "broken": d.broken,
            "made": d.made,
            "tied_before": d.tied_before,
            "tied_after": d.tied_after,
            "added": d.added,
            "removed": d.removed,
            "findings_added": [[f.kind, list(f.paths), f.message] for f in d.findings_added],
            "findings_resolved": [[f.kind, list(f.paths), f.message] for f in d.findings_resolved],
            "dtype": [list(c) for c in d.dtype],
            "placement": [list(c) for c in d.placement],
            "quantization": [list(c) for c in d.quantization],
            "report": d.lines(),
            "accepted": [[kind, list(paths)] for kind, paths in sorted(accepted)],
            "unmatched_acceptances": unmatched,
        }
        _emit(json.dumps(data, indent=1, default=str) + "\n", None)
    else:
        lines = [_mark_accepted(line, accepted) for line in d.lines()]
        lines += [f"accepted, not among the changes: {a}" for a in unmatched]
        _emit(f"A: {what_a}\nB: {what_b}\n\n" + "\n".join(lines) + "\n", None)
    rest = [f for f in (*d.findings_added, *d.findings_resolved) if (f.kind, f.paths) not in accepted]
    if args.strict and dataclasses.replace(d, findings_added=rest, findings_resolved=[]):
        print("tiegraph diff: --strict: the ties changed from A to B", file=sys.stderr)
        return 1
    return 0
