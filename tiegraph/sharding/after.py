"""After the cut: a model already sharded by FSDP2 ``fully_shard``, whose declared tie was split.

The builder calls :func:`record_cut` once per build (one check over the model's distinct classes when no
module is an ``FSDPModule``); it records which ``fully_shard`` call holds each parameter slot
(``index.cut``, kept in the graph's JSON as ``fsdp_groups``). :func:`findings` then explains a declared pair
that no longer shares memory by the cut, naming FSDP, the call holding each end and the grouping that
fixes it, instead of the generic "call model.tie_weights()": tie_weights() cannot rejoin two sharded
Parameters of two FSDP groups.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import nn

from .._finding import Finding, finding, kinds
from ._plan import expr

if TYPE_CHECKING:
    from .._index import Index
    from .._view import GraphView

__all__ = ["KINDS", "findings", "record_cut", "split_pairs"]

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

NO_CALL = "no fully_shard call"


def _fsdp_classes(kinds: set[type]) -> bool:
    if not any(kind.__name__.startswith("FSDP") for kind in kinds):
        return False
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # a torch without FSDP2
        return False
    return any(issubclass(kind, FSDPModule) for kind in kinds)


def _groups(modules: list[nn.Module], path_of: dict[int, str]) -> dict[int, str]:
    """``id(parameter) -> call text`` for every parameter an FSDP2 state manages (sharded or not)."""
    from ._plan import Call

    held: dict[int, str] = {}
    seen: set[int] = set()
    for module in modules:
        get_state = getattr(module, "_get_fsdp_state", None)
        state = get_state() if callable(get_state) else None
        if state is None or id(state) in seen:
            continue
        seen.add(id(state))
        owners = tuple(m for m in getattr(state, "_modules", ()) if id(m) in path_of)
        text = Call(owners, tuple(path_of[id(m)] for m in owners)).text if owners else "fully_shard(?)"
        groups = getattr(state, "_fsdp_param_groups", None) or [getattr(state, "_fsdp_param_group", None)]
        for group in groups:
            for fsdp_param in getattr(group, "fsdp_params", None) or ():
                for attr in ("sharded_param", "_unsharded_param"):
                    param = getattr(fsdp_param, attr, None)
                    if param is not None:
                        held[id(param)] = text
    return held


def record_cut(index: Index, modules: list[nn.Module], tensors: list[Any], kinds: set[type]) -> None:
    """The builder's hook: record the ``fully_shard`` call of every parameter slot of an FSDP2 model."""
    if not _fsdp_classes(kinds):
        return
    path_of: dict[int, str] = {}
    for i, module in enumerate(modules):
        path_of.setdefault(id(module), index.path_of(i))
    try:
        held = _groups(modules, path_of)
    except Exception:  # torch's private FSDP state changed shape: record nothing rather than guess
        return
    for slot, (tensor, is_param) in enumerate(zip(tensors, index.s_param, strict=True)):
        if not is_param:
            continue
        index.cut[index.slot_name_of(slot)] = held.get(id(tensor), NO_CALL)


def split_pairs(view: GraphView) -> dict[tuple[str, str], str]:
    """Declared pairs (target, source) that do not share memory and that the FSDP2 cut explains."""
    cut = view.fsdp_groups
    if not cut:
        return {}
    out = {}
    for tie in view.declarations:
        if tie.status != "not-tied":
            continue
        ends = [view.slot_name(tie.target_slot), view.slot_name(tie.source_slot)]
        if any(cut.get(name, NO_CALL) != NO_CALL for name in ends):
            out[(tie.target, tie.source)] = "fsdp-split-tie"
    return out


def findings(view: GraphView) -> list[Finding]:
    """``fsdp-split-tie`` for every declared pair :func:`split_pairs` returns."""
    pairs = split_pairs(view)
    found = []
    for tie in view.declarations:
        if (tie.target, tie.source) not in pairs:
            continue
        names = [view.slot_name(tie.source_slot), view.slot_name(tie.target_slot)]
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
