"""The lazy index: what a build records at once, what it reads on first use, and its errors.

A build records the module paths, the slots and the share relation; dtype, shape, device and byte extents
of slots that share nothing are read on first use by re-walking the model through a weak reference. These
tests pin the contract around that (a graph is a record of the model at build): answers survive the model,
a slot that changed since the build is unknown instead of read from the changed model, tie-group members
keep their metadata, and a dropped graph is freed at once.
"""

from __future__ import annotations

import gc
import json
import weakref

import torch
from torch import nn

import tiegraph
from tiegraph._graph import view_of


class Tied(nn.Module):
    """An embedding tied to a head, a norm with a buffer, and a bias=False linear (a None slot)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.norm = nn.BatchNorm1d(4)
        self.proj = nn.Linear(4, 4, bias=False)
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.embed.weight

    def get_input_embeddings(self) -> nn.Module:
        return self.embed


def test_graph_outlives_its_model() -> None:
    """``build_graph(make())`` with nothing else holding the model: metadata is read when the model dies."""
    tg = tiegraph.build_graph(Tied())
    gc.collect()
    data = tg.to_json()
    slots = {n["id"]: n for n in data["nodes"] if n["id"].startswith("s:")}
    assert slots["s:proj.weight"]["shape"] == [4, 4]
    assert slots["s:norm.running_mean"]["dtype"] == "float32"
    assert tg.tie_groups() == [["embed.weight", "head.weight"]]


def test_same_answers_as_an_eager_read() -> None:
    """The lazily read metadata equals what the tensors say (every slot, shared or not)."""
    model = Tied()
    tg = tiegraph.build_graph(model)
    named: dict[str, torch.Tensor] = dict(model.named_parameters(remove_duplicate=False))
    named.update(model.named_buffers(remove_duplicate=False))
    nodes = {n: d for n, d in tg.graph.nodes(data=True) if n.startswith("s:")}
    assert set(nodes) == {f"s:{name}" for name in named}
    for name, tensor in named.items():
        data = nodes[f"s:{name}"]
        assert tuple(data["shape"]) == tuple(tensor.shape), name
        assert data["dtype"] == str(tensor.dtype).removeprefix("torch."), name
        assert data["requires_grad"] == tensor.requires_grad, name


def _slot_nodes(tg: tiegraph.TieGraph) -> dict[str, dict[str, object]]:
    return {n["name"]: n for n in tg.to_json()["nodes"] if n["kind"] == "slot"}


def test_changed_module_tree_answers_for_the_build() -> None:
    """A module added after the build: the graph still describes the model as built, slot by slot."""
    model = Tied()
    tg = tiegraph.build_graph(model)
    model.extra = nn.Linear(2, 2)
    slots = _slot_nodes(tg)
    assert "extra.weight" not in slots
    assert slots["proj.weight"]["shape"] == [4, 4]
    assert slots["proj.weight"]["device"] == "cpu"


def test_renamed_slot_is_unknown_not_guessed() -> None:
    """Same number of slots, one renamed: the renamed slot's shape and device are unknown, the rest read."""
    model = Tied()
    tg = tiegraph.build_graph(model)
    weight = model.proj._parameters.pop("weight")
    model.proj.register_parameter("kernel", weight)
    slots = _slot_nodes(tg)
    assert (slots["proj.weight"]["shape"], slots["proj.weight"]["device"]) == (None, "unknown")
    assert slots["proj.weight"]["dtype"] == "unknown"
    assert slots["norm.running_mean"]["shape"] == [4]


def test_parameter_turned_buffer_is_unknown() -> None:
    """A parameter re-registered as a buffer under the same name is not the slot the build saw."""
    model = Tied()
    tg = tiegraph.build_graph(model)
    weight = model.proj._parameters.pop("weight")
    assert weight is not None
    model.proj.register_buffer("weight", weight.detach())
    slots = _slot_nodes(tg)
    assert slots["proj.weight"]["tensor"] == "parameter"
    assert slots["proj.weight"]["shape"] is None


