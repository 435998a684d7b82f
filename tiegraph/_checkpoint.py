"""Checkpoint directories: safetensors headers read, and the saved tensors laid beside a graph's ties.

Checkpoint directories are read with safetensors (headers only, unless values are asked for; never
unpickled), and their tensors are laid beside the model's tie groups. An unreadable file raises
:class:`~tiegraph.errors.CheckpointError` with a one-line message naming the problem. The command line
builds a directory's model from its ``config.json`` (:mod:`tiegraph.cli.specs`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._finding import Finding, finding, kinds
from ._graph import amend
from ._text import one_line, plural
from .engines._facts import PICKLE_SUFFIXES
from .errors import CheckpointError

if TYPE_CHECKING:
    from torch import nn

    from ._declared import DeclaredTie
    from ._graph import TieGraph
    from ._view import GraphView

__all__ = ["KINDS", "CheckpointFiles", "check_checkpoint", "findings", "read_checkpoint"]


@dataclass
class CheckpointFiles:
    """What a checkpoint directory holds, read from safetensors headers only."""

    directory: Path
    keys: dict[str, str]  # tensor name -> file name
    files: list[str]  # safetensors files read
    skipped: list[str]  # pickle files never opened
    index: str | None = None
    missing_shards: list[str] = field(default_factory=list)
    metadata: dict[str, dict[str, str]] = field(default_factory=dict)
    shapes: dict[str, list[int]] = field(default_factory=dict)  # tensor name -> shape (from the header)


def read_checkpoint(directory: Path) -> CheckpointFiles:
    """Read the tensor names of every safetensors file in a directory (headers only, nothing unpickled).

    A ``*.safetensors.index.json`` names the shards; otherwise every ``*.safetensors`` file is read.

    Raises
    ------
    CheckpointError
        If a safetensors header cannot be read, or the index is not valid JSON.
    """
    from safetensors import safe_open

    names = sorted(p.name for p in directory.iterdir() if p.is_file())
    skipped = [n for n in names if n.endswith(PICKLE_SUFFIXES)]
    index_name = next((n for n in names if n.endswith(".safetensors.index.json")), None)
    shards = sorted(n for n in names if n.endswith(".safetensors"))
    missing: list[str] = []
    if index_name:
        try:
            weight_map = json.loads((directory / index_name).read_text())["weight_map"]
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(
                f"unreadable checkpoint index {directory / index_name}: {one_line(exc)}"
            ) from None
        wanted = sorted(set(weight_map.values()))
        missing = [n for n in wanted if n not in shards]
        shards = [n for n in wanted if n in shards]
    keys: dict[str, str] = {}
    metadata: dict[str, dict[str, str]] = {}
    shapes: dict[str, list[int]] = {}
    for name in shards:
        try:
            with safe_open(str(directory / name), framework="pt") as f:
                for key in f.keys():  # noqa: SIM118 -- safe_open is not a mapping
                    keys[key] = name
                    shapes[key] = list(f.get_slice(key).get_shape())
                metadata[name] = dict(f.metadata() or {})
        except Exception as exc:
            raise CheckpointError(
                f"unreadable safetensors header in {directory / name}: {one_line(exc)}"
            ) from None
    return CheckpointFiles(directory, keys, shards, skipped, index_name, missing, metadata, shapes)


def _read_tensor(files: CheckpointFiles, key: str) -> Any:
    from safetensors import safe_open

    with safe_open(str(files.directory / files.keys[key]), framework="pt") as f:
        return f.get_tensor(key)


def _file_key(name: str, keys: dict[str, str] | dict[str, Any], prefix: str) -> str | None:
    """The checkpoint key of a canonical slot name (also tried with/without the base model prefix)."""
    if name in keys:
        return name
    if prefix:
        if name.startswith(prefix + ".") and name[len(prefix) + 1 :] in keys:
            return name[len(prefix) + 1 :]
        if f"{prefix}.{name}" in keys:
            return f"{prefix}.{name}"
    return None


#: Checkpoint finding kinds, in report order, with the sentence each one says (``str.format`` fields).
KINDS: dict[str, str] = kinds(
    {
        "checkpoint-shape-mismatch": (
            "error",
            "{key} is saved in {directory} with shape {saved} but the model's {slot} has shape {expected}: "
            "from_pretrained fails with a size mismatch (ignore_mismatched_sizes=True would initialise "
            "{slot} randomly instead); make the config match the checkpoint (vocab_size, hidden_size, ...).",
        ),
        "checkpoint-tied-copies-differ": (
            "error",
            "{directory} saves {saved}, which the model ties into one tensor, as different values: "
            "from_pretrained keeps them apart (untied, with a warning, while the config still says tied); "
            "re-save from the model you trained, or set tie_word_embeddings=False if they are meant to "
            "differ.",
        ),
        "checkpoint-tied-target-missing": (
            "error",
            "{missing} is not saved in {directory} and {why}, so from_pretrained initialises it randomly; "
            "{fix}.",
        ),
        "checkpoint-not-checked": (
            "warning",
            "{directory} holds {what}, which {why}: which tensors it saves, their shapes and the values "
            "of tied copies were not checked; {fix}.",
        ),
        "checkpoint-declared-source-missing": (
            "error",
            "{source} is not saved in {directory}; {target}, declared tied to it, is saved, but the model "
            "does not tie them ({why}), so from_pretrained initialises {source} randomly; set "
            "tie_word_embeddings=True to load {target}'s weight into both, or save {source}.",
        ),
    }
)

#: Where a checkpoint's findings are recorded in a graph (plain JSON data, so JSON round trips keep them).
EXTRA_KEY = "checkpoint"


def _saved_shape(files: CheckpointFiles, key: str) -> tuple[int, ...] | None:
    shape = files.shapes.get(key)
    return None if shape is None else tuple(shape)


def check_checkpoint(
    tg: TieGraph, model: nn.Module, files: CheckpointFiles, *, check_values: bool
) -> list[str]:
    """Lay the checkpoint's tensors beside the model's ties; record the problems as findings of ``tg``.

    Headers alone (names and shapes) give shape mismatches and tensors that ``from_pretrained`` would
    initialise randomly; ``check_values`` also reads the saved copies of a tie group and compares them.
    The findings (:data:`KINDS`) are recorded in the graph, so ``tg.audit()``, its report and its JSON list
    them with the model's own.

    Returns
    -------
    list of str
        Notes on what the files hold, for the report (findings are not repeated there).
    """
    check = _Check(tg, model, files, check_values)
    check.unread_files()
    if files.files:
        check.shapes()
        for group in tg.tie_groups():
            check.tie_group(group)
        for tie in tg.declared_ties():
            if tie.status in ("not-tied", "gated-off"):
                check.declared(tie)
        check.leftovers()
    else:
        check.lines.append("  no safetensors files: nothing to compare")
    _record(tg, check.directory, check.problems)
    return check.lines


class _Check:
    """One checkpoint laid beside one graph: the report's notes and the findings, as they are found."""

    def __init__(self, tg: TieGraph, model: nn.Module, files: CheckpointFiles, check_values: bool) -> None:
        self.tg, self.files, self.check_values = tg, files, check_values
        self.prefix = getattr(model, "base_model_prefix", "") or ""
        self.directory = str(files.directory)
        self.lines = [
            f"checkpoint: {files.directory} ({len(files.keys)} tensors in {len(files.files)} safetensors file"
            f"{'' if len(files.files) == 1 else 's'}{', index ' + files.index if files.index else ''})"
        ]
        self.problems: list[dict[str, Any]] = []
        self.slots: dict[str, tuple[str, tuple[int, ...]]] = {}
        self.matched: set[str] = set()
        self.mismatched: set[str] = (
            set()
        )  # keys saved with another shape: loading fails, values do not matter
        self.grouped: set[str] = set()

    def problem(self, kind: str, paths: list[str], **fields: Any) -> None:
        self.problems.append(
            {"kind": kind, "paths": sorted(set(paths)), "fields": {"directory": self.directory, **fields}}
        )

    def key(self, name: str) -> str | None:
        return _file_key(name, self.files.keys, self.prefix)

    def unread_files(self) -> None:
        """Pickle files never opened, and shards the index names that are absent."""
        files = self.files
        if files.skipped:
            self.lines.append(f"  skipped (pickle, never unpickled): {', '.join(files.skipped)}")
            if not files.files:
                self.problem(
                    "checkpoint-not-checked",
                    files.skipped,
                    what=f"only pickle files ({', '.join(files.skipped)})",
                    why="tiegraph never unpickles (unpickling runs code)",
                    fix=(
                        "if you trust them, load the model yourself and save_pretrained() it (safetensors), "
                        "then inspect that folder"
                    ),
                )
        if files.missing_shards:
            self.lines.append(f"  shards named by the index but absent: {', '.join(files.missing_shards)}")
            self.problem(
                "checkpoint-not-checked",
                files.missing_shards,
                what=f"an index naming shards that are absent ({', '.join(files.missing_shards)})",
                why="cannot be read, and from_pretrained fails on them",
                fix="copy the missing shards into the folder",
            )

    def shapes(self) -> None:
        """Every parameter saved with another shape than the model's."""
        self.slots = _parameters(self.tg)
        for name, (kind, shape) in self.slots.items():
            key = self.key(name)
            if key is None:
                continue
            self.matched.add(key)
            saved_shape = _saved_shape(self.files, key)
            if saved_shape is not None and kind == "parameter" and saved_shape != shape:
                self.mismatched.add(key)
                self.problem(
                    "checkpoint-shape-mismatch", [name], key=key, slot=name, saved=saved_shape, expected=shape
                )

    def tie_group(self, group: list[str]) -> None:
        """How a tie group is saved: not at all, once, or in copies (compared when values are asked for)."""
        self.grouped.update(group)
        present = [(n, k) for n in group if (k := self.key(n))]
        absent = [n for n in group if not self.key(n)]
        head = f"  tie group {', '.join(group)}:"
        saved = ", ".join(k for _, k in present)
        if not present:
            self.problem(
                "checkpoint-tied-target-missing",
                group,
                missing=f"the tie group {', '.join(group)}",
                why="none of its slots is",
                fix="save one of them",
            )
            self.lines.append(f"{head} none saved")
        elif len(present) == 1:
            self.lines.append(f"{head} saved once as {present[0][1]}; absent {', '.join(absent)} (normal)")
        elif self.mismatched & {k for _, k in present}:
            self.lines.append(f"{head} {len(present)} copies saved, not all of the model's shape")
        elif not self.check_values:
            self.lines.append(f"{head} {len(present)} copies saved ({saved}); --check-values compares them")
        elif _all_equal(self.files, [k for _, k in present]):
            self.lines.append(f"{head} {len(present)} equal copies saved ({saved}); loads tied")
        else:
            self.problem("checkpoint-tied-copies-differ", group, saved=saved)
            self.lines.append(f"{head} {len(present)} saved copies differ ({saved})")

    def declared(self, tie: DeclaredTie) -> None:
        """A declared pair the model does not tie: an end missing from the files, or both ends compared."""
        target, source = self.key(tie.target), self.key(tie.source)
        why = (
            f"{_flag_name(tie.declared_by)} is False"
            if tie.status == "gated-off"
            else "they do not share memory in the model the config builds"
        )
        if target is None:
            self.problem(
                "checkpoint-tied-target-missing",
                [tie.target, tie.source],
                missing=tie.target,
                why=f"the model does not tie it to {tie.source} ({why})",
                fix=(
                    f"set tie_word_embeddings=True if it is meant to be {tie.source}'s weight, or save "
                    f"{tie.target} too"
                ),
            )
        elif source is None:
            self.problem(
                "checkpoint-declared-source-missing",
                [tie.target, tie.source],
                source=tie.source,
                target=tie.target,
                why=why,
            )
        elif self.check_values and not self.mismatched & {target, source}:
            same = _all_equal(self.files, [target, source])
            self.lines.append(
                f"  declared {tie.target} <- {tie.source} ({tie.status}): both saved, "
                + ("equal values (tying them loses nothing)" if same else "different values")
            )

    def leftovers(self) -> None:
        """Parameters absent from the files (and not reported already), and saved tensors matching no slot."""
        missing = [
            n
            for n, (kind, _) in self.slots.items()
            if kind == "parameter" and n not in self.grouped and not self.key(n)
        ]
        reported = {p for item in self.problems for p in item["paths"]}
        missing = [n for n in missing if n not in reported]
        if missing:
            shown = ", ".join(missing[:5]) + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else "")
            count = plural(len(missing), "parameter")
            self.lines.append(f"  {count} absent from the files (initialised randomly): {shown}")
        unexpected = sorted(set(self.files.keys) - self.matched)
        if unexpected:
            more = f" (+{len(unexpected) - 5} more)" if len(unexpected) > 5 else ""
            shown = ", ".join(unexpected[:5]) + more
            self.lines.append(
                f"  {len(unexpected)} saved tensors match no slot of the model (ignored): {shown}"
            )


