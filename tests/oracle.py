"""The oracle: every query answered again by walking the networkx graph, never the index.

:class:`tiegraph.TieGraph` is the one query engine (it answers from its compact index, and the pictures
and reports ask it); :func:`invariants.check_invariants` checks it against these free functions on every
graph the suite builds, for every slot and every module path, the root ``""`` included. Each function
takes the graph ``G`` from :attr:`TieGraph.graph`.
"""

from __future__ import annotations

from collections.abc import Iterable

import networkx as nx

from tiegraph.errors import NoInputEmbeddingError, PathNotFoundError

__all__ = [
    "component",
    "input_embedding",
    "resolve_slots",
    "tie_groups",
    "tied_to_input_embedding",
    "unused_slots",
]


def _shares_components(G: nx.MultiDiGraph) -> dict[str, int]:
    """Component number of every slot node under the ``shares`` relation."""
    slots = [n for n, kind in G.nodes(data="kind") if kind == "slot"]
    H = nx.Graph()
    H.add_nodes_from(slots)
    H.add_edges_from((u, v) for u, v, kind in G.edges(keys=True) if kind == "shares")
    number: dict[str, int] = {}
    for i, members in enumerate(nx.connected_components(H)):
        for node in members:
            number[node] = i
    return number


def unused_slots(G: nx.MultiDiGraph) -> set[str]:
    """Slot nodes the forward does not use: the ``original_module`` a PEFT ``modules_to_save`` copy stands in
    for (the active adapter's, when it has one here), and the other adapters' copies."""
    prefixes: list[str] = []
    for wrapper in G.graph.get("modules_to_save") or []:
        active, adapters = wrapper["active"], wrapper["adapters"]
        used = active[0] if active and set(active) <= set(adapters) else None
        base = wrapper["path"] + "." if wrapper["path"] else ""
        if used is not None:
            prefixes.append(base + "original_module.")
        prefixes += [f"{base}modules_to_save.{name}." for name in adapters if name != used]
    if not prefixes:
        return set()
    return {n for n, d in G.nodes(data=True) if d["kind"] == "slot" and d["name"].startswith(tuple(prefixes))}


def _used_components(G: nx.MultiDiGraph) -> dict[str, int]:
    """Component number of every slot node over the slots the forward uses (unused ones each alone).

    Sharing is a property of tensors: two used slots share when their tensors are joined by ``shares`` edges
    through tensors some used slot holds, whichever slot the edges were recorded on.
    """
    unused = unused_slots(G)
    if not unused:
        return _shares_components(G)
    edges = [(u, v) for u, v, kind in G.edges(keys=True) if kind == "shares"]
    tied = {n for edge in edges for n in edge}
    obj = {n: G.nodes[n]["object"] for n in tied}
    alive = {obj[n] for n in tied if n not in unused}
    T = nx.Graph()
    T.add_nodes_from(alive)
    T.add_edges_from((obj[u], obj[v]) for u, v in edges if obj[u] in alive and obj[v] in alive)
    of_object = {o: i for i, members in enumerate(nx.connected_components(T)) for o in members}
    slots = [n for n, kind in G.nodes(data="kind") if kind == "slot"]
    number: dict[str, int] = {}
    for i, node in enumerate(slots, start=len(of_object)):
        used_and_tied = node in tied and node not in unused
        number[node] = of_object[obj[node]] if used_and_tied else i
    return number


def format_groups(groups: Iterable[list[tuple[str, str]]], full_paths: bool) -> list[list[str]]:
    """Turn groups of (full, canonical) slot names into the sorted public answer."""
    out: set[tuple[str, ...]] = set()
    for members in groups:
        names = sorted({full if full_paths else canon for full, canon in members})
        if len(names) >= 2:
            out.add(tuple(names))
    return [list(group) for group in sorted(out)]


def tie_groups(G: nx.MultiDiGraph, *, full_paths: bool = False) -> list[list[str]]:
    """Groups of two or more slots that share memory, computed from the ``shares`` edges.

    Examples
    --------
    >>> import torch, tiegraph
    >>> m = torch.nn.Module()
    >>> m.a = torch.nn.Linear(2, 2)
    >>> m.b = torch.nn.Linear(2, 2)
    >>> m.b.weight = m.a.weight
    >>> tie_groups(tiegraph.build_graph(m).graph)
    [['a.weight', 'b.weight']]
    """
    groups: dict[int, list[tuple[str, str]]] = {}
    for node, number in _used_components(G).items():
        data = G.nodes[node]
        groups.setdefault(number, []).append((data["name"], data["canonical"]))
    return format_groups(groups.values(), full_paths)


