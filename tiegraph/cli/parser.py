"""The ``tiegraph`` command's argument parser: its commands, their options and the examples in ``--help``."""

from __future__ import annotations

import argparse
from typing import Any, NoReturn

from .. import __version__
from . import commands
from .specs import TASKS

__all__ = ["FORMATS", "UsageExit", "build_parser", "command_parser"]


FORMATS = ("text", "json", "dot", "svg", "png", "pdf")


MAIN_EXAMPLES = """\
examples:
  tiegraph inspect llama --set tie_word_embeddings=true   which modules share memory with the embedding
  tiegraph inspect gemma3 --peft lora:lm_head             what LoRA on lm_head does to the tie
  tiegraph inspect ./my-checkpoint --check-values         is this checkpoint's head tied?
  tiegraph inspect ./my-checkpoint --engines --strict     does every engine load the head I trained?
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


class UsageExit(Exception):
    """argparse found bad usage: one line, exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageExit(f"{self.prog}: error: {message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    """The ``tiegraph`` parser: one subcommand per command, each with its options and examples."""
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

    _add_inspect(sub, common)
    _add_survey(sub, common)
    _add_diff(sub, common)
    _add_demo(sub, common)
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


def command_parser(parser: argparse.ArgumentParser, command: str | None) -> argparse.ArgumentParser:
    """The parser of ``command`` (``tiegraph inspect``), or ``parser`` itself when there is none."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            found: argparse.ArgumentParser = action.choices[command]
            return found
    return parser


def _add_accept(group: Any) -> None:
    group.add_argument(
        "--accept",
        action="append",
        default=[],
        metavar="KIND[:PATH]",
        help="accept a known finding (it still shows, marked accepted); [tool.tiegraph] accept in "
        "pyproject.toml adds more",
    )


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


def _add_building(p: argparse.ArgumentParser, *, cls_help: str, set_help: str) -> None:
    """The building options ``inspect`` and ``diff`` share (one set, two helps for --class and --set)."""
    build = p.add_argument_group("building")
    build.add_argument("--class", dest="cls", metavar="NAME", help=cls_help)
    build.add_argument("--task", choices=list(TASKS), help="pick the head by task (default: the natural one)")
    build.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE", help=set_help)
    build.add_argument("--trust-remote-code", action="store_true", help="let a checkpoint's own code run")
    build.add_argument("--allow-code", action="store_true", help="allow package.module:callable SPECs")
    build.add_argument("--meta", action="store_true", help="call a factory under torch.device('meta')")
    build.add_argument("--input-embedding", metavar="PATH", help="name the input embedding module yourself")


def _add_inspect(sub: Any, common: argparse.ArgumentParser) -> None:
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
    _add_building(
        p,
        cls_help="transformers class to build (LlamaForCausalLM)",
        set_help="override a config field; typed (true, 3, 0.5, null, text); nested keys like "
        "text_config.x=1",
    )
    wrap = p.add_argument_group("wrapping")
    wrap.add_argument(
        "--peft",
        action="append",
        default=[],
        metavar="KIND:MODULES",
        help="lora:lm_head,q_proj | lora-tied:lm_head (ensure_weight_tying) | modules-to-save:lm_head",
    )
    wrap.add_argument("--compile", action="store_true", help="wrap in torch.compile (nothing is compiled)")
    wrap.add_argument(
        "--shard-plan",
        metavar="PLAN",
        help="check an FSDP2 plan before sharding: calls split by ';', modules of one call by ',', 'root', "
        "'each:LlamaDecoderLayer', or 'policy:LlamaDecoderLayer' (accelerate's layer-class wrap policy)",
    )
    out = p.add_argument_group("output")
    out.add_argument("--format", choices=FORMATS, help="output format (default: from -o's suffix, else text)")
    out.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    out.add_argument("--check-values", action="store_true", help="compare saved copies of tied tensors")
    out.add_argument(
        "--engines",
        action="store_true",
        help="say what each engine (transformers, vLLM, llama.cpp, MLX, ONNX, SGLang) puts in the head "
        "when it loads this checkpoint directory, or a hub id (org/name) read from the local hub cache",
    )
    out.add_argument(
        "--strict", action="store_true", help="exit 1 when the audit finds an error or a warning not accepted"
    )
    _add_accept(out)
    p.set_defaults(func=commands.inspect_command)


def _add_survey(sub: Any, common: argparse.ArgumentParser) -> None:
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
    s.set_defaults(func=commands.survey_command)


def _add_demo(sub: Any, common: argparse.ArgumentParser) -> None:
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
    d.set_defaults(func=commands.demo_command)


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
    _add_building(p, cls_help="transformers class to build", set_help="override B's config")
    wrap = p.add_argument_group("wrapping B")
    wrap.add_argument("--peft", action="append", default=[], metavar="KIND:MODULES", help="as for inspect")
    wrap.add_argument("--compile", action="store_true", help="wrap B in torch.compile")
    p.add_argument(
        "--check-values",
        action="store_true",
        help="compare a checkpoint's saved head and embedding: from_pretrained ties them only when equal",
    )
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format")
    p.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 when the ties changed from A to B (accepted findings aside)",
    )
    _add_accept(p)
    p.set_defaults(func=commands.diff_command)
