"""Checkpoint directories for the command line: a model built from ``config.json``, safetensors headers.

Checkpoint directories are read with safetensors (headers only, unless values are asked for; never
unpickled), and their tensors are laid beside the model's tie groups. Bad input raises
:class:`~tiegraph._spec.UsageError` with a one-line message naming the problem.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._spec import TASKS, Built, UsageError, _apply_sets, _build_meta, _one_line, _pick_class
from ._text import plural

if TYPE_CHECKING:
    from torch import nn

    from .graph import TieGraph

__all__ = ["CheckpointFiles", "build_checkpoint", "check_checkpoint", "read_checkpoint"]

#: Files never opened: they are pickles, and unpickling runs code.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


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


def read_checkpoint(directory: Path) -> CheckpointFiles:
    """Read the tensor names of every safetensors file in a directory (headers only, nothing unpickled).

    A ``*.safetensors.index.json`` names the shards; otherwise every ``*.safetensors`` file is read.

    Raises
    ------
    UsageError
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
            raise UsageError(
                f"unreadable checkpoint index {directory / index_name}: {_one_line(exc)}"
            ) from None
        wanted = sorted(set(weight_map.values()))
        missing = [n for n in wanted if n not in shards]
        shards = [n for n in wanted if n in shards]
    keys: dict[str, str] = {}
    metadata: dict[str, dict[str, str]] = {}
    for name in shards:
        try:
            with safe_open(str(directory / name), framework="pt") as f:
                for key in f.keys():  # noqa: SIM118 -- safe_open is not a mapping
                    keys[key] = name
                metadata[name] = dict(f.metadata() or {})
        except Exception as exc:
            raise UsageError(
                f"unreadable safetensors header in {directory / name}: {_one_line(exc)}"
            ) from None
    return CheckpointFiles(directory, keys, shards, skipped, index_name, missing, metadata)


def _read_tensor(files: CheckpointFiles, key: str) -> Any:
    from safetensors import safe_open

    with safe_open(str(files.directory / files.keys[key]), framework="pt") as f:
        return f.get_tensor(key)


def build_checkpoint(
    directory: Path,
    *,
    cls_name: str | None = None,
    task: str | None = None,
    sets: Sequence[tuple[list[str], Any]] = (),
    trust_remote_code: bool = False,
) -> Built:
    """Build a checkpoint directory's model on meta from its ``config.json``; read its safetensors headers."""
    from transformers import AutoConfig

    if not (directory / "config.json").is_file():
        raise UsageError(f"no config.json in {directory}: give a saved checkpoint directory or a model type")
    try:
        config = AutoConfig.from_pretrained(str(directory), trust_remote_code=trust_remote_code)
    except Exception as exc:
        message = _one_line(exc)
        if "trust_remote_code" in message and not trust_remote_code:
            raise UsageError(
                f"{directory} needs its own code (auto_map in config.json); "
                "rerun with --trust-remote-code if you trust it"
            ) from None
        raise UsageError(f"unreadable config.json in {directory}: {message}") from None
    _apply_sets(config, sets)
    files = read_checkpoint(directory)
    if cls_name or task:
        cls, picked = _pick_class(config.model_type, cls_name, task)
        model = _build_meta(cls, config, auto=TASKS[picked][0] if picked else "")
    else:
        import transformers

        arch = (getattr(config, "architectures", None) or [None])[0]
        cls_obj = getattr(transformers, arch, None) if arch else None
        if isinstance(cls_obj, type):
            model = _build_meta(cls_obj, config)
        elif getattr(config, "auto_map", None) and trust_remote_code:
            auto = next((a for a in config.auto_map if a.startswith("AutoModel")), "AutoModel")
            model = _build_meta(type(None), config, trust_remote_code=True, auto=auto)
        else:
            cls, picked = _pick_class(config.model_type, None, None)
            model = _build_meta(cls, config, auto=TASKS[picked][0])
    return Built(
        model, "checkpoint", str(directory), type(model).__name__, "its config.json", checkpoint=files
    )


def _file_key(name: str, keys: dict[str, str], prefix: str) -> str | None:
    """The checkpoint key of a canonical slot name (also tried with/without the base model prefix)."""
    if name in keys:
        return name
    if prefix:
        if name.startswith(prefix + ".") and name[len(prefix) + 1 :] in keys:
            return name[len(prefix) + 1 :]
        if f"{prefix}.{name}" in keys:
            return f"{prefix}.{name}"
    return None


def check_checkpoint(
    tg: TieGraph, model: nn.Module, files: CheckpointFiles, *, check_values: bool
) -> tuple[list[str], bool]:
    """Lay the checkpoint's tensors beside the tie groups.

    Returns
    -------
    lines, problem
        Report lines, and whether loading would untie a tie the model makes (two saved copies differ).
    """
    prefix = getattr(model, "base_model_prefix", "") or ""
    keys = files.keys
    lines = [
        f"checkpoint: {files.directory} ({len(keys)} tensors in {len(files.files)} safetensors file"
        f"{'' if len(files.files) == 1 else 's'}{', index ' + files.index if files.index else ''})"
    ]
    if files.skipped:
        lines.append(f"  skipped (pickle, never unpickled): {', '.join(files.skipped)}")
    if files.missing_shards:
        lines.append(f"  shards named by the index but absent: {', '.join(files.missing_shards)}")
    if not files.files:
        lines.append("  no safetensors files: nothing to compare")
        return lines, False
    problem = False
    grouped: set[str] = set()
    for group in tg.tie_groups():
        grouped.update(group)
        present = [(n, k) for n in group if (k := _file_key(n, keys, prefix))]
        absent = [n for n in group if not _file_key(n, keys, prefix)]
        head = f"  tie group {', '.join(group)}:"
        if not present:
            lines.append(f"{head} none saved (transformers initialises the whole group randomly)")
        elif len(present) == 1:
            lines.append(f"{head} saved once as {present[0][1]}; absent {', '.join(absent)} (normal)")
        elif not check_values:
            saved = ", ".join(k for _, k in present)
            lines.append(f"{head} {len(present)} copies saved ({saved}); --check-values compares them")
        else:
            tensors = [_read_tensor(files, k) for _, k in present]
            first = tensors[0]
            same = all(t.shape == first.shape and bool((t == first).all()) for t in tensors[1:])
            saved = ", ".join(k for _, k in present)
            if same:
                lines.append(f"{head} {len(present)} equal copies saved ({saved}); loads tied")
            else:
                problem = True
                lines.append(
                    f"{head} {len(present)} saved copies DIFFER ({saved}): transformers will load them "
                    "untied (and keep the config's tie flag)"
                )
    missing = [
        n
        for n, t in _parameters(tg)
        if t == "parameter" and n not in grouped and not _file_key(n, keys, prefix)
    ]
    if missing:
        shown = ", ".join(missing[:5]) + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else "")
        count = plural(len(missing), "parameter")
        lines.append(f"  {count} absent from the files (initialised randomly): {shown}")
    return lines, problem


def _parameters(tg: TieGraph) -> list[tuple[str, str]]:
    """(canonical slot name, tensor kind) for every slot, first occurrence only."""
    seen: dict[str, str] = {}
    for _, data in tg.graph.nodes(data=True):
        if data["kind"] == "slot":
            seen.setdefault(data["canonical"], data["tensor"])
    return list(seen.items())
