"""DOT, SVG and JSON export: structure (node and edge sets, labels, parse-back), never SVG bytes."""

from __future__ import annotations

import html
import json
import re
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import networkx as nx
import pydot
import pygraphviz
import pytest
import torch
from conftest import BuildFn
from models import MODELS, PEFT_MODELS, seeded
from torch import nn

import tiegraph
from tiegraph import _dot as dot_room
from tiegraph import _json as json_room
from tiegraph import _render as render_room
from tiegraph import export
from tiegraph._declared import Declaration, DeclaredTie
from tiegraph.errors import PathNotFoundError
from tiegraph.export import DOT_ATTRIBUTES, GraphFormatError, RenderError

# ------------------------------------------------------------------------------------------ helpers


def _unquote(value: Any) -> str:
    text = str(value)
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] == '"' else text


def _text(label: Any) -> str:
    """The visible text of a plain or HTML-like label."""
    text = _unquote(label)
    if text.startswith("<") and text.endswith(">"):
        text = re.sub(r"<BR[^>]*>", "\n", text[1:-1])
        text = html.unescape(re.sub(r"<[^>]+>", "", text))
    return text


def _subgraphs(g: pydot.Graph) -> Iterator[pydot.Graph]:
    for sub in g.get_subgraph_list():
        yield sub
        yield from _subgraphs(sub)


def _nodes(g: pydot.Graph) -> dict[str, dict[str, str]]:
    """Every real node (not the node/edge/graph defaults) in the DOT graph and its clusters."""
    out: dict[str, dict[str, str]] = {}
    for sub in [g, *_subgraphs(g)]:
        for node in sub.get_node_list():
            if node.get_name() not in ("node", "edge", "graph"):
                out[node.get_name()] = {k: _unquote(v) for k, v in node.get_attributes().items()}
    return out


def _edges(g: pydot.Graph) -> list[tuple[str, str, dict[str, str]]]:
    out = []
    for sub in [g, *_subgraphs(g)]:
        for e in sub.get_edge_list():
            attrs = {k: _unquote(v) for k, v in e.get_attributes().items()}
            out.append((str(e.get_source()), str(e.get_destination()), attrs))
    return out


def _parse(dot: str) -> pydot.Dot:
    """DOT text parsed back by pydot (pyparsing: slow on big graphs, so used on small ones)."""
    graphs = pydot.graph_from_dot_data(dot)
    assert graphs is not None
    assert len(graphs) == 1
    return graphs[0]


def _dot(tg: tiegraph.TieGraph, **options: Any) -> pydot.Dot:
    """The picture as written, checked to parse back with Graphviz (fast, C) on the way."""
    dot: pydot.Dot = tg.to_pydot(**options)
    text = dot.to_string()
    assert pygraphviz.AGraph(string=text).number_of_nodes() == len(_nodes(dot))
    return dot


def _ids(tg: tiegraph.TieGraph) -> dict[str, str]:
    """tiegraph node -> DOT id, by the documented numbering (i-th module/slot node, storage t:<i>)."""
    out: dict[str, str] = {}
    counts = {"module": 0, "slot": 0}
    for node, kind in tg.graph.nodes(data="kind"):
        if kind == "storage":
            out[node] = "t" + node[2:]
        else:
            out[node] = f"{kind[0]}{counts[kind]}"
            counts[kind] += 1
    return out


def _slot_ids(tg: tiegraph.TieGraph, names: list[str]) -> set[str]:
    ids = _ids(tg)
    return {ids["s:" + n] for n in names}


def _drawn_slots(g: pydot.Dot) -> set[str]:
    return {n for n in _nodes(g) if re.fullmatch(r"s\d+", n)}


def _tiny_tied() -> nn.Module:
    m = nn.Module()
    m.embed = nn.Embedding(8, 4)
    m.head = nn.Linear(4, 8, bias=False)
    m.head.weight = m.embed.weight
    return m


