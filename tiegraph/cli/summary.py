"""Plain-data summaries of one graph, shared by ``tiegraph inspect --format json`` and the survey rows."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from .. import __version__

if TYPE_CHECKING:
    from torch import nn

    from .._acceptance import Acceptance
    from .._graph import TieGraph
    from .specs import Built

__all__ = ["count_parameters", "human_count", "inspect_data", "summarise"]


def count_parameters(model: nn.Module) -> int:
    """Number of elements in the model's distinct parameters (meta tensors included; no data read)."""
    return sum(p.numel() for p in model.parameters())


def human_count(n: int) -> str:
    """``6738415616`` -> ``'6.74B'``.

    Examples
    --------
    >>> human_count(6738415616), human_count(1200), human_count(12)
    ('6.74B', '1.20K', '12')
    """
    for unit, size in (("T", 10**12), ("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def summarise(tg: TieGraph, *, accept: Iterable[Acceptance | str] = ()) -> dict[str, Any]:
    """Plain-data answers of one graph: input embedding, tied targets, tie groups, declarations, findings.

    A declaration's ``declared_by`` names the declaring module as the text report does (its class, after
    its canonical path unless it is the root); ``declared_by_canonical`` is that canonical path (``""``:
    the root) and ``declared_by_cls`` the class. Each finding has its ``severity`` and whether it is
    ``accepted`` (``accept``: see :mod:`tiegraph._acceptance`; acceptances that match nothing are findings).
    Every answer is about the PEFT copies the forward uses; ``modules_to_save`` (only when the model has
    such wrappers) says which copy that is and what each other copy shares memory with.
    """
    from .._acceptance import accept as apply_acceptances
    from .._adapters import copy_facts
    from .._graph import view_of
    from ..errors import NoInputEmbeddingError

    out: dict[str, Any] = {"input_embedding": tg.input_embedding()}
    try:
        out["tied_to_input_embedding"] = tg.tied_to_input_embedding()
    except NoInputEmbeddingError:
        out["tied_to_input_embedding"] = None
    out["tie_groups"] = tg.tie_groups()
    out["declared"] = [
        {
            "target": d.target,
            "source": d.source,
            "declared_by": d.declarer,
            "declared_by_canonical": d.declared_by,
            "declared_by_cls": d.declared_by_cls,
            "status": d.status,
        }
        for d in tg.declared_ties()
    ]
    copies = copy_facts(view_of(tg))
    if copies:  # which PEFT copy the forward uses; what the others share (they count in no answer above)
        out["modules_to_save"] = [
            {"module": c.module, "path": c.path, "uses": c.uses, "not_used": c.not_used} for c in copies
        ]
    found = apply_acceptances(tg.audit(), accept)
    out["findings"] = [_plain(f, ("kind", "severity", "accepted", "paths", "message")) for f in found]
    return out


def _plain(obj: Any, names: Sequence[str]) -> dict[str, Any]:
    out = {}
    for name in names:
        value = getattr(obj, name, None)
        if isinstance(value, tuple):
            value = list(value)
        out[name] = value
    if out.get("message") is None and "message" in names:
        out["message"] = str(obj)
    return out


def inspect_data(
    built: Built,
    wrappers: list[str],
    model: nn.Module,
    summary: dict[str, Any],
    checkpoint_lines: list[str],
    plan: list[Any],
    engine_data: dict[str, Any] | None,
    tg: TieGraph,
) -> dict[str, Any]:
    """``tiegraph inspect --format json``: what was built and how, the summary, and the graph itself."""
    return {
        "tiegraph": __version__,
        "spec": built.spec,
        "kind": built.kind,
        "class": built.cls,
        "source": built.source,
        "overrides": built.overrides,
        "notes": built.notes,
        "wrappers": wrappers,
        "parameters": count_parameters(model),
        **summary,
        "checkpoint": _checkpoint_data(built, checkpoint_lines),
        "shard_plan": [dict(dataclasses.asdict(f), severity=f.severity) for f in plan],
        "engines": engine_data,
        "graph": tg.to_json(),
    }


def _checkpoint_data(built: Built, lines: list[str]) -> dict[str, Any] | None:
    """What ``inspect`` read of a checkpoint directory, and its report lines (None: no directory)."""
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
