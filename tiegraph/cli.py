"""The ``tiegraph`` command: ``inspect`` a model, ``survey`` the transformers zoo, or take the ``demo`` tour.

A thin layer over the public API (:func:`tiegraph.build_graph` and :class:`tiegraph.TieGraph`); models are
built by :mod:`tiegraph._spec` (checkpoint directories by :mod:`tiegraph.checkpoint`) on the meta device, so
nothing is downloaded and no weight memory is allocated.

Exit codes: 0 success; 1 with ``--strict`` when the audit found an error or a warning not accepted (``diff``:
when the ties changed); 2 bad usage or input (one line on stderr naming it, and the ``--help`` of the command
that has the usage);
3 tiegraph itself failed (``-v`` shows the traceback).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from . import __version__
from ._spec import TASKS, UsageError
from ._text import did_you_mean, plural
from .errors import TiegraphError

if TYPE_CHECKING:
    from torch import nn

    from ._spec import Built
    from .acceptance import Acceptance
    from .diff import TieDiff
    from .graph import TieGraph

__all__ = ["main"]

FORMATS = ("text", "json", "dot", "svg", "png", "pdf")
SUFFIXES = {
    ".txt": "text",
    ".json": "json",
    ".dot": "dot",
    ".gv": "dot",
    ".svg": "svg",
    ".png": "png",
    ".pdf": "pdf",
}

MAIN_EXAMPLES = """\
examples:
  tiegraph inspect llama --set tie_word_embeddings=true   which modules share memory with the embedding
  tiegraph inspect gemma3 --peft lora:lm_head             what LoRA on lm_head does to the tie
  tiegraph inspect ./my-checkpoint --check-values         is this checkpoint's head tied?
  tiegraph diff gemma gemma --peft lora:lm_head           what LoRA on lm_head does to the ties
  tiegraph survey --tasks causal-lm --json survey.json    every causal LM in transformers
  tiegraph demo --out pictures                            a tour of tiny models, with pictures

Every model is built on the meta device from a config: nothing is downloaded, no weight memory is used.
exit codes: 0 ok, 1 --strict and the audit found an error or warning not accepted (diff: the ties changed),
2 bad usage or input, 3 internal error.
"""

INSPECT_EXAMPLES = """\
SPEC is one of:
  a transformers model type        llama, t5, gemma3, ... built from its default config on meta
  a checkpoint directory           holding config.json (+ *.safetensors): built on meta from the config,
                                   safetensors headers read beside the ties; .bin/.pt files are never
                                   unpickled (a pickle-only folder: finding checkpoint-not-checked)
  package.module:callable          returns an nn.Module; runs code, so only with --allow-code

examples:
  tiegraph inspect llama
  tiegraph inspect llama --set tie_word_embeddings=true --set num_hidden_layers=80
  tiegraph inspect llava --set tie_word_embeddings=true
  tiegraph inspect llava --set text_config.tie_word_embeddings=true   (finding: config-flags-disagree)
  tiegraph inspect t5 --format json -o t5.json
  tiegraph inspect bert --task masked-lm -o bert.svg
  tiegraph inspect gemma --peft lora:lm_head,q_proj
  tiegraph inspect gemma --peft lora-tied:lm_head
  tiegraph inspect gemma --peft lora:q_proj --peft modules-to-save:lm_head --strict
  tiegraph inspect ./ckpt --check-values
  tiegraph inspect mypkg.models:make_model --allow-code --meta
"""

SURVEY_EXAMPLES = """\
examples:
  tiegraph survey                                   every LM-head architecture (about a minute on 2 cores)
  tiegraph survey --tasks causal-lm,seq2seq-lm --jobs 4
  tiegraph survey --only llama,t5,gemma3 --json out.json
  tiegraph survey --limit 20 --no-progress
  tiegraph survey --markdown docs/survey.md --json docs/survey.json   the survey in tiegraph's docs
  tiegraph survey --compare docs/survey.json        what changed since the committed survey
"""

DEMO_EXAMPLES = """\
examples:
  tiegraph demo
  tiegraph demo --out pictures
"""


class _UsageExit(Exception):
    """argparse found bad usage: one line, exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageExit(f"{self.prog}: error: {message} (see {self.prog} --help)")


