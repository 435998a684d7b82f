"""The hand-off (:mod:`tiegraph.engines`) on the command line: `inspect --engines`, checkpoints in `diff`."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._text import plural

if TYPE_CHECKING:
    from torch import nn

    from .._acceptance import Acceptance
    from .._finding import Finding
    from .._graph import TieGraph
    from .specs import Built

__all__ = [
    "as_loaded_side",
    "engine_kinds",
    "engines_section",
    "hub_snapshot",
    "named_as_given",
    "strict_reason",
]


def hub_snapshot(spec: str) -> str | None:
    """The local snapshot folder of a hub id SPEC (from the hub cache: nothing is downloaded).

    None when SPEC is not written as a hub id (``org/name``) or is an existing path.

    Raises
    ------
    UsageError
        One line, when SPEC is a hub id the local hub cache does not hold.
    """
    from ..engines import FolderError
    from ..engines._hub import is_hub_id, snapshot
    from .specs import UsageError

    if not is_hub_id(spec) or Path(spec).expanduser().exists():
        return None
    try:
        return str(snapshot(spec))
    except FolderError as error:
        raise UsageError(str(error)) from None


def named_as_given(built: Built, args: argparse.Namespace) -> Built:
    """``built`` named as the user wrote SPEC: a hub id and its snapshot, not the hub cache's folder.

    The ``checkpoint:`` line still shows the folder the files are read from.
    """
    hub_id = getattr(args, "hub_id", None)
    if hub_id is None:
        return built
    snapshot = Path(built.spec).name  # the hub cache names each snapshot folder by its commit
    where = f"{built.source} in the local hub cache: revision main, snapshot {snapshot[:12]}"
    return dataclasses.replace(built, spec=hub_id, source=where)


def engine_kinds() -> set[str]:
    """The hand-off's finding kinds: ``--engines`` reports and accepts them, the audit does not."""
    from ..engines import KINDS, _lint

    return {*KINDS, *_lint.FOLDER_KINDS}


def engines_section(
    args: argparse.Namespace, acceptances: Sequence[Acceptance]
) -> tuple[list[str], dict[str, Any] | None, list[Finding], list[Acceptance]]:
    """What ``--engines`` adds (report lines, JSON data, failing findings), and the audit's acceptances.

    Acceptances of the hand-off's kinds are used here; the rest are left for the audit.
    """
    kinds = engine_kinds()
    rest = [a for a in acceptances if a.kind not in kinds]
    if not args.engines:
        return [], None, [], rest
    from ..engines._report import engines_report

    mine = [a for a in acceptances if a.kind in kinds]
    # a hub id is named as the user wrote it (folder_facts finds it in the hub cache again)
    folder = getattr(args, "hub_id", None) or str(Path(args.spec).expanduser())
    lines, data, fails = engines_report(folder, check_values=args.check_values, accept=mine)
    return ["", *lines], data, fails, rest


def strict_reason(fails: Sequence[Finding]) -> str:
    """The part of ``--strict``'s one line that the hand-off's findings add."""
    kinds = ", ".join(dict.fromkeys(f.kind for f in fails))
    return f"{plural(len(fails), 'engine finding')} not accepted ({kinds})"


def as_loaded_side(
    built: Built, model: nn.Module, tg: TieGraph, args: argparse.Namespace
) -> tuple[TieGraph, str]:
    """A checkpoint side of ``diff`` as ``from_pretrained`` loads it (the transformers rule), and a note."""
    if built.checkpoint is None:
        return tg, ""
    from .._build import build_graph
    from ..engines._loaded import as_loaded

    note = as_loaded(built.model, Path(built.spec).expanduser(), check_values=args.check_values)
    if not note:
        return tg, ""
    return build_graph(model, input_embedding=args.input_embedding), f"; {note}"
