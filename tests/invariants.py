"""``check_invariants(model, tg)``: run on every graph the suite builds (like torch.fx's lint passes)."""

from __future__ import annotations

import torch

import tiegraph
from tiegraph import queries
from tiegraph.errors import NoInputEmbeddingError
from tiegraph.graph import TieGraph, lint


def _answers(source: object) -> dict[str, object]:
    """Every query's answer, from a TieGraph (index fast path) or a networkx graph (reference)."""
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
            out[f"groups{full}"] = queries.tie_groups(source, full_paths=full)
            out[f"embedding{full}"] = queries.input_embedding(source, full_paths=full)
            try:
                out[f"tied{full}"] = queries.tied_to_input_embedding(source, full_paths=full)
            except NoInputEmbeddingError:
                out[f"tied{full}"] = "none"
    return out


def check_invariants(model: torch.nn.Module, tg: tiegraph.TieGraph) -> None:
    """The graph is well formed, names what torch names, and every query agrees with the graph's."""
    G = tg.graph
    lint(G)
    slots = [n for n, d in G.nodes(data=True) if d["kind"] == "slot"]
    expected = [n for n, _ in model.named_parameters(remove_duplicate=False)]
    expected += [n for n, _ in model.named_buffers(remove_duplicate=False)]
    assert sorted(G.nodes[s]["name"] for s in slots) == sorted(expected)
    modules = [d["path"] for _, d in G.nodes(data=True) if d["kind"] == "module"]
    assert modules == [n for n, _ in model.named_modules(remove_duplicate=False)]
    fast = _answers(tg)
    assert fast == _answers(G), "index and graph queries disagree"
    assert fast == _answers(TieGraph.from_graph(G)), "from_graph round trip changed an answer"
    for group in tg.tie_groups(full_paths=True):
        for name in group:
            assert tg.component(name, full_paths=True) == queries.component(G, name, full_paths=True)
            assert set(group) <= set(tg.component(name, full_paths=True))