def _parser() -> argparse.ArgumentParser:
    verbose = "show library warnings and tracebacks"
    # -v works before or after the command: the subcommand's copy has no default, so it cannot overwrite
    # a top-level -v with False.
    common = _Parser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=verbose)

    parser = _Parser(
        prog="tiegraph",
        description="Find real weight tying (shared memory) in PyTorch and transformers models.",
        epilog=MAIN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help=verbose)
    parser.add_argument("--version", action="version", version=f"tiegraph {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = _command(
        sub,
        "inspect",
        "report the ties of one model type, checkpoint directory or factory",
        "Build a model on the meta device and report its ties, declarations and audit findings.",
        INSPECT_EXAMPLES,
        common,
    )
    p.add_argument(
        "spec", metavar="SPEC", help="model type, checkpoint directory, or package.module:callable"
    )
    build = p.add_argument_group("building")
    build.add_argument(
        "--class", dest="cls", metavar="NAME", help="transformers class to build (LlamaForCausalLM)"
    )
    build.add_argument("--task", choices=list(TASKS), help="pick the head by task (default: the natural one)")
    build.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field; typed (true, 3, 0.5, null, text); nested keys like text_config.x=1",
    )
    build.add_argument("--trust-remote-code", action="store_true", help="let a checkpoint's own code run")
    build.add_argument("--allow-code", action="store_true", help="allow package.module:callable SPECs")
    build.add_argument("--meta", action="store_true", help="call a factory under torch.device('meta')")
    build.add_argument("--input-embedding", metavar="PATH", help="name the input embedding module yourself")
    wrap = p.add_argument_group("wrapping")
    wrap.add_argument(
        "--peft",
        action="append",
        default=[],
        metavar="KIND:MODULES",
        help="lora:lm_head,q_proj | lora-tied:lm_head (ensure_weight_tying) | modules-to-save:lm_head",
    )
    wrap.add_argument("--compile", action="store_true", help="wrap in torch.compile (nothing is compiled)")
    out = p.add_argument_group("output")
    out.add_argument("--format", choices=FORMATS, help="output format (default: from -o's suffix, else text)")
    out.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    out.add_argument("--check-values", action="store_true", help="compare saved copies of tied tensors")
    out.add_argument(
        "--strict", action="store_true", help="exit 1 when the audit finds an error or a warning not accepted"
    )
    _add_accept(out)
    p.set_defaults(func=_inspect)

    s = _command(
        sub,
        "survey",
        "build every architecture of transformers on meta and tabulate its ties",
        "Build every architecture in transformers' auto mappings from its default config on the "
        "meta device, in parallel worker processes, and tabulate its ties, declarations and findings.",
        SURVEY_EXAMPLES,
        common,
    )
    s.add_argument(
        "--tasks",
        default=None,
        metavar="TASK[,TASK...]",
        help=f"tasks to survey (default: all but base): {', '.join(TASKS)}",
    )
    s.add_argument("--only", default=None, metavar="TYPE[,TYPE...]", help="only these model types")
    s.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N architectures")
    s.add_argument(
        "--jobs", "-j", type=int, default=None, metavar="N", help="worker processes (default: cores)"
    )
    s.add_argument(
        "--time-limit", type=float, default=60.0, metavar="S", help="seconds per model (default 60)"
    )
    s.add_argument("--json", metavar="FILE", help="write every row as JSON")
    s.add_argument("--markdown", metavar="FILE", help="write the table as a markdown document")
    s.add_argument("--compare", metavar="OLD.json", help="show what changed since a survey saved with --json")
    s.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    s.set_defaults(func=_survey)

    _add_diff(sub, common)

    d = _command(
        sub,
        "demo",
        "a tour of tiny models, wrapped and not, with pictures",
        "Build a few tiny models (tied Llama, PEFT LoRA, modules_to_save, torch.compile, T5, a "
        "declaration that lies), print a short report for each and write their pictures to a folder.",
        DEMO_EXAMPLES,
        common,
    )
    d.add_argument("--out", metavar="DIR", help="folder for the pictures (default: a new temporary folder)")
    d.set_defaults(func=_demo)
    return parser