class _Awkward(nn.Module):
    """Module names DOT and pydot trip on: ``node`` (a DOT keyword), ``a:b`` (a port), ``edge``, ``graph``."""

    def __init__(self) -> None:
        super().__init__()
        node, ab, edge = nn.Embedding(8, 4), nn.Linear(4, 8, bias=False), nn.Linear(4, 8, bias=False)
        self.add_module("node", node)
        self.add_module("a:b", ab)
        self.add_module("edge", edge)
        self.add_module("graph", nn.Linear(4, 4))
        ab.weight = node.weight
        edge.weight = node.weight

    def get_input_embeddings(self) -> nn.Module:
        return self.get_submodule("node")


@pytest.fixture(scope="module")
def llama70b() -> tiegraph.TieGraph:
    """A 70B-shaped tied Llama on meta: nothing allocated, 80 decoder layers."""
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model(
        "llama",
        num_hidden_layers=80,
        hidden_size=8192,
        intermediate_size=28672,
        num_attention_heads=64,
        num_key_value_heads=8,
        vocab_size=128256,
        tie_word_embeddings=True,
    )
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        model = AutoModelForCausalLM.from_config(cfg)
    return tiegraph.build_graph(model)


# ------------------------------------------------------------------------------------------ DOT


def test_default_picture_is_the_embedding_tie_group(build: BuildFn) -> None:
    """A tied Llama: two slots, one storage, one shares edge, a declared tie, and nothing else."""
    tg = build(seeded(MODELS["llama-tied"]))
    g = _dot(tg)
    ids = _ids(tg)
    embed, head = ids["s:model.embed_tokens.weight"], ids["s:lm_head.weight"]
    assert _drawn_slots(g) == {embed, head}
    assert set(_nodes(g)) == {embed, head, "t0", "legend"}
    edges = {(u, v) for u, v, _ in _edges(g)}
    assert {(embed, "t0"), (head, "t0")} <= edges
    assert (embed, head) in edges or (head, embed) in edges
    labels = {n: _text(a.get("label", "")) for n, a in _nodes(g).items()}
    assert labels[embed].splitlines()[0] == "model.embed_tokens.weight"
    assert labels[head].splitlines()[0] == "lm_head.weight"
    assert "64×16" in labels[head]
    caption = _text(g.get("label"))
    assert "input embedding model.embed_tokens" in caption
    assert "not drawn: 12 slots" in caption
    clusters = {sub.get_name(): _text(sub.get("label")) for sub in _subgraphs(g)}
    assert clusters[f"cluster_{ids['m:model.embed_tokens']}"].startswith("embed_tokens Embedding")
    assert "input embedding" in clusters[f"cluster_{ids['m:model.embed_tokens']}"]


def test_dot_parses_back_with_pydot_and_graphviz(build: BuildFn) -> None:
    tg = build(PEFT_MODELS["modules-to-save-lm-head"]())
    dot = tg.to_dot()
    parsed = _nodes(_parse(dot))
    agraph = pygraphviz.AGraph(string=dot)
    assert set(agraph.nodes()) == set(parsed)
    for name, attrs in parsed.items():
        label = agraph.get_node(name).attr["label"]  # pygraphviz gives an HTML label without its <...>
        if attrs.get("label", "").startswith("<"):
            label = f"<{label}>"
        assert _text(label) == _text(attrs.get("label", "")), name
    assert len(agraph.edges()) == len(_edges(_parse(dot)))


def test_awkward_names_survive(build: BuildFn) -> None:
    """``node`` would vanish and ``a:b`` would become a port if they were DOT ids; they are labels here."""
    tg = build(_Awkward())
    assert tg.tie_groups() == [["a:b.weight", "edge.weight", "node.weight"]]
    for show in ("embedding", "all"):
        dot = tg.to_dot(show=show)
        g = _parse(dot)
        labels = {_text(a.get("label", "")).splitlines()[0] for a in _nodes(g).values() if "label" in a}
        assert {"node.weight", "a:b.weight", "edge.weight"} <= labels
        agraph = pygraphviz.AGraph(string=dot)
        assert set(agraph.nodes()) == set(_nodes(g))
        assert not any(":" in n for n in agraph.nodes())
    assert "<svg" in tg.to_svg()


