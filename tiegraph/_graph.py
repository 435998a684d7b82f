"""The parameter-sharing graph: node and edge kinds, :class:`TieGraph`, and its invariants.

Nodes (ids are strings: ``m:<module path>``, ``s:<slot name>``, ``t:<storage number>``):

- ``module``: ``path`` (full), ``canonical``, ``belongs`` (canonical path of the model module it belongs
  to: adapters belong to their tuner layer), ``cls``, ``object`` (modules registered at several paths share
  it).
- ``slot``: ``name`` (full), ``canonical``, ``owner`` (full module path), ``attr``, ``tensor``
  (``parameter`` or ``buffer``), ``dtype``, ``shape``, ``device``, ``requires_grad``, ``object``,
  ``placement`` (where the bytes the model computes with live: a device, ``disk``, or ``meta``),
  ``execution_device`` and ``quantization`` (a format such as ``torchao.Int8Tensor``, or None); a
  non-contiguous tensor on a storage several tensor objects read also has ``strides`` (in elements).
- ``storage``: ``storage_id``, ``device``, ``nbytes``.

Edges (a :class:`networkx.MultiDiGraph`; the edge key is its kind):

- ``child`` module -> submodule (``name``), ``owns`` module -> slot (``attr``), ``reads`` slot -> storage
  (``offset``, ``nbytes``: the byte extent), ``shares`` slot -> slot (``how``: ``same``, ``view``,
  ``overlap``), ``declares`` target slot -> source slot (``declared_by``, ``status``).
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from ._compare import verdicts
from ._copies import forward_of
from ._index import Index
from ._placement import place, slot_facts
from ._records import graph_attrs
from ._view import GraphView, resolve_slots
from .errors import NoInputEmbeddingError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    import networkx as nx
    from torch import nn

    from ._acceptance import Acceptance
    from ._audit import Finding
    from ._copies import Forward
    from ._declared import DeclaredTie


__all__ = ["EDGE_KINDS", "NODE_KINDS", "TieGraph", "amend", "to_networkx", "view_of"]

NODE_KINDS = ("module", "slot", "storage")
EDGE_KINDS = ("child", "owns", "reads", "shares", "declares")
SHARE_HOWS = ("same", "view", "overlap")


class TieGraph:
    """What a model really shares, and the questions you ask of it.

    Build one with :func:`tiegraph.build_graph`. Names are canonical by default (as the model's own code
    and its checkpoints name them, wrapper segments removed); pass ``full_paths=True`` for the names of
    the (possibly wrapped) object you gave.

    Examples
    --------
    >>> import torch, tiegraph
    >>> class Tiny(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.embed = torch.nn.Embedding(10, 4)
    ...         self.head = torch.nn.Linear(4, 10, bias=False)
    ...         self.head.weight = self.embed.weight
    ...     def get_input_embeddings(self):
    ...         return self.embed
    >>> tg = tiegraph.build_graph(torch.compile(Tiny()))
    >>> tg.input_embedding(), tg.input_embedding(full_paths=True)
    ('embed', '_orig_mod.embed')
    >>> tg.tied_to_input_embedding(), tg.tied_to_input_embedding(full_paths=True)
    (['head'], ['_orig_mod.head'])
    >>> tg.component("head.weight")
    ['embed.weight', 'head.weight']
    """

    def __init__(self, index: Index) -> None:
        self._index = index
        self._graph: nx.MultiDiGraph | None = None
        # (weak: the view holds the graph, so a strong cache would be a cycle the collector has to find)
        self._view_cache: weakref.ref[GraphView] | None = None
        self._svg: str | None = None  # the default picture, rendered once (Jupyter asks for HTML and SVG)
        self._svg_done = False

    # ------------------------------------------------------------------ the graph
    @property
    def graph(self) -> nx.MultiDiGraph:
        """The networkx graph, built from the index on first use and cached."""
        if self._graph is None:
            self._graph = to_networkx(self._index)
        return self._graph

    @classmethod
    def from_graph(cls, G: nx.MultiDiGraph) -> TieGraph:
        """A TieGraph from a graph made by :attr:`graph` (e.g. reloaded from JSON)."""
        from ._json import from_networkx

        tg = cls(from_networkx(G))
        tg._graph = G
        return tg

    # ------------------------------------------------------------------ queries
    def _forward(self) -> Forward:
        """Which PEFT copies the forward uses, and the tie groups of the slots it uses (see ``_copies``)."""
        return forward_of(self._index)

    def input_embedding(self, *, full_paths: bool = False) -> str | None:
        """Path of the input embedding (canonical by default), or None when none was found.

        For a model whose ``get_input_embeddings()`` returns a tensor, this is that tensor's slot name.
        """
        idx = self._index
        if idx.ie_module >= 0:
            return idx.m_path[idx.ie_module] if full_paths else idx.belongs_of(idx.ie_module)
        if idx.ie_slots:
            s = idx.ie_slots[0]
            return idx.s_name[s] if full_paths else idx.slot_canon_of(s)
        return None

    def tied_to_input_embedding(self, *, full_paths: bool = False) -> list[str]:
        """Module paths tied to the input embedding, sorted (canonical by default).

        Every module path (aliases included) owning a slot that shares memory, directly or through its tie
        group, with a slot inside the input embedding; the embedding's own paths (every path of its module
        object, such as PEFT's ``word_embeddings``) and paths under them excluded. A slot of the root
        module (whose path is ``''``) is named by its slot name instead. Where PEFT's ``modules_to_save``
        keeps an ``original_module`` and copies, only the copy the forward uses counts, at either end.

        Raises
        ------
        NoInputEmbeddingError
            If no input embedding was found; pass ``input_embedding=`` to :func:`build_graph`.
        """
        idx = self._index
        inside = idx.ie_slots
        if idx.ie_module < 0 and not inside:
            raise NoInputEmbeddingError(
                idx.ie_note or "the model has no input embedding; pass input_embedding="
            )
        # One loop, no Forward made when the model holds no PEFT copy: then every slot is used and the tie
        # groups in use are the index's own (what Forward gives in that case).
        if idx.modules_to_save:
            forward = self._forward()
            groups, root_of, unused = forward.groups, forward.root_of, forward.unused
        else:
            groups, root_of, unused = idx.groups(), idx.root_of_slot, frozenset()
        owner_of, aliased = idx.owner_of, idx.under_alias_of_input_embedding
        embedding = owner_of(inside[0]) if idx.ie_module < 0 else -1  # a tensor's owner is not a target
        # a slot of the root module is named by itself: the root's path is '' (a buffer on the model)
        m_name: Callable[[int], str]
        if full_paths:
            m_name, s_name = idx.m_path.__getitem__, idx.slot_name_of
        else:
            m_name, s_name = idx.belongs_of, idx.slot_canon_of
        found: set[str] = set()
        roots: set[int] = set()
        members = set(inside)
        for slot in inside:
            if slot in unused:
                continue
            root = root_of(slot)
            if root in roots:
                continue
            roots.add(root)
            for s in groups.get(root, ()):
                o = owner_of(s)
                if s not in members and o != embedding and not aliased(o):
                    found.add(m_name(o) or s_name(s))
        if not full_paths:
            found.discard(self.input_embedding() or "")  # (never None here: the embedding was found)
        return sorted(found)

    def tie_groups(self, *, full_paths: bool = False) -> list[list[str]]:
        """Every group of two or more slots that share memory: slot names, each group sorted, groups sorted.

        In canonical form, slots that name the same place (a shared module seen through two wrapper
        paths) count once, and a group left with one name is dropped. Only slots the forward uses count:
        the ``original_module`` a PEFT ``modules_to_save`` copy stands in for, and inactive copies, do not.
        """
        idx = self._index
        key = idx.slot_name_of if full_paths else idx.slot_canon_of
        found: set[tuple[str, ...]] = set()
        for slots in self._forward().groups.values():
            names = sorted({key(s) for s in slots})
            if len(names) >= 2:
                found.add(tuple(names))
        return [list(group) for group in sorted(found)]

    def component(self, name: str, *, full_paths: bool = False) -> list[str]:
        """The slots sharing memory with a slot, or with any slot of a module (those slots included).

        ``name`` is a full or canonical slot name or module path. Only slots the forward uses count (see
        :meth:`tie_groups`); a full path that reaches only slots the forward does not use (under an
        ``original_module`` a copy stands in for, or an inactive copy) asks about that copy itself, and is
        answered from memory over every slot.

        Raises
        ------
        PathNotFoundError
            If ``name`` names no slot or module; the message lists the nearest names.
        """
        idx = self._index
        forward = self._forward()
        slots = resolve_slots(idx, name)
        key = idx.s_name.__getitem__ if full_paths else idx.slot_canon_of
        if not forward.unused:
            slot_roots = idx.s_root
            roots = {slot_roots[s] for s in slots}
            return sorted({key(s) for s, root in enumerate(slot_roots) if root in roots})
        if forward.unused.issuperset(slots):  # a copy the forward does not use, named by its full path
            memory = idx.s_root
            roots = {memory[s] for s in slots}
            return sorted({key(s) for s, root in enumerate(memory) if root in roots})
        roots = {forward.root_of(s) for s in slots}
        return sorted({key(s) for s in range(idx.num_slots) if forward.root_of(s) in roots})

    # ------------------------------------------------------------------ declared ties and audit
    # (implemented in declared.py / audit.py; these methods only delegate)
    def declared_ties(self) -> list[DeclaredTie]:
        """Every declared tie found in the model, with its status (``tied``, ``not-tied``, ...)."""
        from ._declared import declared_ties

        return declared_ties(self)

    def audit(self) -> list[Finding]:
        """Findings where the declarations, the config and the memory disagree."""
        from ._audit import audit

        return audit(self)

    def report(self, *, accept: Iterable[Acceptance | str] = ()) -> str:
        """A compact human-readable table of tie groups, declarations and findings (see :func:`report`).

        ``accept``: ``"KIND[:PATH]"`` acceptances to mark in the findings (a finding kind, or a kind and a
        slot, a module it lies under, or a glob such as ``"storage-only-tie:*.weight"``).
        """
        from ._report import report

        return report(self, accept=accept)

    def __str__(self) -> str:
        return self.report()

    # ------------------------------------------------------------------ exports
    # (implemented in export.py; these methods only delegate)
    def to_pydot(self, **options: Any) -> Any:
        """The picture as a ``pydot.Dot`` (see :func:`tiegraph.export.to_pydot` for options)."""
        from .export import to_pydot

        return to_pydot(self, **options)

    def to_dot(self, **options: Any) -> str:
        """The picture as DOT source."""
        from .export import to_dot

        return to_dot(self, **options)

    def to_svg(self, **options: Any) -> str:
        """The picture rendered to SVG by pygraphviz."""
        from .export import to_svg

        return to_svg(self, **options)

    def to_json(self) -> dict[str, Any]:
        """networkx node-link data plus tiegraph's attributes; reload with :meth:`from_json`."""
        from .export import to_json

        return to_json(self)

    @classmethod
    def from_json(cls, data: dict[str, Any] | str) -> TieGraph:
        """A TieGraph from :meth:`to_json` output (a dict, or its JSON text)."""
        from .export import from_json

        return from_json(data)

    def write(self, path: Any, **options: Any) -> None:
        """Write ``.dot``, ``.svg``, ``.png``, ``.pdf`` or ``.json``, chosen by the suffix."""
        from .export import write

        write(self, path, **options)

    def _repr_svg_(self) -> str | None:
        """The default picture as SVG for Jupyter (None without a renderer), rendered once per graph."""
        if not self._svg_done:
            from ._render import repr_svg

            self._svg = repr_svg(self)
            self._svg_done = True
        return self._svg

    def _repr_html_(self) -> str:
        """A short summary and the default picture (the same rendering as :meth:`_repr_svg_`)."""
        from ._render import repr_html

        return repr_html(self, self._repr_svg_() or "")

    # ------------------------------------------------------------------ summaries
    @property
    def num_slots(self) -> int:
        """How many slots (named parameters and buffers, aliases included) the model has."""
        return self._index.num_slots

    @property
    def num_modules(self) -> int:
        """How many module paths (aliases included) the model has."""
        return len(self._index.m_path)

    def __repr__(self) -> str:
        groups = len(self.tie_groups())
        embedding = self.input_embedding()
        return (
            f"<TieGraph: {self.num_modules} module paths, {self.num_slots} slots, {groups} tie group"
            f"{'' if groups == 1 else 's'}, input embedding {embedding!r}>"
        )


def view_of(tg: TieGraph) -> GraphView:
    """The read-only internal interface the audit, report and exports read (see :mod:`tiegraph._view`).

    Made on first use and cached on the graph (weakly: the view holds the graph) until :func:`amend`.
    """
    view = tg._view_cache() if tg._view_cache is not None else None
    if view is None:
        view = GraphView(tg, tg._index)
        tg._view_cache = weakref.ref(view)
    return view


def amend(
    tg: TieGraph,
    *,
    values_of: nn.Module | None = None,
    device_map: Mapping[str, str] | None = None,
    checkpoint: dict[str, Any] | None = None,
    disk_files: bool = True,
) -> None:
    """The one way to add to a built graph; drops every cache derived from it.

    What a build leaves for later and can be added legitimately: ``values_of``, the model the graph
    was built from, unchanged since, whose declared pairs that do not share memory get their value
    verdicts (:mod:`tiegraph._values`); ``device_map``, module name -> device name, the placement
    :func:`tiegraph.check_device_map` judges (``disk_files``: disk entries are served from a file per
    parameter, as accelerate's ``dispatch_model`` writes them, not from a checkpoint's entries);
    ``checkpoint``, the findings :func:`tiegraph._checkpoint.check_checkpoint` read from a folder.
    Afterwards the networkx graph, the view and the pictures are made afresh from the amended index, so
    no cached picture shows the graph as it was before.

    Raises :class:`~tiegraph.errors.ConfigurationError` (changing nothing) when ``device_map`` leaves a
    slot unplaced.
    """
    index = tg._index
    if device_map is not None:
        place(index, device_map, disk_files)
    if values_of is not None:
        index.declared = verdicts(index, values_of)
    if checkpoint is not None:
        index.checkpoint = checkpoint
    index.forward = None
    tg._graph = None
    tg._view_cache = None
    tg._svg, tg._svg_done = None, False


def module_node(path: str) -> str:
    return "m:" + path


def _slot_node(name: str) -> str:
    return "s:" + name


def _strides(idx: Index, s: int) -> dict[str, tuple[int, ...]]:
    """A slot node's ``strides``: only for a non-contiguous tensor on a storage several objects read."""
    layout = idx.layouts.get(s)
    return {} if layout is None or layout[2] is None else {"strides": layout[2]}


def to_networkx(idx: Index) -> nx.MultiDiGraph:
    """Build the public networkx graph from the index alone (no walk over the model)."""
    import networkx as nx  # here, not at import: the drop-ins in tiegraph.compat import with torch alone

    G = nx.MultiDiGraph()
    m_nodes = [module_node(p) for p in idx.m_path]
    s_nodes = [_slot_node(n) for n in idx.s_name]
    _add_nodes(G, idx, m_nodes, s_nodes)
    _add_edges(G, idx, m_nodes, s_nodes)
    if idx.ie_module >= 0:
        G.graph["input_embedding"] = idx.m_path[idx.ie_module]
        G.graph["input_embedding_node"] = m_nodes[idx.ie_module]
    elif idx.ie_slots:
        G.graph["input_embedding"] = idx.s_name[idx.ie_slots[0]]
        G.graph["input_embedding_node"] = s_nodes[idx.ie_slots[0]]
    else:
        G.graph["input_embedding"] = None
    G.graph["input_embedding_slots"] = [s_nodes[s] for s in idx.ie_slots]
    G.graph["input_embedding_note"] = idx.ie_note
    G.graph["declared"] = [d.to_dict() for d in idx.declared]
    G.graph.update(graph_attrs(idx))
    return G


def _add_nodes(G: nx.MultiDiGraph, idx: Index, m_nodes: list[str], s_nodes: list[str]) -> None:
    """Module nodes, then storage nodes, then slot nodes (the order JSON keeps)."""
    for i, node in enumerate(m_nodes):
        G.add_node(
            node,
            kind="module",
            path=idx.m_path[i],
            canonical=idx.m_canon[i],
            belongs=idx.m_belongs[i],
            cls=idx.m_cls[i],
            object=idx.m_object[i],
        )
    for i, node in enumerate(idx.st_id):
        G.add_node(
            f"t:{i}", kind="storage", storage_id=node, device=idx.st_device[i], nbytes=idx.st_nbytes[i]
        )
    facts = slot_facts(idx)
    for s, node in enumerate(s_nodes):
        t = idx.s_tensor[s]
        G.add_node(
            node,
            kind="slot",
            name=idx.s_name[s],
            canonical=idx.s_canon[s],
            owner=idx.m_path[idx.s_owner[s]],
            attr=idx.s_attr[s],
            tensor="parameter" if idx.s_param[s] else "buffer",
            dtype=idx.t_dtype[t],
            shape=idx.t_shape[t],
            device=idx.t_device[t],
            requires_grad=idx.t_grad[t],
            object=t,
            placement=facts[s][0],
            execution_device=facts[s][1],
            quantization=facts[s][2],
            **_strides(idx, s),
        )


def _add_edges(G: nx.MultiDiGraph, idx: Index, m_nodes: list[str], s_nodes: list[str]) -> None:
    """``child``; ``owns`` and ``reads`` per slot; ``shares``; ``declares`` (the order JSON keeps)."""
    for i, parent in enumerate(idx.m_parent):
        if parent >= 0:
            G.add_edge(m_nodes[parent], m_nodes[i], key="child", kind="child", name=idx.m_name[i])
    for s, owner in enumerate(idx.s_owner):
        G.add_edge(m_nodes[owner], s_nodes[s], key="owns", kind="owns", attr=idx.s_attr[s])
        t = idx.s_tensor[s]
        storage = idx.t_storage[t]
        if storage >= 0:
            start, stop = idx.t_start[t], idx.t_stop[t]
            G.add_edge(
                s_nodes[s], f"t:{storage}", key="reads", kind="reads", offset=start, nbytes=stop - start
            )
    for a, b, how in idx.shares:
        G.add_edge(s_nodes[a], s_nodes[b], key="shares", kind="shares", how=how)
    for d in idx.declared:
        if d.resolved:
            attrs = {k: v for k, v in d.to_dict().items() if k not in ("target_slot", "source_slot")}
            G.add_edge(
                s_nodes[d.target_slot], s_nodes[d.source_slot], key="declares", kind="declares", **attrs
            )