def _command(
    sub: Any, name: str, help: str, description: str, epilog: str, common: argparse.ArgumentParser
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        parents=[common],
        help=help,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``tiegraph`` command and return its exit code.

    Parameters
    ----------
    argv
        Arguments without the program name (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        0 success; 1 with ``--strict`` when the audit found an error or a warning not accepted (``diff``:
        when the ties changed); 2 bad usage or input; 3 internal error.

    Examples
    --------
    >>> main(["--version"])  # doctest: +ELLIPSIS
    tiegraph 0...
    0
    """
    parser = _parser()
    try:
        args, unknown = parser.parse_known_args(argv)
        if unknown:  # blamed on the command they came with, whose --help lists what it takes
            _command_parser(parser, args.command).error(f"unrecognized arguments: {' '.join(unknown)}")
    except _UsageExit as exc:
        print(exc, file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help, --version
        return exc.code if isinstance(exc.code, int) else 0
    if args.command is None:
        print(
            "tiegraph: error: give a command: inspect, diff, survey or demo (see tiegraph --help)",
            file=sys.stderr,
        )
        return 2
    from ._quiet import quiet_libraries

    quiet_libraries(args.verbose)
    try:
        return int(args.func(args))
    except (UsageError, TiegraphError) as exc:
        print(f"tiegraph {args.command}: error: {_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tiegraph: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:
        if args.verbose:
            traceback.print_exc()
            print(f"tiegraph {args.command}: internal error: {type(exc).__name__}", file=sys.stderr)
        else:
            print(
                f"tiegraph {args.command}: internal error: {type(exc).__name__}: {_line(exc)} "
                "(rerun with -v for the traceback)",
                file=sys.stderr,
            )
        return 3


def _command_parser(parser: argparse.ArgumentParser, command: str | None) -> argparse.ArgumentParser:
    """The parser of ``command`` (``tiegraph inspect``), or ``parser`` itself when there is none."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            found: argparse.ArgumentParser = action.choices[command]
            return found
    return parser


def _line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


# ---------------------------------------------------------------------------------------------- inspect
def _output_format(fmt: str | None, output: str | None) -> str:
    if output:
        by_suffix = SUFFIXES.get(Path(output).suffix.lower())
        if fmt is None and by_suffix is None:
            raise UsageError(f"cannot tell the format of {output} from its suffix; pass --format")
        fmt = fmt or by_suffix
    fmt = fmt or "text"
    if fmt in ("png", "pdf") and not output:
        raise UsageError(f"--format {fmt} is binary: give -o FILE.{fmt}")
    return fmt


def _inspect(args: argparse.Namespace) -> int:
    from . import _quiet, _spec, _summary, _wrap, checkpoint

    fmt = _output_format(args.format, args.output)
    if args.output:
        _writable(Path(args.output))
    sets = _spec.parse_sets(args.sets)
    peft = _wrap.parse_peft(args.peft)
    if args.check_values and not Path(args.spec).expanduser().is_dir():
        if _spec._looks_like_path(args.spec):
            raise UsageError(f"no such directory: {args.spec}")
        raise UsageError(f"--check-values needs a checkpoint directory as SPEC, not {args.spec!r}")
    built, model, wrappers, tg = _build(args.spec, args, sets, peft, compile=args.compile)
    checkpoint_lines: list[str] = []
    if built.checkpoint is not None:  # its problems are recorded as findings of tg
        checkpoint_lines = checkpoint.check_checkpoint(
            tg, built.model, built.checkpoint, check_values=args.check_values
        )
    acceptances = _acceptances(args)
    summary = _summary.summarise(tg, accept=acceptances)
    problem = any(f["severity"] in ("error", "warning") and not f["accepted"] for f in summary["findings"])

    if fmt != "text":
        for note in built.notes:
            print(f"tiegraph inspect: note: {note}", file=sys.stderr)
    if fmt == "text":
        text = _text_report(tg, built, wrappers, acceptances)
        text += "".join(f"\n{line}" for line in checkpoint_lines)
        _emit(text + "\n", args.output)
    elif fmt == "json":
        data = {
            "tiegraph": __version__,
            "spec": built.spec,
            "kind": built.kind,
            "class": built.cls,
            "source": built.source,
            "overrides": built.overrides,
            "notes": built.notes,
            "wrappers": wrappers,
            "parameters": _summary.count_parameters(model),
            **summary,
            "checkpoint": _checkpoint_json(built, checkpoint_lines),
            "graph": tg.to_json(),
        }
        _emit(json.dumps(data, indent=1, default=str) + "\n", args.output)
    elif fmt == "dot":
        _emit(tg.to_dot(), args.output)
    elif fmt == "svg" and not args.output:
        with _quiet._stderr_silenced():
            _emit(tg.to_svg(), None)
    else:
        with _quiet._stderr_silenced():
            _write_picture(tg, args.output, fmt)
    if args.output:
        print(f"wrote {args.output}", file=sys.stderr)
    if args.strict and problem:
        print(f"tiegraph inspect: --strict: {_why_strict(summary)}", file=sys.stderr)
        return 1
    return 0


def _why_strict(summary: dict[str, Any]) -> str:
    """One line: what made a --strict run fail (errors and warnings not accepted)."""
    failing = [
        f["kind"]
        for f in summary.get("findings") or []
        if f["severity"] in ("error", "warning") and not f["accepted"]
    ]
    return f"the audit found {plural(len(failing), 'error or warning', 'errors or warnings')} " + (
        f"not accepted ({', '.join(dict.fromkeys(failing))})"
    )


def _add_accept(group: Any) -> None:
    group.add_argument(
        "--accept",
        action="append",
        default=[],
        metavar="KIND[:PATH]",
        help="accept a known finding (it still shows, marked accepted); [tool.tiegraph] accept in "
        "pyproject.toml adds more",
    )


def _acceptances(args: argparse.Namespace) -> list[Acceptance]:
    """The nearest pyproject.toml's [tool.tiegraph] acceptances, then --accept's."""
    from .acceptance import parse, read_pyproject

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


def _checkpoint_json(built: Built, lines: list[str]) -> dict[str, Any] | None:
    files = built.checkpoint
    if files is None:
        return None
    return {
        "directory": str(files.directory),
        "files": files.files,
        "index": files.index,
        "skipped": files.skipped,
        "missing_shards": files.missing_shards,
        "tensors": len(files.keys),
        "report": lines,
    }


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
    from ._summary import count_parameters, human_count

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
    from .errors import NoInputEmbeddingError

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


def _survey(args: argparse.Namespace) -> int:
    import os

    from . import _spec, _survey, _survey_report

    tasks = _split(args.tasks) or list(_survey.DEFAULT_TASKS)
    bad = [t for t in tasks if t not in TASKS]
    if bad:
        raise UsageError(f"unknown task {bad[0]!r}; choose from {', '.join(TASKS)}")
    only = _split(args.only)
    if only:
        known = _spec.model_types()
        unknown = [t for t in only if t not in known]
        if unknown:
            raise UsageError(f"unknown model type {unknown[0]!r}" + did_you_mean(unknown[0], known, n=5))
    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit must be at least 1")
    if args.jobs is not None and args.jobs < 1:
        raise UsageError(f"--jobs must be at least 1, not {args.jobs}")
    if not args.time_limit > 0:
        raise UsageError(f"--time-limit must be a positive number of seconds, not {args.time_limit:g}")
    for target in (args.json, args.markdown):
        if target:
            _writable(Path(target))
    old = _read_survey(args.compare) if args.compare else None
    items = _survey.survey_items(tasks, only, args.limit)
    if not items:
        raise UsageError(f"no architecture of {', '.join(only)} has a head for {', '.join(tasks)}")
    jobs = max(1, min(args.jobs or os.cpu_count() or 1, len(items)))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    start = time.perf_counter()
    rows = _survey.run_survey(items, jobs=jobs, time_limit=args.time_limit, progress=not args.no_progress)
    timing = {"seconds": round(time.perf_counter() - start, 2), "jobs": jobs, "load": load}
    print(_survey_report.format_table(rows))
    print()
    print(_survey_report.format_summary(rows, timing))
    meta = _versions() | {"tasks": tasks}
    data = {**meta, **timing, "results": rows}
    if old is not None:
        print()
        print(_survey_report.format_compare(_survey_report.compare(old, data), args.compare))
    if args.json:
        _write(Path(args.json), json.dumps(data, indent=1, default=str) + "\n")
        print(f"wrote {args.json}", file=sys.stderr)
    if args.markdown:
        _write(Path(args.markdown), _survey_report.format_markdown(rows, timing, meta))
        print(f"wrote {args.markdown}", file=sys.stderr)
    return 0


def _read_survey(path: str) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read --compare {path}: {_line(exc)}") from None
    if not isinstance(data, dict) or not isinstance(data.get("results"), list):
        raise UsageError(f"--compare {path} is not a survey written by --json (no results list)")
    return data


def _versions() -> dict[str, Any]:
    import torch
    import transformers

    return {"tiegraph": __version__, "transformers": transformers.__version__, "torch": torch.__version__}


# ---------------------------------------------------------------------------------------------- demo
def _demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo

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


# ---------------------------------------------------------------------------------------------- diff
DIFF_EXAMPLES = """\
A and B are SPECs as inspect takes them (model type, checkpoint directory, package.module:callable) or
JSON files written by inspect --format json. The wrapping flags (--peft, --compile) and --set apply to B.

examples:
  tiegraph diff gemma gemma --peft lora:lm_head           what LoRA on lm_head does to the ties
  tiegraph diff llama llama --set tie_word_embeddings=true
  tiegraph diff before.json ./saved-checkpoint            a model written with inspect -o, and its save

exit codes: 0 done (whether or not the ties changed), 1 with --strict when the ties changed, 2 bad usage
or input, 3 internal error.
"""


def _add_diff(sub: Any, common: argparse.ArgumentParser) -> None:
    p = _command(
        sub,
        "diff",
        "what changed about the ties from A to B (e.g. what a PEFT wrapper does)",
        "Build (or read) two models and say which ties B broke or made, how the input embedding's tied "
        "targets, the findings and the dtype/placement/quantization of tied slots changed.",
        DIFF_EXAMPLES,
        common,
    )
    p.add_argument("a", metavar="A", help="SPEC or inspect JSON file: before")
    p.add_argument("b", metavar="B", help="SPEC or inspect JSON file: after (wrapping flags apply here)")
    build = p.add_argument_group("building")
    build.add_argument("--class", dest="cls", metavar="NAME", help="transformers class to build")
    build.add_argument("--task", choices=list(TASKS), help="pick the head by task (default: the natural one)")
    build.add_argument(
        "--set", dest="sets", action="append", default=[], metavar="KEY=VALUE", help="override B's config"
    )
    build.add_argument("--trust-remote-code", action="store_true", help="let a checkpoint's own code run")
    build.add_argument("--allow-code", action="store_true", help="allow package.module:callable SPECs")
    build.add_argument("--meta", action="store_true", help="call a factory under torch.device('meta')")
    build.add_argument("--input-embedding", metavar="PATH", help="name the input embedding module yourself")
    wrap = p.add_argument_group("wrapping B")
    wrap.add_argument("--peft", action="append", default=[], metavar="KIND:MODULES", help="as for inspect")
    wrap.add_argument("--compile", action="store_true", help="wrap B in torch.compile")
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format")
    p.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 when the ties changed from A to B (accepted findings aside)",
    )
    _add_accept(p)
    p.set_defaults(func=_diff)


def _diff_side(spec: str, args: argparse.Namespace, *, after: bool) -> tuple[TieGraph, str]:
    """The graph of one side, and one line saying what it is."""
    from . import _spec, _wrap

    sets = _spec.parse_sets(args.sets) if after else []
    peft = _wrap.parse_peft(args.peft) if after else None
    path = Path(spec).expanduser()
    if path.is_file():
        if after and (sets or args.compile or any((peft or {}).values())):
            raise UsageError(f"{spec} is a JSON graph: --set, --peft and --compile cannot rebuild it")
        return _read_graph(path), f"{spec} (graph read from JSON)"
    built, _, wrappers, tg = _build(spec, args, sets, peft, compile=after and args.compile)
    how = f"; wrapped: {'; '.join(wrappers)}" if wrappers else ""
    return tg, f"{built.spec}: {built.cls} ({built.source}){how}"


def _build(
    spec: str,
    args: argparse.Namespace,
    sets: Sequence[tuple[list[str], Any]],
    peft: dict[str, list[str]] | None,
    *,
    compile: bool,
) -> tuple[Built, nn.Module, list[str], TieGraph]:
    """Build ``spec`` as the build options in ``args`` say, wrap it, and build the wrapped model's graph."""
    from . import _spec, _wrap
    from .build import build_graph

    built = _spec.build_spec(
        spec,
        cls_name=args.cls,
        task=args.task,
        sets=sets,
        trust_remote_code=args.trust_remote_code,
        allow_code=args.allow_code,
        meta=args.meta,
    )
    model, wrappers = _wrap.wrap(built.model, peft, compile)
    return built, model, wrappers, build_graph(model, input_embedding=args.input_embedding)


def _read_graph(path: Path) -> TieGraph:
    """A graph from ``inspect --format json`` output (its ``graph`` entry) or ``TieGraph.to_json()`` data."""
    from .graph import TieGraph

    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UsageError(f"{path} is not a JSON graph: {_line(exc)}") from None
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
    from .acceptance import accept

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


def _diff(args: argparse.Namespace) -> int:
    import tiegraph

    before, what_a = _diff_side(args.a, args, after=False)
    after, what_b = _diff_side(args.b, args, after=True)
    d = tiegraph.diff(before, after)
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
