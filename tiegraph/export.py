"""Pictures and files: DOT (pydot), SVG/PNG/PDF (pygraphviz), JSON (networkx node-link data).

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

import html
import itertools
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import networkx as nx

from .errors import GraphFormatError, NoInputEmbeddingError, RenderError

if TYPE_CHECKING:
    import pydot

    from .graph import TieGraph

__all__ = [
    "DOT_ATTRIBUTES",
    "FORMAT_VERSION",
    "GraphFormatError",
    "RenderError",
    "from_json",
    "render",
    "repr_html",
    "repr_svg",
    "to_dot",
    "to_json",
    "to_pydot",
    "to_svg",
    "write",
]

#: Version of the JSON layout written by :func:`to_json`; :func:`from_json` reads this version.
FORMAT_VERSION = 1

#: The only DOT attributes tiegraph writes (graph, cluster, node and edge attributes together).
DOT_ATTRIBUTES = frozenset(
    {
        # graph and clusters
        "rankdir", "newrank", "nodesep", "ranksep", "labelloc", "labeljust", "bgcolor", "margin",
        # shared
        "label", "style", "color", "fillcolor", "fontcolor", "fontname", "fontsize", "penwidth", "tooltip",
        # nodes
        "shape", "width", "height",
        # edges
        "dir", "arrowhead", "arrowsize", "constraint", "minlen", "xlabel",
    }
)  # fmt: skip

#: File suffixes :func:`write` understands.
SUFFIXES = (".dot", ".gv", ".svg", ".png", ".pdf", ".json")

_SHOW = ("embedding", "groups", "all")
_FONT = "Helvetica,Arial,sans-serif"
_GRAY = "#666666"
_SHARE_STYLE = {  # how -> (style, legend text)
    "same": ("solid", "same object"),
    "view": ("dashed", "view of the same storage"),
    "overlap": ("dotted", "overlapping bytes"),
}
_SHARE_COLOR = "#1f4e9c"
_DECLARED_STYLE = {  # status -> (color, style, edge label)
    "tied": ("#2e7d32", "solid", "declared: tied"),
    "not-tied": ("#c62828", "dashed", "declared, NOT tied"),
    "gated-off": ("#9e9e9e", "dashed", "declared, gated off"),
    "unresolved": ("#ef6c00", "dotted", "declared, unresolved"),
}
_SAME_NAME = ("#c62828", "dotted", "same name, not shared")
_EMBED_FILL = "#fff3b0"
_SLOT_FILL = "#ffffff"
_BUFFER_FILL = "#eef3fb"
_STORAGE_FILL = "#e8e8e8"
_COLLAPSED_FILL = "#f4f4f4"


# ---------------------------------------------------------------------------------------------- helpers


def _attrs(**attrs: Any) -> dict[str, Any]:
    """DOT attributes, checked against the allow-list; None values are dropped."""
    unknown = set(attrs) - DOT_ATTRIBUTES
    if unknown:
        raise ValueError(f"DOT attributes {sorted(unknown)} are not in tiegraph's allow-list")
    return {k: v for k, v in attrs.items() if v is not None}


def _esc(text: object) -> str:
    """Text for an HTML-like label."""
    return html.escape(str(text), quote=True)


def _plain(text: str) -> str:
    """Text for a quoted DOT string (escString): backslashes doubled, no newlines."""
    return text.replace("\\", "\\\\").replace("\n", " ")


def _html(*lines: str, align: str | None = None) -> str:
    """An HTML-like label from already escaped lines (centred, or all aligned ``LEFT``)."""
    if align is None:
        return "<" + "<BR/>".join(lines) + ">"
    br = f'<BR ALIGN="{align}"/>'
    return "<" + br.join(lines) + br + ">"


def _small(text: str, color: str = _GRAY, size: int = 9) -> str:
    return f'<FONT POINT-SIZE="{size}" COLOR="{color}">{text}</FONT>'


def _size(nbytes: int) -> str:
    value = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _shape(shape: Iterable[int]) -> str:
    dims = list(shape)
    return "×".join(str(d) for d in dims) if dims else "scalar"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


class _View:
    """The graph's nodes and relations in the form the drawing needs (built once per picture)."""

    def __init__(self, G: nx.MultiDiGraph) -> None:
        self.G = G
        self.modules: list[str] = []
        self.slots: list[str] = []
        self.dot_id: dict[str, str] = {}
        for node, kind in G.nodes(data="kind"):
            if kind == "module":
                self.dot_id[node] = f"m{len(self.modules)}"
                self.modules.append(node)
            elif kind == "slot":
                self.dot_id[node] = f"s{len(self.slots)}"
                self.slots.append(node)
            else:
                self.dot_id[node] = "t" + node.split(":", 1)[1]
        self.by_path = {G.nodes[m]["path"]: m for m in self.modules}
        self.parent: dict[str, str] = {}
        self.children: dict[str, list[str]] = {m: [] for m in self.modules}
        self.owned: dict[str, list[str]] = {m: [] for m in self.modules}
        self.owner: dict[str, str] = {}
        self.storage: dict[str, tuple[str, int, int]] = {}
        self.shares: dict[tuple[str, str], str] = {}
        self.declares: list[tuple[str, str, dict[str, Any]]] = []
        for u, v, key, data in G.edges(keys=True, data=True):
            if key == "child":
                self.parent[v] = u
                self.children[u].append(v)
            elif key == "owns":
                self.owner[v] = u
                self.owned[u].append(v)
            elif key == "reads":
                self.storage[u] = (v, int(data["offset"]), int(data["nbytes"]))
            elif key == "shares" and u != v:
                self.shares.setdefault((min(u, v), max(u, v)), data["how"])
            elif key == "declares":
                self.declares.append((u, v, data))
        # share components over slots
        H = nx.Graph()
        H.add_nodes_from(self.slots)
        H.add_edges_from(self.shares)
        self.group: dict[str, int] = {}
        self.members: dict[int, list[str]] = {}
        for i, members in enumerate(nx.connected_components(H)):
            ordered = [s for s in self.slots if s in members]
            for s in ordered:
                self.group[s] = i
            self.members[i] = ordered
        self.tied = {s for s in self.slots if len(self.members[self.group[s]]) > 1}
        self.declared_ends = {s for u, v, _ in self.declares for s in (u, v)}
        self.embedding_slots = set(G.graph.get("input_embedding_slots") or [])

    def path(self, module: str) -> str:
        return str(self.G.nodes[module]["path"])

    def subtree(self, module: str) -> Iterator[str]:
        stack = [module]
        while stack:
            m = stack.pop()
            yield m
            stack.extend(reversed(self.children[m]))

    def slots_under(self, module: str) -> list[str]:
        return [s for m in self.subtree(module) for s in self.owned[m]]

    def components(self, seeds: Iterable[str]) -> set[str]:
        return {s for g in {self.group[s] for s in seeds} for s in self.members[g]}

    def with_neighbours(self, chosen: set[str]) -> set[str]:
        """Add the other end of declared ties and the slots of the same canonical name, with their groups."""
        extra = {v if u in chosen else u for u, v, _ in self.declares if u in chosen or v in chosen}
        names = {self.G.nodes[s]["canonical"] for s in chosen}
        extra |= {s for s in self.slots if self.G.nodes[s]["canonical"] in names}
        return chosen | self.components(extra)

    def signature(self, module: str) -> tuple[Any, ...]:
        """What makes two numbered siblings 'identical': classes, relative names, slot shapes and dtypes."""
        G = self.G
        base = len(self.path(module))
        parts: list[Any] = []
        for m in self.subtree(module):
            parts.append((self.path(m)[base:], G.nodes[m]["cls"]))
            for s in self.owned[m]:
                d = G.nodes[s]
                parts.append((d["attr"], tuple(d["shape"]), d["dtype"], d["tensor"], d["device"]))
        return tuple(parts)


