"""The slow path read in bulk (``tiegraph._expand.expand``): the same answers as tensor by tensor.

Real torchao tensors only (``Int8Tensor``, ``Float8Tensor``, ``IntxUnpackedToInt8Tensor`` from
``quantize_`` on CPU). The batched reading decides per class and per build; nothing it learns is kept
between builds, so a class (or one tensor) that changes its name lists or its ``__tensor_flatten__``
between two builds is read as it is at the second build.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from conftest import BuildFn
from test_deployed import Opaque, tiny_llama
from torch import nn

import tiegraph
from tiegraph import _expand, _share
from tiegraph._expand import expand
from tiegraph._quantization import quantization
from tiegraph._tensors import leaves

#: torchao configs that quantize a CPU Linear into a wrapper tensor subclass (torchao's own flatten)
CONFIGS = [
    "Int8WeightOnlyConfig",
    "Float8WeightOnlyConfig",
    "Int8DynamicActivationInt8WeightConfig",
    "IntxWeightOnlyConfig",
]


def quantized(config: str = "Int8WeightOnlyConfig", layers: int = 3) -> nn.Sequential:
    """``layers`` Linear(64, 64) layers, every weight quantized by torchao's ``config``."""
    from torchao import quantization as q

    torch.manual_seed(0)
    model = nn.Sequential(*(nn.Linear(64, 64) for _ in range(layers)))
    q.quantize_(model, getattr(q, config)())
    return model


def weight(model: nn.Sequential, i: int) -> Any:
    """Layer ``i``'s weight: a torchao or bitsandbytes tensor subclass whose attributes torch's types miss."""
    return model[i].weight


def _recording(group: Callable[..., Any], into: list[Any]) -> Callable[..., Any]:
    """``group``, keeping what each call answers in ``into``."""

    def recorded(*args: Any) -> Any:
        into.append(group(*args))
        return into[-1]

    return recorded


def one_by_one(tensors: list[torch.Tensor]) -> tuple[list[int], list[torch.Tensor], list[int], list[Any]]:
    """What :func:`expand` must answer, from :func:`leaves` and :func:`quantization` tensor by tensor."""
    owners: list[int] = []
    found: list[torch.Tensor] = []
    unknown: list[int] = []
    for n, tensor in enumerate(tensors):
        got = leaves(tensor)
        if not got.tensors or got.unknown:
            unknown.append(n)
            continue
        owners += [n] * len(got.tensors)
        found += got.tensors
    return owners, found, unknown, [quantization(t) for t in tensors]


def view(tensor: torch.Tensor) -> tuple[int, tuple[int, ...], tuple[int, ...], int]:
    """Which bytes a plain tensor reads: its storage (by identity), shape, strides and offset."""
    return id(tensor.untyped_storage()), tuple(tensor.shape), tensor.stride(), int(tensor.storage_offset())