def test_only_allowed_attributes(build: BuildFn) -> None:
    for tg in (
        build(PEFT_MODELS["lora-ensure-weight-tying"]()),
        build(MODELS["llama-declared-but-copied"]()),
    ):
        for show in ("embedding", "all"):
            g = _dot(tg, show=show)
            graphs = [g, *_subgraphs(g)]
            used = {k for sub in graphs for k in sub.get_attributes()}
            used |= {k for sub in graphs for n in sub.get_node_list() for k in n.get_attributes()}
            used |= {k for _, _, attrs in _edges(g) for k in attrs}
            assert used <= DOT_ATTRIBUTES, used - DOT_ATTRIBUTES


def test_attribute_outside_allow_list_is_refused() -> None:
    with pytest.raises(ValueError, match="allow-list"):
        dot_room.attrs(label="x", URL="http://example.com")


@pytest.mark.parametrize("name", sorted(PEFT_MODELS))
def test_wrapped_slots_show_canonical_and_full_names(build: BuildFn, name: str) -> None:
    tg = build(PEFT_MODELS[name]())
    g = _dot(tg)
    G = tg.graph
    ids = _ids(tg)
    nodes = _nodes(g)
    embedding_slots = set(G.graph["input_embedding_slots"])
    for node in embedding_slots:
        assert ids[node] in nodes
    for node, d in G.nodes(data=True):
        if d["kind"] == "slot" and ids[node] in nodes:
            lines = _text(nodes[ids[node]]["label"]).splitlines()
            assert lines[0] == d["canonical"]
            assert (lines[1] == d["name"]) == (d["name"] != d["canonical"])
    without = _nodes(_dot(tg, full_paths=False))
    for node in embedding_slots:
        assert G.nodes[node]["name"] not in _text(without[ids[node]]["label"]).splitlines()[1:] or (
            G.nodes[node]["name"] == G.nodes[node]["canonical"]
        )
    # owner modules are nested clusters, from the outermost wrapper down
    names = {sub.get_name() for sub in _subgraphs(g)}
    for node in embedding_slots:
        owner = G.nodes[node]["owner"]
        parts = owner.split(".")
        for i in range(1, len(parts) + 1):
            assert "cluster_" + ids["m:" + ".".join(parts[:i])] in names


def _edge_attrs(g: pydot.Dot, a: str, b: str) -> list[dict[str, str]]:
    return [attrs for u, v, attrs in _edges(g) if {u, v} == {a, b}]


def test_shares_edges_styled_by_how(build: BuildFn) -> None:
    """same object, view, overlap: each has its own line style (and the legend says which)."""
    m = nn.Module()
    m.a = nn.Linear(4, 4, bias=False)
    m.b = nn.Linear(4, 4, bias=False)
    m.b.weight = m.a.weight  # same object
    big = torch.zeros(32)
    m.register_buffer("whole", big)
    m.register_buffer("low", big[:12])  # view
    m.register_buffer("mid", big[8:20])  # overlaps low, view of whole
    tg = build(m)
    G = tg.graph
    g = _dot(tg, show="groups")
    ids = _ids(tg)
    hows = set()
    for u, v, key, d in G.edges(keys=True, data=True):
        if key == "shares":
            (attrs,) = [
                a for a in _edge_attrs(g, ids[u], ids[v]) if a.get("dir") == "none" and "penwidth" in a
            ]
            assert attrs["style"] == dot_room.SHARE_STYLE[d["how"]][0]
            hows.add(d["how"])
    assert "same" in hows
    assert len(hows) >= 2
    legend = _text(_nodes(g)["legend"]["label"])
    for how in hows:
        assert dot_room.SHARE_STYLE[how][1] in legend
    # partial reads carry their byte range
    reads = [a.get("label", "") for u, v, a in _edges(g) if v.startswith("t")]
    assert "bytes 32..80" in reads


