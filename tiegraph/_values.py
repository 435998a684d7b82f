"""Value verdicts: whether the two ends of a declared tie that does not share memory are equal, when asked.

``build_graph(model, check_values=True)`` computes them as a step of the build (:mod:`tiegraph._compare`),
and :func:`record_values` adds them to a graph built without. Either reads only the
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

from typing import TYPE_CHECKING

from ._compare import compare
from ._graph import amend

if TYPE_CHECKING:
    from torch import nn

    from ._graph import TieGraph

__all__ = ["VERDICTS", "compare", "record_values", "sentence"]

VERDICTS = ("equal", "differ", "unknown")


def record_values(tg: TieGraph, model: nn.Module) -> None:
    """Give every declared tie of ``tg`` its verdict; read only the ends of pairs that do not share memory.

    ``model`` must be the module ``tg`` was built from, unchanged since. A slot an accelerate offload hook
    serves is read from the hook's ``weights_map`` (that one tensor), not from the meta tensor sitting in
    the module. The verdicts go into the graph through :func:`tiegraph._graph.amend`, so its networkx
    graph and pictures are made afresh.
    """
    amend(tg, values_of=model)


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
