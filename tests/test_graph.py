"""``tiegraph._graph.amend``: the one way to add to a built graph, and the caches it drops."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

import tiegraph
from tiegraph._graph import amend, view_of
from tiegraph._values import record_values


class Untied(nn.Module):
    """A declared tie whose ends are equal copies: value verdicts and device maps have something to say."""

    _tied_weights_keys = {"head.weight": "embed.weight"}  # noqa: RUF012

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.head = nn.Linear(4, 10, bias=False)
        with torch.no_grad():
            self.head.weight.copy_(self.embed.weight)

    def get_input_embeddings(self) -> nn.Module:
        return self.embed


def _declares(tg: tiegraph.TieGraph) -> list[Any]:
    return [data.get("values") for *_, data in tg.graph.edges(data=True) if data["kind"] == "declares"]


def test_a_picture_drawn_before_an_amend_is_not_shown_after_it(build: Any) -> None:
    """Notebook style: show the graph, add a device map, show it again: the new picture has the placement."""
    tg = build(Untied())
    before = tg._repr_svg_()
    assert before is not None
    assert "served from disk" not in before
    assert "served from disk" not in tg._repr_html_()
    amend(tg, device_map={"embed": "cpu", "head": "disk"})
    after = tg._repr_svg_()
    assert after is not None
    assert "served from disk" in after
    assert "served from disk" in tg._repr_html_()
    assert "served from disk" in tg.to_dot()


def test_value_verdicts_asked_later_reach_the_networkx_graph(build: Any) -> None:
    model = Untied()
    tg = build(model)
    assert _declares(tg) == [None]  # the networkx graph is made (and cached) before the values are asked
    record_values(tg, model)
    assert _declares(tg) == ["equal"]
    assert [t.values for t in tg.declared_ties()] == ["equal"]
    assert "re-ties them without loss" in str(tg.audit()[0])


def test_a_checkpoint_recorded_later_reaches_the_graph_and_its_view(build: Any) -> None:
    tg = build(Untied())
    assert "checkpoint" not in tg.graph.graph
    view_before = view_of(tg)
    data = {"directory": "ckpt", "findings": []}
    amend(tg, checkpoint=data)
    assert tg.graph.graph["checkpoint"] == data
    assert view_of(tg) is not view_before
    assert view_of(tg).checkpoint == data


def test_a_device_map_that_places_nothing_changes_nothing(build: Any) -> None:
    tg = build(Untied())
    G = tg.graph
    with pytest.raises(ValueError, match="head"):
        amend(tg, device_map={"embed": "cpu"})
    assert tg.graph is G
    assert {d["placement"] for _, d in G.nodes(data=True) if d["kind"] == "slot"} == {"cpu"}