def _flag_name(declared_by: str) -> str:
    return f"{declared_by}.config.tie_word_embeddings" if declared_by else "config.tie_word_embeddings"


def _all_equal(files: CheckpointFiles, keys: list[str]) -> bool:
    """Whether every saved tensor named by ``keys`` has the first one's shape and values (reads them)."""
    tensors = [_read_tensor(files, k) for k in keys]
    first = tensors[0]
    return all(t.shape == first.shape and bool((t == first).all()) for t in tensors[1:])


def _record(tg: TieGraph, directory: str, problems: list[dict[str, Any]]) -> None:
    """Keep the checkpoint's findings in the graph (its index, and its networkx graph if already made)."""
    amend(tg, checkpoint={"directory": directory, "findings": problems})


def findings(view: GraphView) -> list[Finding]:
    """The checkpoint findings :func:`check_checkpoint` recorded in the graph (none for a model alone)."""
    data = view.checkpoint or {}
    return [
        finding(KINDS, item["kind"], item["paths"], **item["fields"]) for item in data.get("findings", [])
    ]


def _parameters(tg: TieGraph) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Canonical slot name -> (tensor kind, shape), first occurrence only."""
    seen: dict[str, tuple[str, tuple[int, ...]]] = {}
    for _, data in tg.graph.nodes(data=True):
        if data["kind"] == "slot":
            seen.setdefault(data["canonical"], (data["tensor"], tuple(data["shape"])))
    return seen