def input_embedding(G: nx.MultiDiGraph, *, full_paths: bool = False) -> str | None:
    """Full or canonical path of the input embedding, or None when the model has none."""
    path = G.graph.get("input_embedding")
    if path is None:
        return None
    node = G.nodes[G.graph["input_embedding_node"]]
    if full_paths:
        return str(path)
    return str(node["belongs"] if node["kind"] == "module" else node["canonical"])


def _inside(G: nx.MultiDiGraph) -> tuple[set[str], str]:
    """Slot nodes inside the input embedding and the primary path."""
    if G.graph.get("input_embedding") is None:
        raise NoInputEmbeddingError(G.graph.get("input_embedding_note") or "no input embedding")
    return set(G.graph["input_embedding_slots"]), G.graph["input_embedding_node"]


def tied_to_input_embedding(G: nx.MultiDiGraph, *, full_paths: bool = False) -> list[str]:
    """Module paths that own a slot in the component of the input embedding, other than the embedding; a
    slot of the root module (path '') named by its slot name."""
    inside, primary = _inside(G)
    number = _used_components(G)
    wanted = {number[s] for s in inside - unused_slots(G)}
    pairs: set[tuple[str, str]] = set()
    for node, n in number.items():
        if n in wanted and node not in inside:
            pairs.update((u, node) for u, _, kind in G.in_edges(node, keys=True) if kind == "owns")
    if G.nodes[primary]["kind"] == "slot":
        embedding = next(u for u, _, kind in G.in_edges(primary, keys=True) if kind == "owns")
        pairs = {(o, s) for o, s in pairs if o != embedding}
    else:  # every other path of the embedding's module object is the embedding too, and what lies under it
        obj = G.nodes[primary]["object"]
        aliases = [
            d["path"]
            for n, d in G.nodes(data=True)
            if d["kind"] == "module" and d["object"] == obj and n != primary
        ]
        pairs = {
            (o, s)
            for o, s in pairs
            if not any(G.nodes[o]["path"] == a or G.nodes[o]["path"].startswith(a + ".") for a in aliases)
        }
    if full_paths:
        return sorted({G.nodes[o]["path"] or G.nodes[s]["name"] for o, s in pairs})
    own = input_embedding(G)
    return sorted({G.nodes[o]["belongs"] or G.nodes[s]["canonical"] for o, s in pairs} - {own})


def resolve_slots(G: nx.MultiDiGraph, name: str) -> list[str]:
    """Slot nodes named by a full or canonical slot name, or under a full or canonical module path: those
    the forward uses, or all of them when it uses none."""
    found = _named_slots(G, name)
    unused = unused_slots(G)
    return [n for n in found if n not in unused] or found


def _named_slots(G: nx.MultiDiGraph, name: str) -> list[str]:
    node = "s:" + name
    if node in G and G.nodes[node]["kind"] == "slot":
        return [node]
    slots = [n for n, d in G.nodes(data=True) if d["kind"] == "slot" and d["canonical"] == name]
    if slots:
        return slots
    modules = [
        n
        for n, d in G.nodes(data=True)
        if d["kind"] == "module" and (d["path"] == name or d["canonical"] == name or d["belongs"] == name)
    ]
    if not modules:
        raise PathNotFoundError(f"{name!r} names no slot or module of the model")
    found: set[str] = set()
    for module in modules:
        # the module and everything under it, by following child edges (aliases included)
        stack = [module]
        seen = set()
        while stack:
            m = stack.pop()
            if m in seen:
                continue
            seen.add(m)
            for _, v, kind in G.out_edges(m, keys=True):
                if kind == "owns":
                    found.add(v)
                elif kind == "child":
                    stack.append(v)
    return sorted(found)


def component(G: nx.MultiDiGraph, name: str, *, full_paths: bool = False) -> list[str]:
    """The slots that share with a slot, or with any slot of a module, including those slots themselves; only
    slots the forward uses, unless the name reaches none of them (then from memory, over every slot)."""
    slots = resolve_slots(G, name)
    number = _shares_components(G) if set(slots) <= unused_slots(G) else _used_components(G)
    wanted = {number[s] for s in slots}
    key = "name" if full_paths else "canonical"
    return sorted({G.nodes[n][key] for n, i in number.items() if i in wanted})
