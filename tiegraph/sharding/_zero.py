"""DeepSpeed ZeRO-3: partitioned parameters keyed by their ``ds_id``; the storage ties partitioning splits.

ZeRO-3 (``deepspeed.initialize`` with ``zero_optimization.stage == 3``, ``deepspeed.zero.Init``) converts
every Parameter object of the model once. It gives it ``ds_id`` (one per object), ``ds_shape`` (the logical
shape), ``ds_tensor`` (this rank's partition: a flat tensor) and ``ds_status``, and between uses replaces
its data with an empty placeholder (``data.shape == [0]``, data pointer 0). By the design contract's
identity rule such a parameter is its ``ds_id``, its shape is ``ds_shape`` and its dtype and placement are
its partition's, even while its data is empty (this rule takes precedence over "empty tensors share with
nothing"). So:

- an identity tie (one Parameter object under several names) is one ``ds_id`` under several names: ZeRO-3
  keeps it, and it is a tie group;
- a storage tie (several Parameter objects over one storage: ``nn.Parameter(embed.weight)``,
  ``load_state_dict(assign=True)``, ``init_empty_weights``) becomes several ``ds_id`` s, partitioned and
  trained apart with no warning (verified with DeepSpeed 0.19.8 on 2 gloo CPU ranks,
  ``DS_ACCELERATOR=cpu``). :func:`check_zero3` predicts it on the unpartitioned model;
  after partitioning the audit's ``zero3-split-tie`` names the two ``ds_id`` s.

DeepSpeed gives each Parameter object its own ``ds_id``, so the slots that hold one ``ds_id`` are the slots
that hold one object: the share relation's ``same`` rule groups them. The builder reads the placeholders
(:mod:`tiegraph._engine_marks`, by their attributes: nothing imports deepspeed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from .._engine_marks import ZERO3
from .._finding import Finding, finding, kinds

if TYPE_CHECKING:
    from .._view import GraphView

__all__ = ["KINDS", "check_zero3", "findings", "split_pairs"]

#: The after-the-cut kind of ZeRO-3, with its sentence.
KINDS: dict[str, str] = kinds(
    {
        "zero3-split-tie": (
            "error",
            "{target} is declared tied to {source} (by {declared_by}) but DeepSpeed ZeRO-3 holds them as two "
            "parameters ({where}): they were two Parameter objects over the same bytes (a storage-only tie) "
            "when ZeRO-3 partitioned the model, so each was partitioned apart and they train apart, and "
            "model.tie_weights() cannot rejoin two partitioned parameters; build the model again and make "
            "them one Parameter before deepspeed.initialize / deepspeed.zero.Init (model.tie_weights(), or "
            "model.{target} = model.{source}; check first with tiegraph.sharding.check_zero3).",
        ),
    }
)


def split_pairs(view: GraphView) -> dict[tuple[str, str], str]:
    """Declared pairs (target, source) that do not share memory because ZeRO-3 holds two ``ds_id`` s."""
    ids = view.engine.get(ZERO3)
    if not ids:
        return {}
    out = {}
    for d in view.declarations:
        tie = d.tie
        if tie.status != "not-tied":
            continue
        ends = [ids.get(view.slot_name(d.target_slot)), ids.get(view.slot_name(d.source_slot))]
        if None not in ends and ends[0] != ends[1]:
            out[(tie.target, tie.source)] = "zero3-split-tie"
    return out


def findings(view: GraphView) -> list[Finding]:
    """``zero3-split-tie`` for every declared pair :func:`split_pairs` returns."""
    pairs = split_pairs(view)
    ids = view.engine.get(ZERO3) or {}
    found = []
    for d in view.declarations:
        tie = d.tie
        if (tie.target, tie.source) not in pairs:
            continue
        names = [view.slot_name(d.target_slot), view.slot_name(d.source_slot)]
        where = ", ".join(f"{name}: ds_id {ids[name]}" for name in names)
        fields = {"target": tie.target, "source": tie.source, "where": where}
        by = tie.declared_by_cls or "the model"
        found.append(finding(KINDS, "zero3-split-tie", [tie.target, tie.source], declared_by=by, **fields))
    return found


def check_zero3(model: nn.Module) -> list[Finding]:
    """Before ``deepspeed.initialize``: the ties ZeRO-3 partitioning will split, on the unpartitioned model.

    ZeRO-3 partitions each Parameter object apart, so a tie survives it only as one Parameter under
    several names. Every tie group held by several Parameter objects is split: ``storage-only-tie`` (the
    same bytes in the same layout: make them one Parameter, which loses nothing) and
    ``storage-tie-by-view`` (different views, e.g. transposed: they cannot be one Parameter).

    Parameters
    ----------
    model
        The model as you will pass it to ``deepspeed.initialize`` (any device; meta works: no tensor data
        is read). A model already partitioned has no storage tie left to find: build the graph and audit
        it instead (``zero3-split-tie``).

    Returns
    -------
    list of Finding
        One per split tie group, in the identity room's kinds; empty when ZeRO-3 keeps every tie.

    Examples
    --------
    >>> import torch, tiegraph.sharding
    >>> m = torch.nn.Module()
    >>> m.embed, m.head = torch.nn.Embedding(8, 4), torch.nn.Linear(4, 8, bias=False)
    >>> m.head.weight = torch.nn.Parameter(m.embed.weight)  # a second object over the same bytes
    >>> [(f.kind, f.paths) for f in tiegraph.sharding.check_zero3(m)]
    [('storage-only-tie', ('embed.weight', 'head.weight'))]
    >>> m.head.weight = m.embed.weight  # one Parameter: ZeRO-3 keeps it
    >>> tiegraph.sharding.check_zero3(m)
    []
    """
    from .. import _identity
    from .._build import build_graph
    from .._graph import view_of

    if not isinstance(model, nn.Module):
        raise TypeError(f"check_zero3 expects a torch.nn.Module, got {type(model).__name__}")
    return _identity.findings(view_of(build_graph(model)))