# ---------------------------------------------------------------------------------------------- selection


def _select(view: _View, show: str, component: str | None) -> tuple[set[str], str, list[str]]:
    """The slots to draw, the caption, and notes for the caption."""
    G = view.G
    notes: list[str] = []
    if component is not None:
        from .queries import resolve_slots

        seeds = resolve_slots(G, component)
        chosen = view.with_neighbours(view.components(seeds))
        if not chosen & view.tied:
            notes.append(f"{component} shares memory with nothing")
        return chosen, f"Slots sharing memory with <B>{_esc(component)}</B>", notes
    if show == "embedding":
        seeds = [s for s in view.slots if s in view.embedding_slots]
        if seeds:
            chosen = view.with_neighbours(view.components(seeds))
            embedding = G.graph.get("input_embedding")
            node = G.nodes[G.graph["input_embedding_node"]]
            canonical = node["belongs"] if node["kind"] == "module" else node["canonical"]
            name = _esc(canonical or embedding)
            groups = len({view.group[s] for s in seeds if s in view.tied})
            title = f"Tie group{'' if groups == 1 else 's'} of the input embedding <B>{name}</B>"
            if not groups:
                title = f"The input embedding <B>{name}</B>"
                notes.append("it shares memory with nothing")
            return chosen, title, notes
        notes.append("no input embedding was found: showing every tie group")
        show = "groups"
    if show == "groups":
        chosen = view.with_neighbours(set(view.tied) | view.declared_ends)
        count = len({view.group[s] for s in view.tied})
        if not chosen:
            notes.append("nothing in this model shares memory")
        return chosen, f"All {_plural(count, 'tie group')}", notes
    count = len({view.group[s] for s in view.tied})
    return set(view.slots), f"Whole model: {_plural(count, 'tie group')}", notes


