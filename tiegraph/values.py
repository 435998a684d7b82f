"""Value verdicts: whether the two ends of a declared tie that does not share memory are equal, when asked.

``build_graph(model, check_values=True)`` runs :func:`record_values` after the build. It reads only the
tensors of declared pairs that do not share memory (``not-tied`` and ``gated-off``), and records on every
declared tie one of :data:`VERDICTS`:

- ``equal``: same values (a tied pair is equal without reading anything): ``tie_weights()`` re-ties them
  without loss;
- ``differ``: one copy was trained or loaded apart;
- ``unknown``: a tensor holds no values here (meta, served by an accelerate hook from nowhere or from a
  store tiegraph does not open, a subclass that cannot be compared), or the declaration names nothing
  (``unresolved``).

An end that an accelerate offload hook serves (``cpu_offload``, ``disk_offload``, ``dispatch_model``,
``from_pretrained(device_map=...)``) is compared by the values its hook's ``weights_map`` serves, not by
the meta placeholder in the module: the store's own tensor, one safetensors entry, or one ``.dat`` file
read through a numpy memmap. Only those tensors are read, and nothing is unpickled.

Examples
--------
>>> import tempfile, torch, tiegraph
>>> from accelerate import disk_offload
>>> class Tiny(torch.nn.Module):
...     _tied_weights_keys = {"head.weight": "embed.weight"}
...     def __init__(self):
...         super().__init__()
...         self.embed = torch.nn.Embedding(10, 4)
...         self.head = torch.nn.Linear(4, 10, bias=False)
>>> with tempfile.TemporaryDirectory() as folder:
...     model = disk_offload(Tiny(), folder, execution_device="cpu")  # the weights are now .dat files
...     tg = tiegraph.build_graph(model, check_values=True)
>>> model.head.weight.device, [(tie.status, tie.values) for tie in tg.declared_ties()]
(device(type='meta'), [('not-tied', 'differ')])
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import torch
from torch import nn

from .deployed import served_value

if TYPE_CHECKING:
    from ._index import Index
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


def _tensor(model: nn.Module, idx: Index, s: int) -> torch.Tensor | None:
    """The values of slot ``s``: what its accelerate hook serves, else the module's own tensor, or None."""
    if idx.slot_name_of(s) in idx.deployed.served_from:  # an offload hook serves it: read its store
        return served_value(model, idx, s)
    try:
        module = model.get_submodule(idx.path_of(idx.owner_of(s)))
    except AttributeError:
        return None
    attr = idx.s_attr[s]
    found: torch.Tensor | None = module._parameters.get(attr)
    if found is None:
        found = module._buffers.get(attr)
    return found


def record_values(tg: TieGraph, model: nn.Module) -> None:
    """Give every declared tie of ``tg`` its verdict; read only the ends of pairs that do not share memory.

    ``model`` must be the module ``tg`` was built from, unchanged since. A slot an accelerate offload hook
    serves is read from the hook's ``weights_map`` (that one tensor; see
    :func:`tiegraph.deployed.served_value`), not from the meta tensor sitting in the module.
    """
    idx = tg._index
    verdicts: list[str] = []
    for entry in idx.declared:
        target, source, status = entry.target_slot, entry.source_slot, entry.status
        if target < 0 or source < 0:
            verdicts.append("unknown")
        elif status == "tied":
            verdicts.append("equal")
        else:
            verdicts.append(compare(_tensor(model, idx, target), _tensor(model, idx, source)))
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
    '; their values could not be compared here (meta tensors, or an offload store that cannot be read)'
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
        return (
            "; their values could not be compared here (meta tensors, or an offload store that cannot be "
            "read)"
        )
    return ""
