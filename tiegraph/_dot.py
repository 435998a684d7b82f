"""The picture as DOT: nodes, clusters and edges with tiegraph's own ids and styles, and the legend.

Written with pydot, tiegraph's own node ids and ``label=`` (names contain ``.`` and may contain ``:``, which
pydot reads as a port; a node called ``node`` would vanish), and only the attributes in
:data:`DOT_ATTRIBUTES`.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

from ._picture import (
    GRAY,
    SHOW,
    Picture,
    esc,
    hidden_note,
    html_label,
    plain,
    runs,
    select,
    shape_text,
    size_text,
    small,
)
from ._text import plural
from .errors import ConfigurationError

if TYPE_CHECKING:
    import pydot

    from ._graph import TieGraph

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
        "dir", "arrowhead", "arrowsize", "constraint", "minlen", "xlabel", "tailport", "headport",
    }
)  # fmt: skip

FONT = "Helvetica,Arial,sans-serif"
SHARE_STYLE = {  # how -> (style, legend text)
    "same": ("solid", "same object"),
    "view": ("dashed", "view of the same storage"),
    "overlap": ("dotted", "overlapping bytes"),
}
SHARE_COLOR = "#1f4e9c"
DECLARED_STYLE = {  # status -> (color, style, edge label)
    "tied": ("#2e7d32", "solid", "declared: tied"),
    "not-tied": ("#c62828", "dashed", "declared, NOT tied"),
    "gated-off": ("#9e9e9e", "dashed", "declared, gated off"),
    "unresolved": ("#ef6c00", "dotted", "declared, unresolved"),
}
SAME_NAME = ("#c62828", "dotted", "same name, not shared")
EMBED_FILL = "#fff3b0"
SLOT_FILL = "#ffffff"
BUFFER_FILL = "#eef3fb"
STORAGE_FILL = "#e8e8e8"
COLLAPSED_FILL = "#f4f4f4"

#: Graphviz layout directions ``rankdir`` accepts.
RANKDIRS = ("LR", "TB", "RL", "BT")


def attrs(**values: Any) -> dict[str, Any]:
    """DOT attributes, checked against the allow-list; None values are dropped."""
    unknown = set(values) - DOT_ATTRIBUTES
    if unknown:
        raise ConfigurationError(f"DOT attributes {sorted(unknown)} are not in tiegraph's allow-list")
    return {k: v for k, v in values.items() if v is not None}


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
        A slot or module name (full or canonical; ``""`` is the whole model): draw the tie groups of its
        slots instead.
    full_paths
        Under each canonical slot name, also print its full path when the two differ.
    storage
        Draw the storage each shown tie-group slot reads (a cylinder, labelled by the dtype, shape and
        size of what is stored there, and its device).
    collapse
        With ``show="all"``, collapse runs of two or more identical numbered children that hold nothing
        tied (``model.layers.0..79``).
    legend
        Add a legend of the node shapes and edge styles used in the picture.
    rankdir
        Graphviz layout direction: ``"LR"``, ``"TB"``, ``"RL"`` or ``"BT"``.

    Returns
    -------
    pydot.Dot
        With the node ids described in :mod:`tiegraph.export`. Besides the picked slots, the picture
        includes the other end of each declared tie touching them and every slot with the same canonical
        name (an untied ``modules_to_save`` copy, a reloaded copy), so an untie is visible.

    Raises
    ------
    ConfigurationError
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

    if show not in SHOW:
        raise ConfigurationError(
            f"show={show!r}; expected one of {SHOW} (or name a slot or module with component=)"
        )
    if rankdir not in RANKDIRS:
        raise ConfigurationError(f"rankdir={rankdir!r}; expected one of {', '.join(map(repr, RANKDIRS))}")
    pic = Picture(tg)
    chosen, title, notes = select(pic, show, component)
    drawing = _Drawing(pic, chosen, notes, rankdir, whole=component is None and show == "all")
    collapsed = drawing.collapse() if drawing.whole and collapse else {}
    if not drawing.whole:
        notes.extend(hidden_note(pic, drawing.chosen))
    drawing.add_slots(full_paths)
    drawing.add_collapsed(collapsed)
    if storage:
        drawing.add_storages()
    drawing.add_relations()
    drawing.add_caption(title)
    table = legend_table(drawing.used) if legend else None
    if table is not None:
        drawing.dot.add_node(pydot.Node("legend", **attrs(shape="plaintext", label=table, margin="0")))
    return drawing.dot


class _Drawing:
    """One picture being drawn: the pydot graph, its clusters, and the legend entries used so far."""

    def __init__(
        self, pic: Picture, chosen: set[int], notes: list[str], rankdir: str, *, whole: bool
    ) -> None:
        import pydot

        self.pydot, self.pic, self.view = pydot, pic, pic.view
        self.chosen, self.notes, self.rankdir, self.whole = chosen, notes, rankdir, whole
        self.dot: pydot.Dot = pydot.Dot(
            "tiegraph",
            graph_type="digraph",
            **attrs(rankdir=rankdir, newrank="true", nodesep="0.25", ranksep="0.5", fontname=FONT),
        )
        self.dot.set_node_defaults(**attrs(fontname=FONT, fontsize="11"))
        self.dot.set_edge_defaults(**attrs(fontname=FONT, fontsize="9"))
        self.clusters: dict[int, Any] = {}
        self.root = pic.by_path.get("")
        self.used: set[str] = set()  # legend entries
        self.slot_order: list[int] = []
        # the side of a slot away from its storage: declared and same-name edges leave and enter there, so
        # they curve beside a straight share edge between the same slots (not under it), and their labels
        # sit in the free space outside the module boxes, not on a box border
        self.aside = {"LR": "w", "RL": "e", "TB": "n", "BT": "s"}[rankdir]

    def collapse(self) -> dict[int, list[list[int]]]:
        """Parent module -> runs of identical children collapsed; their slots leave ``chosen``."""
        pic = self.pic
        collapsed: dict[int, list[list[int]]] = {}
        hidden_modules: set[int] = set()
        keep = pic.tied | pic.declared_ends
        for m in pic.modules:
            if m in hidden_modules:
                continue
            found = runs(pic, m, keep)
            if found:
                collapsed[m] = found
                for r in found:
                    for c in r:
                        hidden_modules.update(pic.subtree(c))
        self.chosen = {s for s in self.chosen if pic.owner[s] not in hidden_modules}
        return collapsed

    def cluster_of(self, module: int | None) -> Any:
        """The (nested) cluster drawing ``module``; the root module has none (it is the picture)."""
        if module is None or module == self.root:
            return self.dot
        found = self.clusters.get(module)
        if found is not None:
            return found
        pic, view = self.pic, self.view
        parent = pic.parent.get(module)
        path = pic.path(module)
        segment = path[len(pic.path(parent)) + 1 :] if parent is not None and pic.path(parent) else path
        cls = view.module_cls(module)
        wrapper = parent is not None and view.module_canonical(parent) == view.module_canonical(module)
        is_embedding = module == pic.embedding_module
        lines = [f"<B>{esc(segment)}</B> {small(esc(cls), size=10)}"]
        if is_embedding:
            lines.append(small("input embedding", color="#8a6d00", size=10))
        elif wrapper:
            lines.append(small("wrapper: not part of canonical names", size=9))
        lines += pic.copy_notes(module)
        cluster = self.pydot.Cluster(
            f"m{module}",
            **attrs(
                label=html_label(*lines, align="LEFT"),
                labeljust="l",
                style="rounded,dashed" if wrapper else "rounded,filled" if is_embedding else "rounded",
                color="#8a6d00" if is_embedding else "#9a9a9a",
                fillcolor="#fffbe6" if is_embedding else None,
                tooltip=plain(f"{path or '(root)'}: {cls}"),
            ),
        )
        self.clusters[module] = cluster
        # pydot types add_subgraph as taking Subgraph, but Graphviz clusters are pydot.Cluster
        self.cluster_of(parent).add_subgraph(cluster)
        return cluster

    def add_slots(self, full_paths: bool) -> None:
        """A box per chosen slot, in its module's cluster."""
        pic = self.pic
        self.slot_order = [s for s in pic.slots if s in self.chosen]
        # dot stacks what is added first at the bottom of an LR picture: add in reverse to read top-down
        for s in reversed(self.slot_order) if self.rankdir in ("LR", "RL") else self.slot_order:
            parameter = self.view.is_parameter(s)
            embedding = s in pic.embedding_slots
            # the embedding's fill replaces the parameter look; a buffer stays dashed, so it keeps its entry
            self.used.add("embedding" if embedding and parameter else "parameter" if parameter else "buffer")
            if embedding:
                self.used.add("embedding")
            fill = EMBED_FILL if embedding else SLOT_FILL if parameter else BUFFER_FILL
            node = self.pydot.Node(
                f"s{s}",
                **attrs(
                    label=html_label(*self._slot_lines(s, parameter, full_paths)),
                    shape="box",
                    style="rounded,filled" if parameter else "rounded,filled,dashed",
                    fillcolor=fill,
                    color="#8a6d00" if embedding else "#444444",
                    tooltip=plain(pic.name(s)),
                ),
            )
            self.cluster_of(pic.owner[s]).add_node(node)

    def _slot_lines(self, s: int, parameter: bool, full_paths: bool) -> list[str]:
        """A slot box's label: canonical name, full path when it differs, then what its tensor is."""
        view = self.view
        canonical, name = self.pic.canonical(s), self.pic.name(s)
        t = view.tensor(s)
        lines = [f"<B>{esc(canonical)}</B>"]
        if full_paths and name != canonical:
            lines.append(small(esc(name)))
        facts = [shape_text(t.shape), t.dtype, t.device]
        placement, quantization = view.placement(s), view.quantization(s)
        if quantization:
            facts.insert(2, quantization)
        if placement not in (None, t.device):
            facts.append(f"served from {placement}")
        if not parameter:
            facts.append("buffer")
        elif not t.requires_grad:
            facts.append("frozen")
        lines.append(small(esc(" · ".join(facts))))
        return lines

    def add_collapsed(self, collapsed: dict[int, list[list[int]]]) -> None:
        """A stacked box per collapsed run of identical layers, and a caption note per parent."""
        pic = self.pic
        for parent, found in collapsed.items():
            for r in found:
                first, final = pic.path(r[0]), pic.path(r[-1])
                classes = sorted({self.view.module_cls(c) for c in r})
                per = len(pic.slots_under(r[0]))
                label = html_label(
                    f"<B>{len(r)} identical layers collapsed</B>",
                    esc(f"{first} … {final.rsplit('.', 1)[-1]}"),
                    small(
                        esc(f"{', '.join(classes)} × {len(r)} · {plural(per, 'slot')} each · nothing shared")
                    ),
                )
                node = self.pydot.Node(
                    f"c{r[0]}",
                    **attrs(
                        label=label,
                        shape="box3d",
                        style="filled",
                        fillcolor=COLLAPSED_FILL,
                        color="#777777",
                        tooltip=plain(f"{first} .. {final}: {len(r)} × {', '.join(classes)}"),
                    ),
                )
                self.cluster_of(parent).add_node(node)
                self.used.add("collapsed")
            total = sum(len(r) for r in found)
            self.notes.append(f"{esc(pic.path(parent))}: {total} identical layers collapsed")

    def add_storages(self) -> None:
        """A cylinder per storage the shown tie-group slots read, and a ``reads`` edge from each."""
        pic, pydot = self.pic, self.pydot
        storages: dict[int, list[int]] = {}
        for s in self.slot_order:
            if s in pic.storage and (not self.whole or s in pic.tied or s in pic.declared_ends):
                storages.setdefault(pic.storage[s][0], []).append(s)
        for number, readers in storages.items():
            label, device, nbytes = self.view.storage_facts(number)
            self.dot.add_node(
                pydot.Node(
                    f"t{number}",
                    **attrs(
                        label=html_label(*_storage_lines(pic, readers, device, nbytes)),
                        shape="cylinder",
                        style="filled",
                        fillcolor=STORAGE_FILL,
                        color="#555555",
                        tooltip=plain(label),
                    ),
                )
            )
            self.used.add("storage")
            for s in readers:
                _, offset, length = pic.storage[s]
                partial = offset != 0 or length != nbytes
                self.dot.add_edge(
                    pydot.Edge(
                        f"s{s}",
                        f"t{number}",
                        **attrs(
                            color="#9a9a9a",
                            arrowhead="none",
                            label=f"bytes {offset}..{offset + length}" if partial else None,
                            fontcolor=GRAY,
                            tooltip=plain(f"{pic.name(s)} reads bytes {offset}..{offset + length}"),
                        ),
                    )
                )

    def relation(self, a: int, b: int, color: str, style: str, tooltip: str, **extra: Any) -> None:
        """A slot-to-slot edge, drawn but left out of the ranking.

        Its label goes in ``xlabel``: Graphviz crashes on labelled edges that do not constrain the layout.
        """
        extra.setdefault("penwidth", "2")
        values = attrs(color=color, style=style, constraint="false", tooltip=plain(tooltip), **extra)
        self.dot.add_edge(self.pydot.Edge(f"s{a}", f"s{b}", **values))

    def add_relations(self) -> None:
        """Shares, declared ties, and same-name copies at different memory, between drawn slots."""
        pic, chosen, aside = self.pic, self.chosen, self.aside
        for (a, b), how in pic.shares.items():
            if a in chosen and b in chosen:
                style, text = SHARE_STYLE[how]
                names = f"{pic.name(a)} -- {pic.name(b)}"
                self.relation(
                    a, b, SHARE_COLOR, style, f"shares ({text}): {names}", penwidth="2.5", dir="none"
                )
                self.used.add(f"shares:{how}")
        for d in pic.declares:
            u, v = d.target_slot, d.source_slot
            if u in chosen and v in chosen:
                color, style, text = DECLARED_STYLE.get(d.tie.status, DECLARED_STYLE["unresolved"])
                tip = f"{text}: {pic.name(u)} -> {pic.name(v)} (declared by {d.tie.declared_by or '(root)'})"
                xlabel = None if d.tie.status == "tied" else plain(text)
                self.relation(
                    u, v, color, style, tip, fontcolor=color, xlabel=xlabel, tailport=aside, headport=aside
                )
                self.used.add(f"declares:{d.tie.status}")
        by_name: dict[str, list[int]] = {}
        for s in self.slot_order:
            by_name.setdefault(pic.canonical(s), []).append(s)
        color, style, text = SAME_NAME
        for name, slots in by_name.items():
            heads: dict[int, int] = {}
            for s in slots:
                heads.setdefault(pic.group[s], s)
            for a, b in itertools.pairwise(heads.values()):
                tip = f"{name}: two copies at different memory"
                self.relation(
                    a,
                    b,
                    color,
                    style,
                    tip,
                    fontcolor=color,
                    dir="none",
                    xlabel=text,
                    tailport=aside,
                    headport=aside,
                )
                self.used.add("same-name")

    def add_caption(self, title: str) -> None:
        """The picture's title, its model class and the notes, top left."""
        view = self.view
        unresolved = [d for d in view.declarations if d.tie.status == "unresolved"]
        if unresolved:
            self.notes.append(
                f"{plural(len(unresolved), 'declared tie')} unresolved (the names match nothing)"
            )
        root_cls = view.module_cls(self.root) if self.root is not None else "?"
        caption = [f'<FONT POINT-SIZE="14">{title}</FONT>', small(esc(f"model: {root_cls}"), size=10)]
        caption += [small(n, size=10) for n in self.notes]
        self.dot.set("label", html_label(*caption, align="LEFT"))
        self.dot.set("labelloc", "t")
        self.dot.set("labeljust", "l")