def _hidden_note(view: _View, drawn: set[str]) -> list[str]:
    """Say what a component picture leaves out, naming runs of numbered layers that are not drawn at all."""
    hidden = len(view.slots) - len(drawn)
    if not hidden:
        return []
    notes = [f"not drawn: {_plural(hidden, 'slot')} that share nothing with what is shown"]
    drawn_owners = {view.owner[s] for s in drawn}
    with_drawn: set[str] = set()
    for m in drawn_owners:
        while True:
            with_drawn.add(m)
            if m not in view.parent:
                break
            m = view.parent[m]
    for m in view.modules:
        numbered = [c for c in view.children[m] if view.G.nodes[c]["path"].rsplit(".", 1)[-1].isdigit()]
        if len(numbered) < 2 or (m not in with_drawn and view.parent.get(m) not in with_drawn):
            continue
        skipped = [c for c in numbered if c not in with_drawn and view.slots_under(c)]
        if len(skipped) >= 2:
            classes = ", ".join(sorted({view.G.nodes[c]["cls"] for c in skipped}))
            some = "" if len(skipped) == len(numbered) else f" ({len(skipped)} of {len(numbered)})"
            first, last = (view.path(c).rsplit(".", 1)[-1] for c in (skipped[0], skipped[-1]))
            notes.append(
                f"not drawn: {_esc(view.path(m))}.{first}..{last}{some}, {len(skipped)} × {_esc(classes)}, "
                "nothing in them is tied"
            )
    return notes


def _runs(view: _View, module: str, keep: set[str]) -> list[list[str]]:
    """Runs of two or more consecutive numbered children with one signature and no slot in ``keep``."""
    runs: list[list[str]] = []
    run: list[str] = []
    last: tuple[Any, ...] | None = None
    for child in view.children[module]:
        sig: tuple[Any, ...] | None = None
        if view.path(child).rsplit(".", 1)[-1].isdigit():
            under = view.slots_under(child)
            if under and not keep.intersection(under):
                sig = view.signature(child)
        if sig is not None and sig == last:
            run.append(child)
            continue
        if len(run) >= 2:
            runs.append(run)
        run = [child] if sig is not None else []
        last = sig
    if len(run) >= 2:
        runs.append(run)
    return runs


# ---------------------------------------------------------------------------------------------- drawing