def test_declared_edges_styled_by_status(build: BuildFn) -> None:
    """The lying model: lm_head holds a copy; its declared tie is drawn red and dashed, to the embedding."""
    tg = build(MODELS["llama-declared-but-copied"]())
    g = _dot(tg)
    ids = _ids(tg)
    embed, head = ids["s:model.embed_tokens.weight"], ids["s:lm_head.weight"]
    assert _drawn_slots(g) == {embed, head}
    (attrs,) = [a for u, v, a in _edges(g) if (u, v) == (head, embed)]
    color, style, text = dot_room.DECLARED_STYLE["not-tied"]
    assert (attrs["color"], attrs["style"], attrs["xlabel"]) == (color, style, text)
    assert len({v for u, v, _ in _edges(g) if v.startswith("t")}) == 2  # two storages: the copy is visible
    assert "shares memory with nothing" in _text(g.get("label"))


@pytest.mark.parametrize("status", ["tied", "not-tied", "gated-off", "unresolved"])
def test_every_declared_status_has_a_style(build: BuildFn, status: str) -> None:
    """A declaration and its declares edge added by hand (TieGraph.from_graph), one per status."""
    G = build(_tiny_tied()).graph.copy()
    G.add_node(
        "m:other", kind="module", path="other", canonical="other", belongs="other", cls="Linear", object=9
    )
    G.add_edge("m:", "m:other", key="child", kind="child", name="other")
    G.add_node(
        "s:other.weight", kind="slot", name="other.weight", canonical="other.weight", owner="other",
        attr="weight", tensor="parameter", dtype="float32", shape=(8, 4), device="cpu", requires_grad=True,
        object=99,
    )  # fmt: skip
    G.add_edge("m:other", "s:other.weight", key="owns", kind="owns", attr="weight")
    slots = [n for n, kind in G.nodes(data="kind") if kind == "slot"]
    tie = DeclaredTie(
        target="other.weight",
        source="embed.weight",
        target_path="other.weight",
        source_path="embed.weight",
        declared_by="",
        declared_by_cls="Module",
        status=status,
    )
    declared = Declaration(
        tie, target_slot=slots.index("s:other.weight"), source_slot=slots.index("s:embed.weight")
    ).to_dict()
    G.graph["declared"] = [declared]
    edge = {k: v for k, v in declared.items() if k not in ("target_slot", "source_slot")}
    G.add_edge("s:other.weight", "s:embed.weight", key="declares", kind="declares", **edge)
    tg = tiegraph.TieGraph.from_graph(G)
    assert [d.status for d in tg.declared_ties()] == [status]
    g = _dot(tg, show="groups")
    ids = _ids(tg)
    (attrs,) = [a for u, v, a in _edges(g) if (u, v) == (ids["s:other.weight"], ids["s:embed.weight"])]
    color, style, text = dot_room.DECLARED_STYLE[status]
    assert (attrs["color"], attrs["style"]) == (color, style)
    assert text in _text(_nodes(g)["legend"]["label"])
    assert "<svg" in tg.to_svg(show="groups")


def test_modules_to_save_copy_is_drawn_beside_the_tied_original(build: BuildFn) -> None:
    """The untie made visible: both lm_head.weight slots, joined by a 'same name, not shared' edge."""
    tg = build(PEFT_MODELS["modules-to-save-lm-head"]())
    g = _dot(tg)
    original = "base_model.model.lm_head.original_module.weight"
    copy = "base_model.model.lm_head.modules_to_save.default.weight"
    a, b = (_ids(tg)["s:" + n] for n in (original, copy))
    assert {a, b} <= _drawn_slots(g)
    assert any(attrs.get("xlabel") == dot_room.SAME_NAME[2] for attrs in _edge_attrs(g, a, b))


