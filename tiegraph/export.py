"""Pictures and files: DOT (pydot), SVG/PNG/PDF (pygraphviz), JSON (networkx node-link data).

The public face of four rooms: what a picture shows (:mod:`tiegraph._picture`), DOT with its legend
(:mod:`tiegraph._dot`), rendering and the Jupyter reprs (:mod:`tiegraph._render`), and JSON I/O
(:mod:`tiegraph._json`). Every picture asks the graph (:class:`tiegraph.TieGraph`) what shares memory.

The picture shows what shares memory, not the whole model: by default the tie group(s) of the input
embedding, the modules owning each slot drawn as boxes nested by module path, the storage each slot reads,
``shares`` edges styled by how they share, ``declares`` edges styled by status, and a legend. ``show="all"``
draws the whole module tree instead, with runs of identical numbered children (80 decoder layers with
nothing tied) collapsed into one node that says how many it stands for.

DOT is written with tiegraph's own node ids and ``label=`` (module, slot and storage names contain ``.`` and
may contain ``:``, which pydot reads as a port; a node called ``node`` would vanish), and only with the
attributes in :data:`DOT_ATTRIBUTES`:

- ``m<i>`` (clusters ``cluster_m<i>``): the i-th module node of :attr:`TieGraph.graph`;
- ``s<i>``: the i-th slot node; ``t<i>``: the storage node ``t:<i>``;
- ``c<i>``: a run of identical layers collapsed into one node (``i`` numbers its first module);
- ``legend``: the legend (one HTML-table node). The caption is the graph's ``label``.

Examples
--------
>>> import torch, tiegraph
>>> m = torch.nn.Module()
>>> m.embed = torch.nn.Embedding(8, 4)
>>> m.head = torch.nn.Linear(4, 8, bias=False)
>>> m.head.weight = m.embed.weight
>>> tg = tiegraph.build_graph(m, input_embedding="embed")
>>> dot = tg.to_dot()
>>> import pydot
>>> sorted(n.get_name() for n in pydot.graph_from_dot_data(dot)[0].get_subgraph("cluster_m1")[0].get_nodes())
['s0']
>>> data = tg.to_json()
>>> tiegraph.TieGraph.from_json(data).tied_to_input_embedding()
['head']
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._dot import DOT_ATTRIBUTES, to_dot, to_pydot
from ._formats import FORMAT_OF_SUFFIX
from ._json import FORMAT_VERSION, from_json, lint, to_json
from ._render import render, to_svg
from .errors import ConfigurationError, GraphFormatError, RenderError

if TYPE_CHECKING:
    from ._graph import TieGraph

__all__ = [
    "DOT_ATTRIBUTES",
    "FORMAT_VERSION",
    "SUFFIXES",
    "GraphFormatError",
    "RenderError",
    "from_json",
    "lint",
    "render",
    "to_dot",
    "to_json",
    "to_pydot",
    "to_svg",
    "write",
]

#: File suffixes :func:`write` understands.
SUFFIXES = tuple(suffix for suffix, fmt in FORMAT_OF_SUFFIX.items() if fmt != "text")


# ---------------------------------------------------------------------------------------------- files


def write(tg: TieGraph, path: str | os.PathLike[str], **options: Any) -> None:
    """Write the picture (``.dot``/``.gv``, ``.svg``, ``.png``, ``.pdf``) or the data (``.json``).

    Picture options are those of :func:`to_pydot`; ``.json`` takes none.

    Raises
    ------
    ConfigurationError
        If the suffix is none of the above, or options are given for ``.json``.
    RenderError
        For ``.svg``/``.png``/``.pdf`` without a working pygraphviz.

    Examples
    --------
    >>> import tempfile, pathlib, torch, tiegraph
    >>> m = torch.nn.Module()
    >>> m.embed = torch.nn.Embedding(8, 4)
    >>> tg = tiegraph.build_graph(m, input_embedding="embed")
    >>> with tempfile.TemporaryDirectory() as d:
    ...     tg.write(pathlib.Path(d) / "graph.dot")
    ...     (pathlib.Path(d) / "graph.dot").read_text().startswith("digraph")
    True
    """
    target = Path(path)
    fmt = FORMAT_OF_SUFFIX.get(target.suffix.lower())
    if fmt is None or fmt == "text":
        raise ConfigurationError(
            f"cannot write {str(path)!r}: unknown suffix {target.suffix!r}; use one of {', '.join(SUFFIXES)}"
        )
    if fmt == "json":
        if options:
            raise ConfigurationError(f"picture options {sorted(options)} do not apply to .json")
        target.write_text(json.dumps(to_json(tg), indent=1) + "\n", encoding="utf-8")
    elif fmt == "dot":
        target.write_text(to_dot(tg, **options), encoding="utf-8")
    else:
        target.write_bytes(render(tg, fmt, **options))
