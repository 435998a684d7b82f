"""JSON I/O: networkx node-link data with tiegraph's attributes, and the way back to a graph.

:func:`to_json` writes :attr:`TieGraph.graph` as node-link data; :func:`from_json` reads it, checks it with
:func:`lint` (the graph's invariants, as code) and rebuilds the compact index with :func:`from_networkx`,
so every query answers as on the graph that was written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import networkx as nx

from ._declared import STATUSES, Declaration
from ._graph import NODE_KINDS, SHARE_HOWS, module_node
from ._index import Index
from ._placement import read_slot_facts
from ._records import set_graph_attrs
from ._storage import Components
from .errors import GraphFormatError

if TYPE_CHECKING:
    from ._graph import TieGraph

__all__ = ["FORMAT_VERSION", "from_json", "from_networkx", "lint", "to_json"]

#: Version of the JSON layout written by :func:`to_json`. Format 2: a slot's ``shape`` may be ``null`` and
#: its ``device`` ``"unknown"`` (the model changed before the graph read them; see the concepts page).
FORMAT_VERSION = 2
#: The versions :func:`from_json` reads: the current one and the one before it (format 1 never has unknowns).
FORMATS_READ = (1, 2)


def _jsonable(value: Any) -> Any:
    """Tuples as lists (as JSON gives them back), recursively."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def to_json(tg: TieGraph) -> dict[str, Any]:
    """networkx node-link data of :attr:`TieGraph.graph`, plus ``"tiegraph": {"format": 2, ...}``.

    The dict is plain JSON data (tuples such as ``shape`` are lists): ``json.dumps`` it as is, and reload it
    with :func:`from_json` or read it with ``networkx.node_link_graph(data, edges="edges")``.

    Examples
    --------
    >>> import json, torch, tiegraph
    >>> m = torch.nn.Module()
    >>> m.embed = torch.nn.Embedding(8, 4)
    >>> data = tiegraph.build_graph(m, input_embedding="embed").to_json()
    >>> data["tiegraph"]["format"], [n["id"] for n in data["nodes"]]
    (2, ['m:', 'm:embed', 't:0', 's:embed.weight'])
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
        If ``data`` was not written by :func:`to_json`, or by a format this version does not read
        (:data:`FORMATS_READ`: the current format and the previous one).
    """
    from ._graph import TieGraph

    if isinstance(data, str | bytes):
        try:
            data = json.loads(data)
        except ValueError as exc:
            raise GraphFormatError(f"not tiegraph JSON: the text is not JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("tiegraph"), dict):
        raise GraphFormatError(
            "not tiegraph JSON: expected the dict TieGraph.to_json() returns (with a 'tiegraph' entry)"
        )
    version = data["tiegraph"].get("format")
    if version not in FORMATS_READ:
        raise GraphFormatError(
            f"tiegraph JSON format {version!r} is not supported (this tiegraph reads formats "
            f"{', '.join(map(str, FORMATS_READ))}); rebuild the graph or upgrade tiegraph"
        )
    body = {k: v for k, v in data.items() if k != "tiegraph"}
    try:
        G = nx.node_link_graph(body, directed=True, multigraph=True, edges="edges")
        for _, node in G.nodes(data=True):
            if node.get("kind") == "slot":
                shape = node["shape"]
                node["shape"] = None if shape is None else tuple(int(d) for d in shape)
                if node.get("strides") is not None:
                    node["strides"] = tuple(int(d) for d in node["strides"])
        return TieGraph.from_graph(G)
    except (KeyError, TypeError, ValueError, nx.NetworkXError) as exc:
        raise GraphFormatError(f"tiegraph JSON is damaged: {exc}") from exc


def from_networkx(G: nx.MultiDiGraph) -> Index:
    """Rebuild the compact index from a graph made by :func:`to_networkx` (e.g. reloaded from JSON)."""
    lint(G)
    idx = Index()
    read = _Read()
    _read_modules_and_storages(G, idx, read)
    _read_slots(G, idx, read)
    _read_edges(G, idx, read)
    idx.set_canonical(read.m_canon, read.m_belongs, read.s_canon)
    for t, s in enumerate(read.first_slot):
        if idx.t_storage[t] >= 0:
            idx.layouts[s] = (idx.t_start[t], idx.t_stop[t], read.strides.get(s))
    idx.declared = [Declaration.from_dict(d) for d in G.graph.get("declared", [])]
    node = G.graph.get("input_embedding_node")
    if G.graph.get("input_embedding") is not None and node is not None:
        if node in read.module_number:
            idx.ie_module = read.module_number[node]
        idx.ie_slots = [read.slot_number[s] for s in G.graph.get("input_embedding_slots", [])]
    idx.ie_note = G.graph.get("input_embedding_note", "")
    reserved = {
        "input_embedding",
        "input_embedding_node",
        "input_embedding_slots",
        "input_embedding_note",
        "declared",
    }
    set_graph_attrs(idx, {k: v for k, v in G.graph.items() if k not in reserved})
    read_slot_facts(idx, read.facts)
    return idx


@dataclass
class _Read:
    """What :func:`from_networkx` numbers and collects on its way through the nodes and edges."""

    module_number: dict[str, int] = field(default_factory=dict)
    slot_number: dict[str, int] = field(default_factory=dict)
    storage_number: dict[str, int] = field(default_factory=dict)
    m_canon: list[str] = field(default_factory=list)
    m_belongs: list[str] = field(default_factory=list)
    s_canon: list[str] = field(default_factory=list)
    objects: dict[int, int] = field(default_factory=dict)  # tensor object number -> tensor number
    first_slot: list[int] = field(default_factory=list)  # tensor number -> its first slot
    strides: dict[int, tuple[int, ...]] = field(default_factory=dict)
    facts: list[tuple[str | None, str | None, str | None]] = field(default_factory=list)  # placement, ...


def _read_modules_and_storages(G: nx.MultiDiGraph, idx: Index, read: _Read) -> None:
    for node, data in G.nodes(data=True):
        kind = data["kind"]
        if kind == "module":
            read.module_number[node] = len(idx.m_path)
            idx.m_path.append(data["path"])
            read.m_canon.append(data["canonical"])
            read.m_belongs.append(data["belongs"])
            idx.m_cls.append(data["cls"])
            idx.m_object.append(int(data["object"]))
            idx.m_parent.append(-1)
            idx.m_name.append("")
        elif kind == "storage":
            read.storage_number[node] = len(idx.st_id)
            idx.st_id.append(data["storage_id"])
            idx.st_device.append(data["device"])
            idx.st_nbytes.append(int(data["nbytes"]))


def _read_slots(G: nx.MultiDiGraph, idx: Index, read: _Read) -> None:
    for node, data in G.nodes(data=True):
        if data["kind"] != "slot":
            continue
        s = read.slot_number[node] = len(idx.s_name)
        idx.s_name.append(data["name"])
        read.s_canon.append(data["canonical"])
        idx.s_owner.append(read.module_number[module_node(data["owner"])])
        idx.s_attr.append(data["attr"])
        idx.s_param.append(data["tensor"] == "parameter")
        obj = int(data["object"])
        t = read.objects.get(obj)
        if t is not None:  # the same tensor object as an earlier slot's (what view.tensor().number tells)
            idx.same_as[s] = read.first_slot[t]
        else:
            read.first_slot.append(s)
            t = read.objects[obj] = len(idx.t_dtype)
            idx.t_dtype.append(data["dtype"])
            idx.t_shape.append(None if data["shape"] is None else tuple(data["shape"]))
            idx.t_device.append(data["device"])
            idx.t_grad.append(bool(data["requires_grad"]))
            idx.t_storage.append(-1)
            idx.t_start.append(0)
            idx.t_stop.append(0)
        idx.s_tensor.append(t)
        if data.get("strides") is not None:
            read.strides[s] = tuple(int(d) for d in data["strides"])
        read.facts.append((data.get("placement"), data.get("execution_device"), data.get("quantization")))


def _read_edges(G: nx.MultiDiGraph, idx: Index, read: _Read) -> None:
    """Parents, storage extents and shares from the edges; the tie groups from the shares."""
    module_number, slot_number = read.module_number, read.slot_number
    parts = Components[int]()
    for u, v, kind, data in G.edges(keys=True, data=True):
        if kind == "child":
            idx.m_parent[module_number[v]] = module_number[u]
            idx.m_name[module_number[v]] = data["name"]
        elif kind == "reads":
            t = idx.s_tensor[slot_number[u]]
            idx.t_storage[t] = read.storage_number[v]
            idx.t_start[t] = int(data["offset"])
            idx.t_stop[t] = int(data["offset"]) + int(data["nbytes"])
        elif kind == "shares":
            a, b = slot_number[u], slot_number[v]
            idx.shares.append((a, b, data["how"]))
            parts.union(idx.s_tensor[a], idx.s_tensor[b])
    idx.t_root = list(map(parts.find, range(len(idx.t_dtype))))
    idx.fill_slot_roots()


def lint(G: nx.MultiDiGraph) -> None:
    """Check the graph's invariants; raise ``GraphFormatError`` naming the first node or edge that breaks one.

    Every node has a known kind; every edge's key is its kind and joins the right node kinds; every slot
    has exactly one owner and reads at most one storage; every module but the root has one parent; the
    ``declares`` edges are exactly the resolved declarations listed in ``G.graph["declared"]``.

    Raises
    ------
    GraphFormatError
        Naming the first node or edge that breaks an invariant.
    TypeError
        If ``G`` is not a networkx ``MultiDiGraph`` (the kind :attr:`TieGraph.graph` is).
    """
    if not isinstance(G, nx.MultiDiGraph):
        kind = type(G)
        raise TypeError(
            f"expected a networkx MultiDiGraph (TieGraph.graph), got {kind.__module__}.{kind.__qualname__}"
        )
    _lint_kinds(G)
    _lint_tree(G)
    edges = sorted((u, v) for u, v, key in G.edges(keys=True) if key == "declares")
    listed = sorted(
        ("s:" + d["target_path"], "s:" + d["source_path"])
        for d in G.graph.get("declared") or []
        if int(d.get("target_slot", -1)) >= 0 and int(d.get("source_slot", -1)) >= 0
    )
    if edges != listed:
        raise GraphFormatError(
            f"declares edges {edges} do not match the resolved declarations in G.graph['declared'] {listed}"
        )


def _lint_kinds(G: nx.MultiDiGraph) -> None:
    """Every node's kind is known; every edge's key is its kind and joins the right node kinds."""
    ends = {
        "child": ("module", "module"),
        "owns": ("module", "slot"),
        "reads": ("slot", "storage"),
        "shares": ("slot", "slot"),
        "declares": ("slot", "slot"),
    }
    for node, kind in G.nodes(data="kind"):
        if kind not in NODE_KINDS:
            raise GraphFormatError(f"node {node!r} has kind {kind!r}; expected one of {NODE_KINDS}")
    for u, v, key, data in G.edges(keys=True, data=True):
        want = ends.get(key)
        if want is None or data.get("kind") != key:
            raise GraphFormatError(f"edge {u!r} -> {v!r} has key {key!r} and kind {data.get('kind')!r}")
        got = (G.nodes[u]["kind"], G.nodes[v]["kind"])
        if got != want:
            raise GraphFormatError(f"{key} edge {u!r} -> {v!r} joins {got}, expected {want}")
        if key == "shares" and data.get("how") not in SHARE_HOWS:
            raise GraphFormatError(f"shares edge {u!r} -> {v!r} has how={data.get('how')!r}")
        if key == "declares" and data.get("status") not in STATUSES:
            raise GraphFormatError(f"declares edge {u!r} -> {v!r} has status={data.get('status')!r}")


def _lint_tree(G: nx.MultiDiGraph) -> None:
    """Every slot has one owner and reads at most one storage; one root module, every other one parent."""
    roots = 0
    for node, data in G.nodes(data=True):
        incoming = [k for _, _, k in G.in_edges(node, keys=True)]
        if data["kind"] == "slot":
            if incoming.count("owns") != 1:
                owners = incoming.count("owns")
                raise GraphFormatError(f"slot {node!r} has {owners} owners; expected exactly one")
            reads = sum(1 for _, _, k in G.out_edges(node, keys=True) if k == "reads")
            if reads > 1:
                raise GraphFormatError(f"slot {node!r} reads {reads} storages; expected at most one")
        elif data["kind"] == "module":
            parents = incoming.count("child")
            roots += parents == 0
            if parents > 1:
                raise GraphFormatError(f"module path {node!r} has {parents} parents; expected one")
    if G.number_of_nodes() and roots != 1:
        raise GraphFormatError(f"the graph has {roots} root modules; expected one")