def to_pydot(
    tg: TieGraph,
    *,
    show: str = "embedding",
    component: str | None = None,
    full_paths: bool = True,
    storage: bool = True,
    collapse: bool = True,
    legend: bool = True,
    rankdir: str = "LR",
) -> pydot.Dot:
    """The picture of what shares memory, as a ``pydot.Dot``.

    Parameters
    ----------
    tg
        The graph to draw.
    show
        ``"embedding"`` (default): the tie group(s) of the input embedding (every tie group when the model
        has no input embedding); ``"groups"``: every tie group; ``"all"``: the whole module tree, with
        runs of identical numbered layers that hold nothing tied collapsed into one node.
    component
        A slot or module name (full or canonical): draw the tie groups of its slots instead.
    full_paths
        Under each canonical slot name, also print its full path when the two differ.
    storage
        Draw the storage each shown tie-group slot reads (a cylinder, with its size and device).
    collapse
        With ``show="all"``, collapse runs of two or more identical numbered children that hold nothing
        tied (``model.layers.0..79``).
    legend
        Add a legend of the node shapes and edge styles used in the picture.
    rankdir
        Graphviz layout direction (``"LR"`` or ``"TB"``).

    Returns
    -------
    pydot.Dot
        With the node ids described in :mod:`tiegraph.export`. Besides the picked slots, the picture
        includes the other end of each declared tie touching them and every slot with the same canonical
        name (an untied ``modules_to_save`` copy, a reloaded copy), so an untie is visible.

    Raises
    ------
    ValueError
        If ``show`` or ``rankdir`` is not one of the values above.
    PathNotFoundError
        If ``component`` names no slot or module.

    Examples
    --------
    >>> import torch, tiegraph
    >>> m = torch.nn.Module()
    >>> m.embed = torch.nn.Embedding(8, 4)
    >>> m.head = torch.nn.Linear(4, 8, bias=False)
    >>> m.head.weight = m.embed.weight
    >>> dot = tiegraph.build_graph(m, input_embedding="embed").to_pydot(legend=False)
    >>> sorted(n.get_name() for n in dot.get_node_list() if n.get_name() not in ("node", "edge", "graph"))
    ['t0']
    >>> [(e.get_source(), e.get_destination()) for e in dot.get_edge_list()]
    [('s0', 't0'), ('s1', 't0'), ('s0', 's1')]
    """
    import pydot

    if show not in _SHOW:
        raise ValueError(f"show={show!r}; expected one of {_SHOW} (or name a slot or module with component=)")
    if rankdir not in ("LR", "TB", "RL", "BT"):
        raise ValueError(f"rankdir={rankdir!r}; expected 'LR' or 'TB'")
    view = _View(tg.graph)
    G = view.G
    chosen, title, notes = _select(view, show, component)
    whole = component is None and show == "all"

    dot = pydot.Dot(
        "tiegraph",
        graph_type="digraph",
        **_attrs(rankdir=rankdir, newrank="true", nodesep="0.25", ranksep="0.5", fontname=_FONT),
    )
    dot.set_node_defaults(**_attrs(fontname=_FONT, fontsize="11"))
    dot.set_edge_defaults(**_attrs(fontname=_FONT, fontsize="9"))

    # -- what to draw: slots, the modules holding them, collapsed runs
    collapsed: dict[str, list[list[str]]] = {}  # parent module -> runs of collapsed children
    hidden_modules: set[str] = set()
    if whole and collapse:
        keep = view.tied | view.declared_ends
        for m in view.modules:
            if m in hidden_modules:
                continue
            runs = _runs(view, m, keep)
            if runs:
                collapsed[m] = runs
                for r in runs:
                    for c in r:
                        hidden_modules.update(view.subtree(c))
        chosen = {s for s in chosen if view.owner[s] not in hidden_modules}
    if not whole:
        notes.extend(_hidden_note(view, chosen))

    clusters: dict[str, Any] = {}
    root = view.by_path.get("")

    def cluster_of(module: str) -> Any:
        """The (nested) cluster drawing ``module``; the root module has none (it is the picture)."""
        if module == root or module not in view.dot_id:
            return dot
        found = clusters.get(module)
        if found is not None:
            return found
        d = G.nodes[module]
        parent = view.parent.get(module)
        segment = (
            view.path(module)[len(view.path(parent)) + 1 :] if parent and view.path(parent) else d["path"]
        )
        wrapper = parent is not None and G.nodes[parent]["canonical"] == d["canonical"]
        is_embedding = module == G.graph.get("input_embedding_node")
        lines = [f"<B>{_esc(segment)}</B> {_small(_esc(d['cls']), size=10)}"]
        if is_embedding:
            lines.append(_small("input embedding", color="#8a6d00", size=10))
        elif wrapper:
            lines.append(_small("wrapper: not part of canonical names", size=9))
        cluster = pydot.Cluster(
            view.dot_id[module],
            **_attrs(
                label=_html(*lines, align="LEFT"),
                labeljust="l",
                style="rounded,dashed" if wrapper else "rounded,filled" if is_embedding else "rounded",
                color="#8a6d00" if is_embedding else "#9a9a9a",
                fillcolor="#fffbe6" if is_embedding else None,
                tooltip=_plain(f"{d['path'] or '(root)'}: {d['cls']}"),
            ),
        )
        clusters[module] = cluster
        # pydot types add_subgraph as taking Subgraph, but Graphviz clusters are pydot.Cluster
        (cluster_of(parent) if parent is not None else dot).add_subgraph(cluster)  # type: ignore[arg-type]
        return cluster

    used: set[str] = set()  # legend entries
    slot_order = [s for s in view.slots if s in chosen]
    # dot stacks what is added first at the bottom of an LR picture: add in reverse to read top-down
    for s in reversed(slot_order) if rankdir in ("LR", "RL") else slot_order:
        d = G.nodes[s]
        lines = [f"<B>{_esc(d['canonical'])}</B>"]
        if full_paths and d["name"] != d["canonical"]:
            lines.append(_small(_esc(d["name"])))
        facts = [_shape(d["shape"]), d["dtype"], d["device"]]
        if d.get("quantization"):
            facts.insert(2, d["quantization"])
        if d.get("placement") not in (None, d["device"]):
            facts.append(f"served from {d['placement']}")
        if d["tensor"] == "buffer":
            facts.append("buffer")
        elif not d["requires_grad"]:
            facts.append("frozen")
        lines.append(_small(_esc(" · ".join(facts))))
        embedding = s in view.embedding_slots
        used.add("embedding" if embedding else d["tensor"])
        fill = _EMBED_FILL if embedding else _SLOT_FILL if d["tensor"] == "parameter" else _BUFFER_FILL
        node = pydot.Node(
            view.dot_id[s],
            **_attrs(
                label=_html(*lines),
                shape="box",
                style="rounded,filled" if d["tensor"] == "parameter" else "rounded,filled,dashed",
                fillcolor=fill,
                color="#8a6d00" if embedding else "#444444",
                tooltip=_plain(d["name"]),
            ),
        )
        cluster_of(view.owner[s]).add_node(node)

    for parent, runs in collapsed.items():
        for r in runs:
            first, final = view.path(r[0]), view.path(r[-1])
            classes = sorted({G.nodes[c]["cls"] for c in r})
            per = len(view.slots_under(r[0]))
            label = _html(
                f"<B>{len(r)} identical layers collapsed</B>",
                _esc(f"{first} … {final.rsplit('.', 1)[-1]}"),
                _small(
                    _esc(f"{', '.join(classes)} × {len(r)} · {_plural(per, 'slot')} each · nothing shared")
                ),
            )
            node = pydot.Node(
                f"c{view.dot_id[r[0]][1:]}",
                **_attrs(
                    label=label,
                    shape="box3d",
                    style="filled",
                    fillcolor=_COLLAPSED_FILL,
                    color="#777777",
                    tooltip=_plain(f"{first} .. {final}: {len(r)} × {', '.join(classes)}"),
                ),
            )
            cluster_of(parent).add_node(node)
            used.add("collapsed")
        total = sum(len(r) for r in runs)
        notes.append(f"{_esc(view.path(parent))}: {total} identical layers collapsed")

    # -- storages and edges
    if storage:
        storages: dict[str, list[str]] = {}
        for s in slot_order:
            if s in view.storage and (not whole or s in view.tied or s in view.declared_ends):
                storages.setdefault(view.storage[s][0], []).append(s)
        for t, readers in storages.items():
            d = G.nodes[t]
            lines = [
                f"<B>storage {_esc(view.dot_id[t])}</B>",
                _small(_esc(f"{_size(int(d['nbytes']))} · {d['device']}")),
            ]
            dot.add_node(
                pydot.Node(
                    view.dot_id[t],
                    **_attrs(
                        label=_html(*lines),
                        shape="cylinder",
                        style="filled",
                        fillcolor=_STORAGE_FILL,
                        color="#555555",
                        tooltip=_plain(str(d["storage_id"])),
                    ),
                )
            )
            used.add("storage")
            for s in readers:
                _, offset, nbytes = view.storage[s]
                partial = offset != 0 or nbytes != int(d["nbytes"])
                dot.add_edge(
                    pydot.Edge(
                        view.dot_id[s],
                        view.dot_id[t],
                        **_attrs(
                            color="#9a9a9a",
                            arrowhead="none",
                            label=f"bytes {offset}..{offset + nbytes}" if partial else None,
                            fontcolor=_GRAY,
                            tooltip=_plain(f"{G.nodes[s]['name']} reads bytes {offset}..{offset + nbytes}"),
                        ),
                    )
                )

    def relation(a: str, b: str, color: str, style: str, tooltip: str, **extra: Any) -> None:
        """A slot-to-slot edge: drawn, but left out of the ranking (labels go in ``xlabel``: Graphviz
        crashes on labelled edges that do not constrain the layout)."""
        extra.setdefault("penwidth", "2")
        attrs = _attrs(color=color, style=style, constraint="false", tooltip=_plain(tooltip), **extra)
        dot.add_edge(pydot.Edge(view.dot_id[a], view.dot_id[b], **attrs))

    for (a, b), how in view.shares.items():
        if a in chosen and b in chosen:
            style, text = _SHARE_STYLE[how]
            names = f"{G.nodes[a]['name']} -- {G.nodes[b]['name']}"
            relation(a, b, _SHARE_COLOR, style, f"shares ({text}): {names}", penwidth="2.5", dir="none")
            used.add(f"shares:{how}")
    for u, v, data in view.declares:
        if u in chosen and v in chosen:
            status = str(data.get("status"))
            color, style, text = _DECLARED_STYLE.get(status, _DECLARED_STYLE["unresolved"])
            by = data.get("declared_by")
            tip = f"{text}: {G.nodes[u]['name']} -> {G.nodes[v]['name']}"
            tip += f" (declared by {by or '(root)'})" if by is not None else ""
            xlabel = None if status == "tied" else _plain(text)
            relation(u, v, color, style, tip, fontcolor=color, xlabel=xlabel)
            used.add(f"declares:{status}")
    by_name: dict[str, list[str]] = {}
    for s in slot_order:
        by_name.setdefault(G.nodes[s]["canonical"], []).append(s)
    for name, slots in by_name.items():
        heads: dict[int, str] = {}
        for s in slots:
            heads.setdefault(view.group[s], s)
        color, style, text = _SAME_NAME
        for a, b in itertools.pairwise(heads.values()):
            tip = f"{name}: two copies at different memory"
            relation(a, b, color, style, tip, fontcolor=color, dir="none", xlabel=text)
            used.add("same-name")

    unresolved = [d for d in G.graph.get("declared") or [] if d.get("status") == "unresolved"]
    if unresolved:
        notes.append(f"{_plural(len(unresolved), 'declared tie')} unresolved (the names match nothing)")
    root_cls = G.nodes[root]["cls"] if root is not None else "?"
    caption = [f'<FONT POINT-SIZE="14">{title}</FONT>', _small(_esc(f"model: {root_cls}"), size=10)]
    caption += [_small(n, size=10) for n in notes]
    dot.set("label", _html(*caption, align="LEFT"))
    dot.set("labelloc", "t")
    dot.set("labeljust", "l")
    table = _legend(used) if legend else None
    if table is not None:
        dot.add_node(pydot.Node("legend", **_attrs(shape="plaintext", label=table, margin="0")))
    return dot


