"""``check_invariants(model, tg)``: run on every graph the suite builds (like torch.fx's lint passes).

:class:`tiegraph.TieGraph` is the one query engine; :mod:`oracle` answers every query again by walking the
networkx graph, and the two must agree for every slot and every module path (the root ``""`` included),
in canonical and in full names, before and after a JSON round trip.
"""

from __future__ import annotations

import oracle
import torch

import tiegraph
from tiegraph._graph import TieGraph
from tiegraph.errors import NoInputEmbeddingError
from tiegraph.export import lint

#: Above this many module paths, component() is compared on a sample (the oracle walks the graph per name).
MAX_COMPONENT_NAMES = 300


def _answers(source: object) -> dict[str, object]:
    """Every whole-model query's answer, from a TieGraph (the engine) or a networkx graph (the oracle)."""
    out: dict[str, object] = {}
    for full in (False, True):
        if isinstance(source, TieGraph):
            out[f"groups{full}"] = source.tie_groups(full_paths=full)
            out[f"embedding{full}"] = source.input_embedding(full_paths=full)
            try:
                out[f"tied{full}"] = source.tied_to_input_embedding(full_paths=full)
            except NoInputEmbeddingError:
                out[f"tied{full}"] = "none"
        else:
            out[f"groups{full}"] = oracle.tie_groups(source, full_paths=full)
            out[f"embedding{full}"] = oracle.input_embedding(source, full_paths=full)
            try:
                out[f"tied{full}"] = oracle.tied_to_input_embedding(source, full_paths=full)
            except NoInputEmbeddingError:
                out[f"tied{full}"] = "none"
    return out


def _names(G: object, tg: TieGraph) -> list[str]:
    """Every slot name and module path (full and canonical) to ask component() about; sampled when huge."""
    slots = [d["name"] for _, d in G.nodes(data=True) if d["kind"] == "slot"]  # type: ignore[attr-defined]
    modules = [d["path"] for _, d in G.nodes(data=True) if d["kind"] == "module"]  # type: ignore[attr-defined]
    canon = [d["canonical"] for _, d in G.nodes(data=True) if d["kind"] in ("slot", "module")]  # type: ignore[attr-defined]
    names = list(dict.fromkeys(["", *modules, *slots, *canon]))
    if len(names) > MAX_COMPONENT_NAMES:
        tied = [n for group in tg.tie_groups(full_paths=True) for n in group]
        step = len(names) // MAX_COMPONENT_NAMES + 1
        names = list(dict.fromkeys(["", *tied, *names[::step], *modules[:20], *modules[-20:]]))
    return names


def check_invariants(model: torch.nn.Module, tg: tiegraph.TieGraph) -> None:
    """The graph is well formed, names what torch names, and every query agrees with the oracle's."""
    G = tg.graph
    lint(G)
    slots = [n for n, d in G.nodes(data=True) if d["kind"] == "slot"]
    expected = [n for n, _ in model.named_parameters(remove_duplicate=False)]
    expected += [n for n, _ in model.named_buffers(remove_duplicate=False)]
    assert sorted(G.nodes[s]["name"] for s in slots) == sorted(expected)
    modules = [d["path"] for _, d in G.nodes(data=True) if d["kind"] == "module"]
    assert modules == [n for n, _ in model.named_modules(remove_duplicate=False)]
    engine = _answers(tg)
    assert engine == _answers(G), "TieGraph and the oracle disagree"
    reloaded = TieGraph.from_graph(G)
    assert engine == _answers(reloaded), "from_graph round trip changed an answer"
    assert repr(tg) == repr(reloaded)
    assert f"{len(tg.tie_groups())} tie group" in repr(tg), "the repr counts tie groups as tie_groups() does"
    for name in _names(G, tg):
        for full in (False, True):
            got = tg.component(name, full_paths=full)
            assert got == oracle.component(G, name, full_paths=full), (name, full)
    for group in tg.tie_groups(full_paths=True):
        for name in group:
            assert set(group) <= set(tg.component(name, full_paths=True))
