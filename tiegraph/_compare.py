"""Build step: value verdicts of declared pairs that do not share memory, read only when asked.

:func:`verdicts` is what ``build_graph(..., check_values=True)`` runs on the index it just built, and what
:func:`tiegraph._graph.amend` runs when values are asked for later
(:func:`tiegraph._values.record_values`). It reads only the two ends of declared pairs that do not share
memory (``not-tied`` and ``gated-off``); see :mod:`tiegraph._values` for what each verdict means.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import torch
from torch import nn

from ._served import served_value
from ._walk import slot_tensor

if TYPE_CHECKING:
    from ._declared import Declaration
    from ._index import Index

__all__ = ["compare", "verdicts"]


def compare(a: torch.Tensor | None, b: torch.Tensor | None) -> str:
    """``equal``, ``differ`` or ``unknown`` for two tensors (a transposed copy counts as equal).

    Examples
    --------
    >>> import torch
    >>> w = torch.arange(6.0).reshape(2, 3)
    >>> compare(w, w.clone()), compare(w, w.t().clone()), compare(w, w + 1), compare(w, w.to("meta"))
    ('equal', 'equal', 'differ', 'unknown')
    """
    if a is None or b is None or a.is_meta or b.is_meta:
        return "unknown"
    try:
        with torch.no_grad():
            x, y = a.detach(), b.detach()
            if x.dtype != y.dtype:
                x, y = x.double(), y.double()
            if x.shape == y.shape:
                return "equal" if torch.equal(x, y) else "differ"
            if x.dim() == 2 and x.shape == y.shape[::-1]:
                return "equal" if torch.equal(x, y.t()) else "differ"
            return "differ"
    except (RuntimeError, TypeError, NotImplementedError):  # subclasses without equal/double
        return "unknown"


def _tensor(model: nn.Module, idx: Index, s: int) -> torch.Tensor | None:
    """The values of slot ``s``: what its accelerate hook serves, else the module's own tensor, or None."""
    if idx.slot_name_of(s) in idx.deployed.served_from:  # an offload hook serves it: read its store
        return served_value(model, idx, s)
    try:
        module = model.get_submodule(idx.path_of(idx.owner_of(s)))
    except AttributeError:
        return None
    found: torch.Tensor | None = slot_tensor(module, idx.s_attr[s])
    return found


def verdicts(idx: Index, model: nn.Module) -> list[Declaration]:
    """The index's declarations, each with its value verdict; reads only the ends of pairs that do not share.

    ``model`` must be the module the index was built from, unchanged since. A slot an accelerate offload
    hook serves is read from the hook's ``weights_map`` (that one tensor; see
    :func:`tiegraph._served.served_value`), not from the meta tensor sitting in the module.
    """
    found: list[str] = []
    for entry in idx.declared:
        target, source, status = entry.target_slot, entry.source_slot, entry.tie.status
        if target < 0 or source < 0:
            found.append("unknown")
        elif status == "tied":
            found.append("equal")
        else:
            found.append(compare(_tensor(model, idx, target), _tensor(model, idx, source)))
    return [
        dataclasses.replace(entry, tie=dataclasses.replace(entry.tie, values=verdict))
        for entry, verdict in zip(idx.declared, found, strict=True)
    ]