def _legend(used: set[str]) -> str | None:
    """An HTML-table label explaining the node and edge styles that appear in the picture (or None)."""
    rows: list[str] = []

    def row(sample: str, text: str) -> None:
        rows.append(f'<TR>{sample}<TD ALIGN="LEFT">{_esc(text)}</TD></TR>')

    def box(fill: str, color: str, style: str = "rounded") -> str:
        return f'<TD BGCOLOR="{fill}" COLOR="{color}" BORDER="1" STYLE="{style}" WIDTH="36" HEIGHT="14"></TD>'

    def line(color: str, style: str) -> str:
        return f'<TD SIDES="B" BORDER="2" COLOR="{color}" STYLE="{style}" WIDTH="36" HEIGHT="10"></TD>'

    if "embedding" in used:
        row(box(_EMBED_FILL, "#8a6d00"), "slot of the input embedding")
    if "parameter" in used:
        row(box(_SLOT_FILL, "#444444"), "parameter slot")
    if "buffer" in used:
        row(box(_BUFFER_FILL, "#444444", "dashed"), "buffer slot")
    if "storage" in used:
        row(box(_STORAGE_FILL, "#555555"), "storage (cylinder)")
    if "collapsed" in used:
        row(box(_COLLAPSED_FILL, "#777777"), "identical layers, collapsed")
    for how, (style, text) in _SHARE_STYLE.items():
        if f"shares:{how}" in used:
            row(line(_SHARE_COLOR, style), f"shares: {text}")
    for status, (color, style, text) in _DECLARED_STYLE.items():
        if f"declares:{status}" in used:
            row(line(color, style), f"{text} (target → source)")
    if "same-name" in used:
        row(line(_SAME_NAME[0], _SAME_NAME[1]), "same canonical name, different memory")
    if "storage" in used:
        row(line("#9a9a9a", "solid"), "reads (bytes shown when partial)")
    if not rows:
        return None
    head = '<TR><TD COLSPAN="2" ALIGN="LEFT"><B>legend</B></TD></TR>'
    table = (
        '<TABLE BORDER="1" COLOR="#bbbbbb" CELLBORDER="0" CELLSPACING="3" CELLPADDING="2" STYLE="rounded">'
    )
    return "<" + table + head + "".join(rows) + "</TABLE>>"