def test_t5_four_way_share(build: BuildFn) -> None:
    tg = build(MODELS["t5"]())
    g = _dot(tg)
    names = ["shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight"]
    assert _drawn_slots(g) == _slot_ids(tg, names)
    assert {v for _, v, _ in _edges(g) if v.startswith("t")} == {"t0"}


def test_component_option(build: BuildFn) -> None:
    tg = build(PEFT_MODELS["lora-ensure-weight-tying"]())
    g = _dot(tg, component="lm_head.lora_A.default.weight")
    assert _drawn_slots(g) == _slot_ids(
        tg,
        [
            "base_model.model.lm_head.lora_A.default.weight",
            "base_model.model.model.embed_tokens.lora_embedding_B.default",
        ],
    )
    whole = _drawn_slots(_dot(tg, component="lm_head"))
    assert len(whole) == 6  # three groups of two
    with pytest.raises(PathNotFoundError):
        tg.to_dot(component="no_such_module")
    with pytest.raises(ValueError, match="show="):
        tg.to_dot(show="everything")


def test_groups_and_no_input_embedding(build: BuildFn) -> None:
    class NoEmbedding(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(2, 2)
            self.b = nn.Linear(2, 2)
            self.c = nn.Linear(2, 2)
            self.b.weight = self.a.weight
            self.c.bias = self.b.bias

    tg = build(NoEmbedding())
    for dot in (tg.to_dot(), tg.to_dot(show="groups")):
        g = _parse(dot)
        assert _drawn_slots(g) == _slot_ids(tg, ["a.weight", "b.weight", "b.bias", "c.bias"])
        assert "All 2 tie groups" in _text(g.get("label"))
    assert "no input embedding" in _text(_dot(tg).get("label"))


@pytest.mark.slow
def test_70b_meta_llama_stays_small(llama70b: tiegraph.TieGraph) -> None:
    """80 identical untied layers: hidden in the default picture, one collapsed node in the whole one."""
    g = _dot(llama70b)
    assert len(_drawn_slots(g)) == 2
    caption = _text(g.get("label"))
    assert "model.layers.0..79" in caption
    assert "80 × LlamaDecoderLayer" in caption
    whole = _dot(llama70b, show="all")
    nodes = _nodes(whole)
    assert len(nodes) < 15
    collapsed = [_text(a["label"]) for n, a in nodes.items() if n.startswith("c")]
    assert len(collapsed) == 1
    assert "80 identical layers collapsed" in collapsed[0]
    assert "model.layers.0 … 79" in collapsed[0]
    assert "80 identical layers collapsed" in _text(whole.get("label"))
    assert "<svg" in llama70b.to_svg(show="all")
    no_collapse = _nodes(_dot(llama70b, show="all", collapse=False, storage=False))
    assert len(no_collapse) > 700


def test_collapse_keeps_tied_layers_apart(build: BuildFn) -> None:
    """A layer holding a tie breaks the run: layers 0..2 and 4..5 collapse, layer 3 is drawn."""
    layers = [nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4)) for _ in range(6)]
    m = nn.Module()
    m.embed = embed = nn.Embedding(8, 4)
    m.blocks = nn.ModuleList(layers)
    layers[3][0].weight = nn.Parameter(embed.weight[:4])  # a view: a tie inside layer 3
    tg = build(m, input_embedding="embed")
    g = _dot(tg, show="all")
    collapsed = sorted(_text(a["label"]).splitlines()[1] for n, a in _nodes(g).items() if n.startswith("c"))
    assert collapsed == ["blocks.0 … 2", "blocks.4 … 5"]
    assert _slot_ids(tg, ["blocks.3.0.weight", "embed.weight"]) <= _drawn_slots(g)


# ------------------------------------------------------------------------------------------ rendering