def test_half_after_build_is_never_read_as_the_build_dtype() -> None:
    """``.half()`` swaps every ``param.data`` in place: those slots become unknown, never float16."""
    model = Tied()
    tg = tiegraph.build_graph(model)
    model.half()
    slots = _slot_nodes(tg)
    assert slots["proj.weight"]["dtype"] == "unknown"  # a new storage: not what the build saw
    assert slots["proj.weight"]["shape"] is None
    assert slots["head.weight"]["dtype"] == "float32"
    assert slots["head.weight"]["shape"] == [10, 4]  # a tie-group member: read at build


def test_requires_grad_is_the_build_value() -> None:
    """Freezing after the build (as ``get_peft_model`` does) does not rewrite the record."""
    model = Tied()
    tg = tiegraph.build_graph(model)
    model.requires_grad_(False)
    slots = _slot_nodes(tg)
    assert slots["proj.weight"]["requires_grad"] is True
    assert slots["proj.weight"]["shape"] == [4, 4]  # same storage: read lazily, still exact


def test_deleted_model_after_the_build() -> None:
    """The model collected before the first export: read from its last state, the graph never raises."""
    model = Tied()
    tg = tiegraph.build_graph(model)
    model.proj = nn.Linear(4, 4, bias=False)  # a replaced module, then the model dies
    del model
    gc.collect()
    slots = _slot_nodes(tg)
    assert slots["proj.weight"]["shape"] is None
    assert slots["norm.weight"]["shape"] == [4]


def test_tie_group_members_keep_their_metadata_after_a_change() -> None:
    """Slots on shared storages were read at build: a diff across a step still has their facts."""
    model = Tied()
    tg = tiegraph.build_graph(model)
    model.head.weight = nn.Parameter(model.embed.weight.detach().clone())  # untie (same names)
    model.extra = nn.Linear(2, 2)  # and change the tree
    view = view_of(tg)
    names = {view.slot_name(s): s for s in range(view.num_slots)}
    facts = view.tensor(names["head.weight"])
    assert (facts.dtype, facts.shape) == ("float32", (10, 4))
    assert tg.tie_groups() == [["embed.weight", "head.weight"]]  # the graph answers for the build


def test_dropped_graph_is_freed_without_the_garbage_collector() -> None:
    """No reference cycle between the index and its namer: dropping the graph frees the index at once."""
    model = Tied()
    gc.disable()
    try:
        tg = tiegraph.build_graph(model)
        assert tg.tied_to_input_embedding() == ["head"]
        assert isinstance(tg.audit(), list)  # (the audit caches the graph's read-only view)
        index, graph = weakref.ref(tg._index), weakref.ref(tg)
        del tg
        assert graph() is None
        assert index() is None
    finally:
        gc.enable()


def test_json_of_a_lazy_graph_round_trips() -> None:
    """A graph whose metadata was read lazily writes the same JSON as its reloaded copy."""
    model = Tied()
    tg = tiegraph.build_graph(model)
    text = json.dumps(tg.to_json())
    back = tiegraph.TieGraph.from_json(json.loads(text))
    assert back.to_json() == tg.to_json()
    assert back.tie_groups() == tg.tie_groups()


def test_meta_model_none_slots_and_owners() -> None:
    """On meta, with None entries in slot dicts: owners and parameter flags come out per slot as torch's."""
    with torch.device("meta"):
        model = Tied()
    tg = tiegraph.build_graph(model)
    view = view_of(tg)
    got = [(view.slot_name(s), view.is_parameter(s)) for s in range(view.num_slots)]
    params = [(n, True) for n, _ in model.named_parameters(remove_duplicate=False)]
    buffers = [(n, False) for n, _ in model.named_buffers(remove_duplicate=False)]
    assert sorted(got) == sorted(params + buffers)
    owners = {view.slot_name(s): view.module_path(view.slot_owner(s)) for s in range(view.num_slots)}
    assert owners["norm.num_batches_tracked"] == "norm"
    assert owners["head.weight"] == "head"