def to_dot(tg: TieGraph, **options: Any) -> str:
    """The picture as DOT source; needs no Graphviz. Options as for :func:`to_pydot`.

    Examples
    --------
    >>> import torch, tiegraph
    >>> m = torch.nn.Module()
    >>> m.embed = torch.nn.Embedding(8, 4)
    >>> print(tiegraph.build_graph(m, input_embedding="embed").to_dot().splitlines()[0])
    digraph tiegraph {
    """
    return str(to_pydot(tg, **options).to_string())


def render(tg: TieGraph, format: str = "svg", **options: Any) -> bytes:
    """The picture rendered by Graphviz (through pygraphviz) as ``svg``, ``png`` or ``pdf`` bytes.

    Raises
    ------
    RenderError
        If pygraphviz is not installed (``pip install 'tiegraph[render]'``) or Graphviz fails.
    """
    return _draw(to_dot(tg, **options), format)


#: Run in a child process: a Graphviz crash (it segfaults on some layouts) must not take the caller (a
#: Jupyter kernel) down with it, and Graphviz's Fontconfig chatter stays out of the caller's stderr.
_DRAW = (
    "import sys, pygraphviz\n"
    "dot = sys.stdin.buffer.read().decode('utf-8')\n"
    "sys.stdout.buffer.write(pygraphviz.AGraph(string=dot).draw(format=sys.argv[1], prog='dot'))\n"
)