def test_svg_png_pdf_and_write(build: BuildFn, tmp_path: Path) -> None:
    tg = build(_tiny_tied(), input_embedding="embed")
    svg = tg.to_svg()
    assert isinstance(svg, str)
    assert "<svg" in svg
    magic = {".png": b"\x89PNG", ".pdf": b"%PDF", ".svg": b"<?xml"}
    for suffix, head in magic.items():
        tg.write(tmp_path / f"g{suffix}")
        assert (tmp_path / f"g{suffix}").read_bytes().startswith(head)
    tg.write(tmp_path / "g.dot", legend=False)
    assert _parse((tmp_path / "g.dot").read_text())
    tg.write(str(tmp_path / "g.json"))
    assert tiegraph.TieGraph.from_json(json.loads((tmp_path / "g.json").read_text())).tie_groups() == [
        ["embed.weight", "head.weight"]
    ]
    with pytest.raises(ValueError, match=r"'\.txt'"):
        tg.write(tmp_path / "g.txt")
    with pytest.raises(ValueError, match="json"):
        tg.write(tmp_path / "g.json", legend=False)


def test_missing_pygraphviz_is_explained(build: BuildFn, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "pygraphviz" else real(name, *a)
    )
    tg = build(_tiny_tied(), input_embedding="embed")
    with pytest.raises(RenderError, match=r"pip install 'tiegraph\[render\]'"):
        tg.to_svg()
    assert isinstance(tg.to_dot(), str)
    assert tg._repr_svg_() is None
    assert "embed" in tg._repr_html_()
    assert "tiegraph[render]" in tg._repr_html_()
    assert isinstance(RenderError("x"), tiegraph.TiegraphError)


