"""Value verdicts: whether the two ends of a declared tie that does not share memory are equal, when asked.

``build_graph(model, check_values=True)`` runs :func:`record_values` after the build. It reads only the
tensors of declared pairs that do not share memory (``not-tied`` and ``gated-off``), and records on every
declared tie one of :data:`VERDICTS`:

- ``equal``: same values (a tied pair is equal without reading anything): ``tie_weights()`` re-ties them
  without loss;
- ``differ``: one copy was trained or loaded apart;
- ``unknown``: a tensor holds no values here (meta, offloaded to an accelerate hook's store, a subclass that
  cannot be compared), or the declaration names nothing (``unresolved``).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from .graph import TieGraph

__all__ = ["VERDICTS", "compare", "record_values", "sentence"]

VERDICTS = ("equal", "differ", "unknown")


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


def _tensor(model: nn.Module, owner: str, attr: str) -> torch.Tensor | None:
    """The tensor at ``owner.attr`` of the model (its own ``_parameters``/``_buffers``), or None."""
    try:
        module = model.get_submodule(owner)
    except AttributeError:
        return None
    found: torch.Tensor | None = module._parameters.get(attr)
    if found is None:
        found = module._buffers.get(attr)
    return found


def record_values(tg: TieGraph, model: nn.Module) -> None:
    """Give every declared tie of ``tg`` its verdict; read only the ends of pairs that do not share memory.

    ``model`` must be the module ``tg`` was built from, unchanged since.
    """
    idx = tg._index
    owner_of = idx.s_owner
    verdicts: list[str] = []
    for entry in idx.declared:
        target, source, status = entry.target_slot, entry.source_slot, entry.status
        if target < 0 or source < 0:
            verdicts.append("unknown")
        elif status == "tied":
            verdicts.append("equal")
        else:
            a = _tensor(model, idx.m_path[owner_of[target]], idx.s_attr[target])
            b = _tensor(model, idx.m_path[owner_of[source]], idx.s_attr[source])
            verdicts.append(compare(a, b))
    idx.declared = [
        dataclasses.replace(entry, values=verdict)
        for entry, verdict in zip(idx.declared, verdicts, strict=True)
    ]
    if tg._graph is not None:  # the networkx graph was made already: remake it with the verdicts
        tg._graph = None


def sentence(values: str | None, target: str, source: str) -> str:
    """What a ``declared-not-tied`` finding adds for a verdict: what re-tying and saving each way would do.

    A clause to end the finding's one sentence with (empty when values were not asked for).

    Examples
    --------
    >>> sentence("unknown", "head.weight", "embed.weight")
    '; their values could not be compared here (meta or offloaded tensors)'
    """
    if values == "equal":
        return (
            "; their values are equal, so model.tie_weights() re-ties them without loss (save_pretrained "
            f"then stores {source} once)"
        )
    if values == "differ":
        return (
            "; their values differ (one copy was trained or loaded apart): model.tie_weights() would replace "
            f"{target} by {source} and lose {target}'s values, saving as is stores both and from_pretrained "
            "loads them untied with a warning while the config still says tied, and saving with "
            "config.tie_word_embeddings=False keeps both and says so"
        )
    if values == "unknown":
        return "; their values could not be compared here (meta or offloaded tensors)"
    return ""