def _storage_lines(pic: Picture, readers: list[int], device: str, nbytes: int) -> list[str]:
    """A storage's label: what is stored there (dtype and shape of a slot reading all of it), size, device."""
    view = pic.view
    whole = [s for s in readers if pic.storage[s][1] == 0 and pic.storage[s][2] == nbytes]
    facts = view.tensor(whole[0] if whole else readers[0])
    what = f"{facts.dtype} {shape_text(facts.shape)}" if whole else f"{facts.dtype}, read in parts"
    return ["<B>storage</B>", small(esc(f"{what} · {size_text(nbytes)} · {device}"))]


def legend_table(used: set[str]) -> str | None:
    """An HTML-table label explaining the node and edge styles that appear in the picture (or None)."""

    def box(fill: str, color: str, style: str = "rounded") -> str:
        return f'<TD BGCOLOR="{fill}" COLOR="{color}" BORDER="1" STYLE="{style}" WIDTH="36" HEIGHT="14"></TD>'

    def line(color: str, style: str) -> str:
        return f'<TD SIDES="B" BORDER="2" COLOR="{color}" STYLE="{style}" WIDTH="36" HEIGHT="10"></TD>'

    entries = [  # (legend entry, sample, text), in the legend's order
        ("embedding", box(EMBED_FILL, "#8a6d00"), "slot of the input embedding"),
        ("parameter", box(SLOT_FILL, "#444444"), "parameter slot"),
        ("buffer", box(BUFFER_FILL, "#444444", "dashed"), "buffer slot (dashed)"),
        ("storage", box(STORAGE_FILL, "#555555"), "storage (cylinder)"),
        ("collapsed", box(COLLAPSED_FILL, "#777777"), "identical layers, collapsed"),
        *[
            (f"shares:{how}", line(SHARE_COLOR, style), f"shares: {text}")
            for how, (style, text) in SHARE_STYLE.items()
        ],
        *[
            (f"declares:{status}", line(color, style), f"{text} (target → source)")
            for status, (color, style, text) in DECLARED_STYLE.items()
        ],
        ("same-name", line(SAME_NAME[0], SAME_NAME[1]), "same canonical name, different memory"),
        ("storage", line("#9a9a9a", "solid"), "reads (bytes shown when partial)"),
    ]
    rows = [
        f'<TR>{sample}<TD ALIGN="LEFT">{esc(text)}</TD></TR>' for key, sample, text in entries if key in used
    ]
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