@pytest.mark.parametrize("config", CONFIGS)
def test_expand_answers_as_leaves_tensor_by_tensor(config: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Mixed classes (torchao weights, sparse, plain, an opaque wrapper): input order and leaf order kept."""
    model = quantized(config)
    base = torch.arange(6.0)
    tensors = [
        weight(model, 0),
        torch.sparse_coo_tensor(torch.tensor([[0, 1]]), base[:2], (6,)),
        weight(model, 1),
        Opaque(base),
        model[0].bias,
        weight(model, 2),
    ]
    batched: list[Any] = []
    group = _expand._torchao_group
    monkeypatch.setattr(_expand, "_torchao_group", _recording(group, batched))
    got = expand(tensors)
    assert batched
    assert batched[0] is not None  # the torchao weights were read in bulk
    owners, found, unknown, labels = one_by_one(tensors)
    assert got.owners == owners
    assert len(got.tensors) == len(found)
    assert list(map(view, got.tensors)) == list(map(view, found))  # (sparse parts are new objects per call)
    assert all(s is t.untyped_storage() for s, t in zip(got.storages, got.tensors, strict=True))
    assert sorted(map(id, got.read)) == sorted(map(id, got.storages))  # (the same storages, unordered)
    assert got.unknown == unknown == [3]
    assert got.labels == labels
    assert labels[0] == f"torchao.{type(weight(model, 0)).__name__}"


def shared_leaves(config: str) -> nn.Sequential:
    """Ties through torchao components: a leaf registered as a buffer, a view of one, its bytes via numpy."""
    model = quantized(config, layers=4)
    first, second = leaves(weight(model, 0)).tensors[:2]
    model[1].register_buffer("alias", second)  # another slot's tensor object
    model[2].register_buffer("rows", first[:2])  # a view of a component's storage
    qdata = leaves(weight(model, 3)).tensors[0].view(torch.uint8)  # (numpy has no float8)
    model[3].register_buffer("numpy_alias", torch.from_numpy(qdata.numpy()))
    return model


@pytest.mark.parametrize("config", CONFIGS)
def test_build_answers_the_same_with_the_bulk_reading_off(
    build: BuildFn, monkeypatch: pytest.MonkeyPatch, config: str
) -> None:
    """The whole graph (JSON) is the same when every slow slot is read tensor by tensor and every component
    is counted (the bulk reading and the pointer check that skips unshared components switched off)."""
    model = shared_leaves(config)
    on = build(model)
    assert on.tie_groups() == [
        ["0.weight", "1.alias", "2.rows"],
        ["3.numpy_alias", "3.weight"],  # another storage object over the same bytes (from_numpy)
    ]
    monkeypatch.setattr(_expand, "_torchao_flatten", lambda: None)
    monkeypatch.setattr(_share, "read_once", lambda *_: False)
    off = build(model)
    assert on.to_json() == off.to_json()


def test_a_quantized_llama_builds_the_same_with_the_bulk_reading_off(
    build: BuildFn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The benchmark's shape: a tied Llama, every Linear (lm_head too) torchao int8: nothing is shared."""
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    model = tiny_llama(64)
    quantize_(model, Int8WeightOnlyConfig())
    on = build(model)
    assert on.tie_groups() == []
    monkeypatch.setattr(_expand, "_torchao_flatten", lambda: None)
    monkeypatch.setattr(_share, "read_once", lambda *_: False)
    assert on.to_json() == build(model).to_json()


def bitsandbytes_layers() -> nn.Sequential:
    """bitsandbytes 4-bit and 8-bit layers on CPU: Params4bit, Int8Params hold their own storage."""
    import bitsandbytes as bnb

    torch.manual_seed(0)
    layers = [
        bnb.nn.Linear4bit(64, 64, quant_type="nf4"),
        bnb.nn.Linear8bitLt(64, 64, has_fp16_weights=False),
    ]
    model = nn.Sequential(*layers, nn.Linear(64, 64))
    for layer in layers:
        layer.load_state_dict(nn.Linear(64, 64).state_dict())
    model = model.to("cpu")
    model[2].register_buffer("alias", weight(model, 0).data[:4])  # a plain view of the packed 4-bit bytes
    return model


def test_subclasses_with_storage_answer_as_leaves_tensor_by_tensor() -> None:
    model = bitsandbytes_layers()
    tensors = [weight(model, 0), weight(model, 1), weight(model, 0)]
    assert {type(t).__name__ for t in tensors} == {"Params4bit", "Int8Params"}
    got = expand(tensors)
    owners, found, unknown, labels = one_by_one(tensors)
    assert (got.owners, got.unknown, got.labels) == (owners, unknown, labels)
    assert all(a is b for a, b in zip(got.tensors, found, strict=True))
    assert all(s is t.untyped_storage() for s, t in zip(got.storages, got.tensors, strict=True))


def test_a_bitsandbytes_model_builds_the_same_with_the_bulk_reading_off(
    build: BuildFn, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = bitsandbytes_layers()
    on = build(model)
    assert on.tie_groups() == [["0.weight", "2.alias"]]
    monkeypatch.setattr(_expand, "_storage_group", lambda _: None)
    monkeypatch.setattr(_share, "read_once", lambda *_: False)
    assert on.to_json() == build(model).to_json()


def test_an_optional_component_set_on_one_tensor_only_is_followed(build: BuildFn) -> None:
    """``act_pre_scale`` (an optional data name of Int8Tensor) set on one weight: that weight reads it."""
    model = quantized()
    weight(model, 0).act_pre_scale = model[2].bias
    assert build(model).tie_groups() == [["0.weight", "2.bias"]]


def test_a_class_changing_its_names_between_builds_is_read_as_it_is_now(
    build: BuildFn, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = quantized()
    kind = type(weight(model, 0))
    model[1].register_buffer("scale_alias", weight(model, 0).scale)
    model[2].register_buffer("zero_alias", weight(model, 0).zero_point)
    tied = [["0.weight", "1.scale_alias", "2.zero_alias"]]
    assert build(model).tie_groups() == tied
    monkeypatch.setattr(kind, "tensor_data_names", ["qdata"])
    assert build(model).tie_groups() == [["0.weight", "2.zero_alias"]]
    monkeypatch.setattr(kind, "optional_tensor_data_names", ["act_pre_scale"])
    assert build(model).tie_groups() == []
    monkeypatch.undo()
    assert build(model).tie_groups() == tied


def test_a_class_replacing_its_flatten_between_builds_is_read_as_it_is_now(
    build: BuildFn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: ``__tensor_flatten__`` was cached per class for the life of the process."""
    model = quantized()
    kind = type(weight(model, 0))
    model[1].register_buffer("scale_alias", weight(model, 0).scale)
    assert build(model).tie_groups() == [["0.weight", "1.scale_alias"]]
    monkeypatch.setattr(kind, "__tensor_flatten__", lambda _: (["qdata"], {}))
    assert build(model).tie_groups() == []
    monkeypatch.undo()
    assert build(model).tie_groups() == [["0.weight", "1.scale_alias"]]


def test_one_tensor_with_its_own_name_list_is_read_with_it(build: BuildFn) -> None:
    """An instance attribute ``tensor_data_names`` is what torchao's ``__tensor_flatten__`` reads for it."""
    model = quantized()
    model[1].register_buffer("scale_alias", weight(model, 0).scale)
    model[2].register_buffer("other_scale", weight(model, 2).scale)
    weight(model, 0).tensor_data_names = ["qdata"]
    assert build(model).tie_groups() == [["2.other_scale", "2.weight"]]


def test_a_missing_attribute_leaves_that_tensor_unknown_as_torchao_would(build: BuildFn) -> None:
    """torchao's ``__tensor_flatten__`` raises when an attribute is gone: that slot's storage is unknown."""
    model = quantized()
    del weight(model, 1).block_size
    with pytest.warns(RuntimeWarning, match=r"storage unknown for 1\.weight"):
        tg = build(model)
    assert tg.tie_groups() == []


@pytest.mark.parametrize("name", ["qdata", "block_size"])
def test_a_value_whose_property_raises_leaves_that_tensor_unknown(
    build: BuildFn, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """A data or attribute name read through a property that raises (not AttributeError): a warning."""
    model = quantized()
    kind = type(weight(model, 0))

    def broken(_tensor: torch.Tensor) -> torch.Tensor:
        raise RuntimeError(f"{name} is not materialized")

    monkeypatch.setattr(kind, name, property(broken), raising=False)  # (wins over the instance dict)
    with pytest.warns(RuntimeWarning, match=r"storage unknown for 0\.weight.*raised RuntimeError"):
        tg = build(model)
    assert tg.tie_groups() == []


def test_a_class_value_answers_for_an_instance_without_its_own(
    build: BuildFn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``getattr`` falls back to the class when an instance dict lacks a name: the bulk reading too."""
    model = quantized()
    kind = type(weight(model, 0))
    shared = torch.zeros(64)
    monkeypatch.setattr(kind, "act_pre_scale", shared, raising=False)
    del weight(model, 0).act_pre_scale  # (the other weights keep their own None)
    model[2].register_buffer("alias", shared)
    batched: list[Any] = []
    group = _expand._torchao_group
    monkeypatch.setattr(_expand, "_torchao_group", _recording(group, batched))
    on = build(model)
    assert on.tie_groups() == [["0.weight", "2.alias"]]
    assert batched[0] is not None  # (read in bulk, not tensor by tensor)
    monkeypatch.setattr(_expand, "_torchao_flatten", lambda: None)
    monkeypatch.setattr(_share, "read_once", lambda *_: False)
    assert on.to_json() == build(model).to_json()


def test_a_class_with_its_own_getattribute_is_read_tensor_by_tensor(
    build: BuildFn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``__getattribute__`` decides every lookup, so the instance dicts are not asked (bulk reading off)."""
    model = quantized()
    kind = type(weight(model, 0))
    model[1].register_buffer("scale_alias", weight(model, 0).scale)
    swapped = weight(model, 2).scale

    def lookup(tensor: torch.Tensor, name: str) -> Any:
        if name == "scale" and tensor is weight(model, 0):
            return swapped  # (what getattr answers, not what the instance dict holds)
        return object.__getattribute__(tensor, name)

    batched: list[Any] = []
    group = _expand._torchao_group
    monkeypatch.setattr(_expand, "_torchao_group", _recording(group, batched))
    monkeypatch.setattr(kind, "__getattribute__", lookup, raising=False)
    assert build(model).tie_groups() == [["0.weight", "2.weight"]]
    assert batched == [None]


def test_quantization_labels_are_one_string_per_class() -> None:
    model = quantized()
    got = expand([weight(model, 0), weight(model, 1)])
    assert got.labels[0] == "torchao.Int8Tensor"
    assert got.labels[0] is got.labels[1]
    assert tiegraph.build_graph(model)._index.deployed.slot_quantization == {
        s: "torchao.Int8Tensor" for s in (0, 2, 4)
    }
