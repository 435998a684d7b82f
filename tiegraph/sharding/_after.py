"""After the cut: a model already sharded by FSDP2 ``fully_shard``, whose declared tie was split.

The builder records which ``fully_shard`` call holds each parameter slot (:mod:`tiegraph._sharded`;
``index.cut``, kept in the graph's JSON as ``fsdp_groups``). :func:`findings` then explains a declared pair
that no longer shares memory by the cut, naming FSDP, the call holding each end and the grouping that
fixes it, instead of the generic "call model.tie_weights()": tie_weights() cannot rejoin two sharded
Parameters of two FSDP groups.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._finding import Finding, finding, kinds
from .._sharded import NO_CALL, expr

if TYPE_CHECKING:
    from .._view import GraphView

__all__ = ["KINDS", "findings", "split_pairs"]

#: The after-the-cut finding kind, with its sentence.
KINDS: dict[str, str] = kinds(
    {
        "fsdp-split-tie": (
            "error",
            "{target} is declared tied to {source} (by {declared_by}) but FSDP2 holds them as two "
            "Parameters ({where}), so they train apart and model.tie_weights() cannot rejoin them; build the "
            "model again and {fix} (check a plan first with tiegraph.check_shard_plan).",
        ),
    }
)


def split_pairs(view: GraphView) -> dict[tuple[str, str], str]:
    """Declared pairs (target, source) that do not share memory and that the FSDP2 cut explains."""
    cut = view.fsdp_groups
    if not cut:
        return {}
    out = {}
    for d in view.declarations:
        tie = d.tie
        if tie.status != "not-tied":
            continue
        ends = [view.slot_name(d.target_slot), view.slot_name(d.source_slot)]
        if any(cut.get(name, NO_CALL) != NO_CALL for name in ends):
            out[(tie.target, tie.source)] = "fsdp-split-tie"
    return out


def findings(view: GraphView) -> list[Finding]:
    """``fsdp-split-tie`` for every declared pair :func:`split_pairs` returns."""
    pairs = split_pairs(view)
    found = []
    for d in view.declarations:
        tie = d.tie
        if (tie.target, tie.source) not in pairs:
            continue
        names = [view.slot_name(d.source_slot), view.slot_name(d.target_slot)]
        calls = [view.fsdp_groups.get(name, NO_CALL) for name in names]
        where = "; ".join(f"{name}: {call}" for name, call in zip(names, calls, strict=True))
        owners = list(dict.fromkeys(expr(name.rpartition(".")[0]) for name in names))
        fix = (
            "make them one Parameter before sharding (model.tie_weights()): fully_shard copies each "
            "Parameter of a storage-only tie apart, even in one call"
            if calls[0] == calls[1]
            else f"shard the tied modules in one call, fully_shard([{', '.join(owners)}]), before the calls "
            "above them"
        )
        by = tie.declared_by_cls or "the model"
        found.append(
            finding(
                KINDS,
                "fsdp-split-tie",
                [tie.target, tie.source],
                target=tie.target,
                source=tie.source,
                declared_by=by,
                where=where,
                fix=fix,
            )
        )
    return found