def _draw(dot: str, format: str, timeout: float = 120.0) -> bytes:
    """Render DOT with pygraphviz (``AGraph(string=dot).draw(format=..., prog="dot")``) in a child process."""
    import importlib.util

    if importlib.util.find_spec("pygraphviz") is None:
        raise RenderError(
            f"rendering {format.upper()} needs pygraphviz (its wheels bundle Graphviz): "
            "pip install 'tiegraph[render]'. to_dot() and write('x.dot') work without it."
        )
    try:
        done = subprocess.run(
            [sys.executable, "-c", _DRAW, format],
            input=dot.encode("utf-8"),
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise RenderError(f"could not run Graphviz (pygraphviz) to render {format.upper()}: {exc}") from exc
    if done.returncode != 0 or not done.stdout:
        errors = [
            line
            for line in done.stderr.decode("utf-8", "replace").splitlines()
            if line.strip() and "Fontconfig" not in line
        ]
        why = f"crashed (signal {-done.returncode})" if done.returncode < 0 else "failed"
        detail = errors[-1] if errors else "no output"
        raise RenderError(
            f"Graphviz {why} rendering {format.upper()}: {detail}. Check the pygraphviz install "
            "(pip install --force-reinstall 'tiegraph[render]'), or write DOT with to_dot() and run "
            f"'dot -T{format}' yourself."
        )
    return done.stdout


def to_svg(tg: TieGraph, **options: Any) -> str:
    """The picture rendered to SVG text by pygraphviz. Options as for :func:`to_pydot`.

    Raises
    ------
    RenderError
        If pygraphviz is missing (``pip install 'tiegraph[render]'``) or Graphviz fails.

    Examples
    --------
    >>> import torch, tiegraph
    >>> m = torch.nn.Module()
    >>> m.embed = torch.nn.Embedding(8, 4)
    >>> "<svg" in tiegraph.build_graph(m, input_embedding="embed").to_svg()
    True
    """
    return render(tg, "svg", **options).decode("utf-8")


# ---------------------------------------------------------------------------------------------- JSON


def _jsonable(value: Any) -> Any:
    """Tuples as lists (as JSON gives them back), recursively."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def to_json(tg: TieGraph) -> dict[str, Any]:
    """networkx node-link data of :attr:`TieGraph.graph`, plus ``"tiegraph": {"format": 1, ...}``.

    The dict is plain JSON data (tuples such as ``shape`` are lists): ``json.dumps`` it as is, and reload it
    with :func:`from_json` or read it with ``networkx.node_link_graph(data, edges="edges")``.

    Examples
    --------
    >>> import json, torch, tiegraph
    >>> m = torch.nn.Module()
    >>> m.embed = torch.nn.Embedding(8, 4)
    >>> data = tiegraph.build_graph(m, input_embedding="embed").to_json()
    >>> data["tiegraph"]["format"], [n["id"] for n in data["nodes"]]
    (1, ['m:', 'm:embed', 't:0', 's:embed.weight'])
    >>> json.loads(json.dumps(data)) == data
    True
    """
    from . import __version__

    data: dict[str, Any] = _jsonable(nx.node_link_data(tg.graph, edges="edges"))
    data["tiegraph"] = {"format": FORMAT_VERSION, "version": __version__}
    return data


def from_json(data: dict[str, Any] | str) -> TieGraph:
    """A :class:`TieGraph` from :func:`to_json` output (a dict, or its JSON text).

    Every query gives the same answers as on the graph that was written.

    Raises
    ------
    GraphFormatError
        If ``data`` was not written by :func:`to_json` (or by a newer, unknown format version).
    """
    from .graph import TieGraph

    if isinstance(data, str | bytes):
        data = json.loads(data)
    if not isinstance(data, dict) or not isinstance(data.get("tiegraph"), dict):
        raise GraphFormatError(
            "not tiegraph JSON: expected the dict TieGraph.to_json() returns (with a 'tiegraph' entry)"
        )
    version = data["tiegraph"].get("format")
    if version != FORMAT_VERSION:
        raise GraphFormatError(
            f"tiegraph JSON format {version!r} is not supported (this tiegraph reads format "
            f"{FORMAT_VERSION}); rebuild the graph or upgrade tiegraph"
        )
    body = {k: v for k, v in data.items() if k != "tiegraph"}
    try:
        G = nx.node_link_graph(body, directed=True, multigraph=True, edges="edges")
        for _, node in G.nodes(data=True):
            if node.get("kind") == "slot":
                node["shape"] = tuple(int(d) for d in node["shape"])
        return TieGraph.from_graph(G)
    except (KeyError, TypeError, ValueError, nx.NetworkXError) as exc:
        raise GraphFormatError(f"tiegraph JSON is damaged: {exc}") from exc


# ---------------------------------------------------------------------------------------------- files


def write(tg: TieGraph, path: str | os.PathLike[str], **options: Any) -> None:
    """Write the picture (``.dot``/``.gv``, ``.svg``, ``.png``, ``.pdf``) or the data (``.json``).

    Picture options are those of :func:`to_pydot`; ``.json`` takes none.

    Raises
    ------
    ValueError
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
    suffix = target.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(
            f"cannot write {str(path)!r}: unknown suffix {target.suffix!r}; use one of {', '.join(SUFFIXES)}"
        )
    if suffix == ".json":
        if options:
            raise ValueError(f"picture options {sorted(options)} do not apply to .json")
        target.write_text(json.dumps(to_json(tg), indent=1) + "\n", encoding="utf-8")
    elif suffix in (".dot", ".gv"):
        target.write_text(to_dot(tg, **options), encoding="utf-8")
    else:
        target.write_bytes(render(tg, suffix[1:], **options))


# ---------------------------------------------------------------------------------------------- Jupyter


def repr_svg(tg: TieGraph) -> str | None:
    """The default picture as SVG text for Jupyter, or None when it cannot be rendered (never raises)."""
    try:
        return to_svg(tg)
    except Exception:  # a display hook must not fail the cell
        return None


_XML_PROLOGUE = re.compile(r"\A\s*(<\?xml[^>]*>\s*)?(<!DOCTYPE[^>]*>\s*)?(<!--.*?-->\s*)*", re.S)


def summary(tg: TieGraph) -> list[str]:
    """The short summary lines shown by :func:`repr_html` (plain text)."""
    G = tg.graph
    root = G.nodes.get("m:", {}).get("cls", "?")
    groups = tg.tie_groups()
    lines = [
        f"{root}: {_plural(tg.num_modules, 'module path')}, {_plural(tg.num_slots, 'slot')}, "
        f"{_plural(len(groups), 'tie group')}"
    ]
    embedding = tg.input_embedding()
    if embedding is None:
        lines.append("no input embedding found")
    else:
        try:
            tied = tg.tied_to_input_embedding()
        except NoInputEmbeddingError:
            tied = []
        lines.append(f"input embedding {embedding}; tied to it: {', '.join(tied) if tied else 'nothing'}")
    return lines


def repr_html(tg: TieGraph) -> str:
    """A short HTML summary, followed by the picture when it can be rendered.

    Jupyter front ends prefer HTML to SVG, so the picture is embedded here too.

    Examples
    --------
    >>> import torch, tiegraph
    >>> m = torch.nn.Module()
    >>> m.embed = torch.nn.Embedding(8, 4)
    >>> print(tiegraph.build_graph(m, input_embedding="embed")._repr_html_().split("<div>")[1][:60])
    <b>TieGraph</b> Module: 2 module paths, 1 slot, 0 tie groups
    """
    lines = summary(tg)
    head = f"<b>TieGraph</b> {_esc(lines[0])}<br/>" + "<br/>".join(_esc(line) for line in lines[1:])
    svg = repr_svg(tg)
    picture = _XML_PROLOGUE.sub("", svg) if svg else "<i>(no picture: pip install 'tiegraph[render]')</i>"
    return f'<div class="tiegraph"><div>{head}</div>{picture}</div>'