def test_graphviz_crash_is_an_error_not_a_dead_process(
    build: BuildFn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Graphviz segfaults on some layouts; it runs in a child process, so the caller gets a RenderError."""
    monkeypatch.setattr(render_room, "_DRAW", "import os; os.abort()")
    tg = build(_tiny_tied(), input_embedding="embed")
    with pytest.raises(RenderError, match="crashed"):
        tg.to_svg()
    assert tg._repr_svg_() is None


@pytest.mark.parametrize("name", sorted(MODELS) + sorted(PEFT_MODELS))
def test_every_model_renders(build: BuildFn, name: str) -> None:
    """Regression: labels on constraint=false edges made Graphviz segfault on T5 (they are xlabels now)."""
    factory = MODELS.get(name) or PEFT_MODELS[name]
    tg = build(factory())
    assert "<svg" in tg.to_svg()
    assert pygraphviz.AGraph(string=tg.to_dot(show="all")).number_of_nodes() > 0


def test_jupyter_reprs(build: BuildFn) -> None:
    tg = build(MODELS["llama-tied"]())
    svg = tg._repr_svg_()
    assert isinstance(svg, str)
    assert "<svg" in svg
    page = tg._repr_html_()
    assert "<svg" in page
    assert "<?xml" not in page
    assert "tied to it: lm_head" in page
    assert "input embedding model.embed_tokens" in page
    assert repr(tg).startswith("<TieGraph:")


# ------------------------------------------------------------------------------------------ JSON


def _answers(tg: tiegraph.TieGraph) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for full in (False, True):
        out[f"embedding{full}"] = tg.input_embedding(full_paths=full)
        out[f"groups{full}"] = tg.tie_groups(full_paths=full)
        try:
            out[f"tied{full}"] = tg.tied_to_input_embedding(full_paths=full)
        except tiegraph.NoInputEmbeddingError:
            out[f"tied{full}"] = None
        for group in tg.tie_groups(full_paths=True):
            for name in group:
                out[f"component{full}{name}"] = tg.component(name, full_paths=full)
    G = tg.graph
    out["declares"] = sorted(
        (u, v, d["status"]) for u, v, k, d in G.edges(keys=True, data=True) if k == "declares"
    )
    out["declared"] = json_room._jsonable(G.graph.get("declared"))
    return out


@pytest.mark.parametrize("name", sorted(MODELS) + sorted(PEFT_MODELS))
def test_json_round_trip(build: BuildFn, name: str) -> None:
    factory = MODELS.get(name) or PEFT_MODELS[name]
    tg = build(factory())
    data = tg.to_json()
    assert data["tiegraph"]["format"] == export.FORMAT_VERSION
    text = json.dumps(data)
    assert json.loads(text) == data  # plain JSON already (tuples are lists)
    back = tiegraph.TieGraph.from_json(json.loads(text))
    assert _answers(back) == _answers(tg)
    G, H = tg.graph, back.graph
    assert list(G.nodes) == list(H.nodes)
    assert {(u, v, k) for u, v, k in G.edges(keys=True)} == {(u, v, k) for u, v, k in H.edges(keys=True)}
    for node, d in G.nodes(data=True):
        assert H.nodes[node] == d, node
    assert isinstance(next(d["shape"] for _, d in H.nodes(data=True) if d["kind"] == "slot"), tuple)
    assert back.to_dot() == tg.to_dot()
    # plain networkx reads it too
    assert nx.node_link_graph(data, edges="edges").number_of_edges() == G.number_of_edges()


def test_from_json_refuses_other_data() -> None:
    tg = tiegraph.build_graph(_tiny_tied(), input_embedding="embed")
    data = tg.to_json()
    with pytest.raises(GraphFormatError, match="format 99"):
        tiegraph.TieGraph.from_json({**data, "tiegraph": {"format": 99}})
    with pytest.raises(GraphFormatError, match="not tiegraph JSON"):
        tiegraph.TieGraph.from_json({"nodes": [], "edges": []})
    broken = {**data, "edges": [e for e in data["edges"] if e["key"] != "owns"]}
    with pytest.raises(GraphFormatError, match="damaged"):
        tiegraph.TieGraph.from_json(broken)
    assert isinstance(GraphFormatError("x"), tiegraph.TiegraphError)
    assert tiegraph.TieGraph.from_json(json.dumps(data)).tie_groups() == [["embed.weight", "head.weight"]]


# ------------------------------------------------------------------------------------------ one engine


def _two_paths_one_place() -> nn.Module:
    """One Linear seen through two segments of a registered wrapper: two slots, one canonical name."""

    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = nn.Linear(2, 2, bias=False)
            self.alias = self.inner

    return Twice()


def test_one_place_through_two_wrapper_paths_is_not_a_tie_anywhere(build: BuildFn) -> None:
    """The repr and the picture captions counted tie groups by slot (1) while tie_groups()
    counts canonical names ([]); all of them now ask TieGraph."""
    model = _two_paths_one_place()
    rule = tiegraph.register_wrapper(type(model), drop=("inner", "alias"))
    try:
        tg = build(model)
    finally:
        tiegraph.naming.unregister_wrapper(rule)
    assert tg.tie_groups() == []
    assert tg.tie_groups(full_paths=True) == [["alias.weight", "inner.weight"]]
    assert "0 tie groups" in repr(tg)
    for show in ("groups", "all"):
        caption = _text(_dot(tg, show=show).get("label"))
        assert "0 tie groups" in caption, caption
        assert "one place named through several wrapper paths" in caption
    assert "0 tie groups" in tg._repr_html_()


@pytest.mark.parametrize("wrap", [lambda m: m, torch.compile], ids=["plain", "compiled"])
def test_component_of_the_root_is_every_slot(build: BuildFn, wrap: Callable[[nn.Module], nn.Module]) -> None:
    """``component("")`` was every slot from TieGraph but only the root's own slots from the
    graph walk behind to_dot(component=""); both now answer every slot."""
    m = nn.Module()
    m.w = nn.Parameter(torch.zeros(2))
    m.embed = nn.Embedding(8, 4)
    m.head = nn.Linear(4, 8, bias=False)
    m.head.weight = m.embed.weight
    tg = build(wrap(m))
    assert tg.component("") == ["embed.weight", "head.weight", "w"]
    assert tg.component("", full_paths=True) == sorted(tg.graph.nodes[n]["name"] for n in _slot_nodes(tg))
    drawn = {
        _text(a["label"]).split("\n")[0] for n, a in _nodes(_dot(tg, component="")).items() if n[0] == "s"
    }
    assert drawn == set(tg.component(""))
    assert "not drawn" not in _text(_dot(tg, component="").get("label"))


def _slot_nodes(tg: tiegraph.TieGraph) -> list[str]:
    return [n for n, kind in tg.graph.nodes(data="kind") if kind == "slot"]


def test_jupyter_renders_the_picture_once_per_display(
    build: BuildFn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """IPython asks for HTML and SVG of one object; Graphviz runs once, not twice."""
    from IPython.core.formatters import DisplayFormatter

    calls: list[str] = []
    real = render_room.draw

    def counted(dot: str, format: str, timeout: float = 120.0) -> bytes:
        calls.append(format)
        return real(dot, format, timeout)

    monkeypatch.setattr(render_room, "draw", counted)
    tg = build(_tiny_tied())
    data, _ = DisplayFormatter().format(tg)
    assert "<svg" in data["image/svg+xml"]
    assert "<svg" in data["text/html"]
    assert calls == ["svg"]
    DisplayFormatter().format(tg)
    assert calls == ["svg"], "a second display reuses the picture"


# ------------------------------------------------------------------------------------------ wording


class _DeclaredTiny(nn.Module):
    """A tied pair that is also declared: the declared edge coincides with the share edge."""

    _tied_weights_keys = {"head.weight": "embed.weight"}  # noqa: RUF012

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(8, 4)
        self.head = nn.Linear(4, 8, bias=False)
        self.head.weight = self.embed.weight

    def get_input_embeddings(self) -> nn.Module:
        return self.embed


@pytest.mark.parametrize(("rankdir", "side"), [("LR", "w"), ("TB", "n")])
def test_declared_tie_is_drawn_beside_the_share_edge(build: BuildFn, rankdir: str, side: str) -> None:
    """A declared tie coinciding with a share edge was drawn under it. Declared (and
    same-name) edges leave and enter on the side away from the storage, so they curve beside the straight
    share edge, and their labels sit outside the module boxes."""
    g = _dot(build(_DeclaredTiny()), rankdir=rankdir)
    (share,) = [a for _, _, a in _edges(g) if a.get("color") == dot_room.SHARE_COLOR]
    (declared,) = [a for _, _, a in _edges(g) if a.get("color") == dot_room.DECLARED_STYLE["tied"][0]]
    assert "tailport" not in share
    assert "headport" not in share
    assert (declared["tailport"], declared["headport"]) == (side, side)


def test_storage_is_labelled_by_what_it_stores(build: BuildFn) -> None:
    """Storages said 'storage t0'; they say dtype, shape, size and device."""
    g = _dot(build(_DeclaredTiny()))
    (storage,) = [a for n, a in _nodes(g).items() if n.startswith("t")]
    assert _text(storage["label"]).splitlines() == ["storage", "float32 8×4 · 128 B · cpu"]


def test_legend_has_an_entry_for_every_node_kind_drawn(build: BuildFn) -> None:
    """A buffer slot of the input embedding was drawn dashed with no legend entry."""

    class Embed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.zeros(8, 4))
            self.register_buffer("scale", torch.ones(8))

    m = nn.Module()
    m.embed = Embed()
    g = _dot(build(m, input_embedding="embed"))
    legend = _text(_nodes(g)["legend"]["label"])
    slots = [a for n, a in _nodes(g).items() if n.startswith("s")]
    dashed = {a["fillcolor"] for a in slots if a["style"] == "rounded,filled,dashed"}  # buffer slots
    assert dashed == {dot_room.EMBED_FILL}  # the embedding's own buffer, its only buffer slot
    assert "buffer slot" in legend
    assert "slot of the input embedding" in legend
