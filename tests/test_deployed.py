"""Deployed models: accelerate offload hooks, placement, device maps, quantized and odd tensors.

Real libraries only: accelerate, torchao, bitsandbytes (CPU backend), optimum-quanto and hqq, on tiny
transformers models built from configs (saved to ``tmp_path`` when ``from_pretrained`` is the flow).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import BuildFn
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, LlamaForCausalLM

import tiegraph
from tiegraph._quantization import quantization
from tiegraph._tensors import leaves
from tiegraph.export import to_dot

X = torch.tensor([[1, 2, 3]])


def tiny_llama(hidden: int = 16) -> LlamaForCausalLM:
    """A tied Llama of a few kB (hidden 64 when a quantizer needs whole 64-wide groups)."""
    config = AutoConfig.for_model(
        "llama",
        vocab_size=64,
        hidden_size=hidden,
        intermediate_size=hidden,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model: LlamaForCausalLM = AutoModelForCausalLM.from_config(config)
    return model


def kinds(tg: tiegraph.TieGraph) -> list[str]:
    return [f.kind for f in tg.audit()]


def slot(tg: tiegraph.TieGraph, name: str) -> dict[str, Any]:
    return dict(tg.graph.nodes[f"s:{name}"])


# --------------------------------------------------------------------------------- accelerate offload


def test_cpu_offload_serves_one_tensor_before_and_after_forward(build: BuildFn) -> None:
    """cpu_offload leaves two meta objects; the weights_map serves one tensor: tied, no false alarm."""
    from accelerate import cpu_offload

    model = cpu_offload(tiny_llama(), execution_device="cpu")
    assert model.lm_head.weight is not model.model.embed_tokens.weight  # meta, two objects
    for _ in range(2):
        tg = build(model)
        assert tg.tied_to_input_embedding() == ["lm_head"]
        assert kinds(tg) == []
        node = slot(tg, "lm_head.weight")
        assert (node["placement"], node["execution_device"]) == ("cpu", "cpu")
        model(X)


def test_from_pretrained_all_disk_no_false_alarm(build: BuildFn, tmp_path: Path) -> None:
    """All on disk: both names are served from one safetensors entry, before and after a forward."""
    tiny_llama().save_pretrained(tmp_path / "ckpt")
    model = AutoModelForCausalLM.from_pretrained(
        tmp_path / "ckpt", device_map={"": "disk"}, offload_folder=tmp_path / "off"
    )
    for _ in range(2):
        tg = build(model)
        assert tg.tied_to_input_embedding() == ["lm_head"]
        assert kinds(tg) == []
        assert slot(tg, "lm_head.weight")["placement"] == "disk"
        model(X)


def test_from_pretrained_head_on_disk_is_split_at_load_time(build: BuildFn, tmp_path: Path) -> None:
    """lm_head on disk, embedding on cpu: the hook would serve lm_head.weight from nowhere (KeyError)."""
    tiny_llama().save_pretrained(tmp_path / "ckpt")
    device_map = {
        "model.embed_tokens": "cpu",
        "model.layers": "cpu",
        "model.norm": "cpu",
        "model.rotary_emb": "cpu",
        "lm_head": "disk",
    }
    model = AutoModelForCausalLM.from_pretrained(
        tmp_path / "ckpt", device_map=device_map, offload_folder=tmp_path / "off"
    )
    tg = build(model)
    assert kinds(tg) == ["group-split-across-devices"]
    message = tg.audit()[0].message
    assert "device_map['lm_head'] = 'cpu'" in message
    assert "tie_weights" not in message.split("Change")[1]
    assert slot(tg, "lm_head.weight")["placement"] == "meta"
    with pytest.raises(KeyError):  # what the finding predicts
        model(X)


def test_dispatch_model_split_same_before_and_after_forward(build: BuildFn, tmp_path: Path) -> None:
    from accelerate import dispatch_model

    model = dispatch_model(tiny_llama(), device_map={"model": "cpu", "lm_head": "disk"}, offload_dir=tmp_path)
    before = build(model).audit()
    model(X)
    after = build(model).audit()
    assert [f.kind for f in before] == ["group-split-across-devices"]
    assert before == after
    assert "device_map['lm_head'] = 'cpu'" in before[0].message


def test_disk_offload_serves_separate_copies(build: BuildFn, tmp_path: Path) -> None:
    """accelerate's disk_offload writes each name to its own file: the hook serves two copies."""
    from accelerate import disk_offload

    model = disk_offload(tiny_llama(), tmp_path, execution_device="cpu")
    (finding,) = build(model).audit()
    assert finding.kind == "group-split-across-devices"
    assert "lm_head.weight.dat" in finding.message
    assert "separate copies" in finding.message


class _Transposed(nn.Module):
    """A head tied by identity and a projection tied by a transposed view, both to the embedding."""

    def __init__(self, vocab: int, hidden: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, hidden)
        self.proj = nn.Linear(vocab, hidden, bias=False)
        self.proj.weight = nn.Parameter(self.embed.weight.t())
        self.lm_head = nn.Linear(hidden, vocab, bias=False)
        self.lm_head.weight = self.embed.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.proj(self.lm_head(self.embed(ids)))
        return out


_WRONG = "tie-served-in-wrong-layout"


@pytest.mark.parametrize(("vocab", "hidden"), [(8, 8), (8, 4)], ids=["square", "oblong"])
def test_transposed_tie_served_by_pointer(build: BuildFn, vocab: int, hidden: int) -> None:
    """accelerate's dispatch_model finds placed tied weights by data_ptr(): the transposed view gets the
    untransposed tensor (the output changes, or a shape error). The pre-flight says so; the audit of the
    dispatched model too where the swap shows (a Linear whose weight contradicts its sizes)."""
    from accelerate import dispatch_model

    torch.manual_seed(0)
    model = _Transposed(vocab, hidden).eval()
    ids = torch.tensor([1, 2, 3])
    with torch.no_grad():
        expected = model(ids)
    assert _WRONG not in kinds(build(model, input_embedding="embed"))  # not placed: nothing to say
    (before,) = [
        f for f in tiegraph.check_device_map(model, {"": "cpu"}, input_embedding="embed") if f.kind == _WRONG
    ]
    assert before.paths == ("embed.weight", "lm_head.weight", "proj.weight")
    assert before.severity == "error"
    dispatch_model(model, {"": "cpu"}, force_hooks=True)
    assert model.proj.weight is model.embed.weight  # what accelerate did: the swap the finding predicts
    if vocab == hidden:
        with torch.no_grad():
            assert not torch.allclose(model(ids), expected)
        return
    (after,) = [f for f in build(model, input_embedding="embed").audit() if f.kind == _WRONG]
    assert after.paths == ("proj.weight",)
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        model(ids)


def test_transposed_tie_on_disk_is_served_from_its_own_file(build: BuildFn, tmp_path: Path) -> None:
    """On disk the transposed end is read from a file of its own (a fresh pointer): no swap, no finding."""
    from accelerate import dispatch_model

    model = _Transposed(8, 8).eval()
    ids = torch.tensor([1, 2, 3])
    with torch.no_grad():
        expected = model(ids)
    device_map = {"embed": "cpu", "proj": "disk", "lm_head": "cpu"}
    assert _WRONG not in [
        f.kind for f in tiegraph.check_device_map(model, device_map, input_embedding="embed")
    ]
    dispatch_model(model, device_map, main_device="cpu", offload_dir=tmp_path, force_hooks=True)
    assert _WRONG not in kinds(build(model, input_embedding="embed"))
    with torch.no_grad():
        torch.testing.assert_close(model(ids), expected)


# ----------------------------------------------------------------------------------- check_device_map


def test_check_device_map_dict_places_nothing() -> None:
    model = tiny_llama()
    split = tiegraph.check_device_map(model, {"model": "cpu", "lm_head": "disk"})
    assert [f.kind for f in split] == ["group-split-across-devices"]
    assert "device_map['lm_head'] = 'cpu'" in split[0].message
    assert tiegraph.check_device_map(model, {"": "disk"}, placed_by="from_pretrained") == []
    assert not hasattr(model, "hf_device_map")
    assert model.lm_head.weight.device.type == "cpu"


_TEXT = {"model.embed_tokens": "cpu", "model.layers": "cpu", "model.norm": "cpu", "model.rotary_emb": "cpu"}


@pytest.mark.parametrize(
    "device_map",
    [
        {"": "disk"},
        {"model": "disk", "lm_head": "disk"},
        {**_TEXT, "model.embed_tokens": "disk", "lm_head": "disk"},
        {**_TEXT, "lm_head": "disk"},
        {"model": "cpu", "lm_head": "cpu"},
    ],
    ids=["all-disk", "both-ends-disk", "ends-disk-rest-cpu", "head-disk", "all-cpu"],
)
def test_check_device_map_agrees_with_the_dispatched_model(
    build: BuildFn, tmp_path: Path, device_map: dict[str, str]
) -> None:
    """The pre-flight predicts what the audit of the model accelerate placed says, on every map: both ends
    on disk are two files, so two copies (``{"": "disk"}`` is ``disk_offload``; dispatch_model refuses it)."""
    from accelerate import disk_offload, dispatch_model

    model = tiny_llama()
    before = tiegraph.check_device_map(model, device_map)
    if device_map == {"": "disk"}:
        disk_offload(model, tmp_path, execution_device="cpu")
    else:
        dispatch_model(model, device_map, main_device="cpu", offload_dir=tmp_path, force_hooks=True)
    placed = build(model).audit()
    assert [(f.kind, f.paths, f.message) for f in before] == [(f.kind, f.paths, f.message) for f in placed]
    assert bool(placed) == ("disk" in device_map.values())
    model(X)


@pytest.mark.parametrize(
    "device_map", [{"": "disk"}, {"model": "disk", "lm_head": "disk"}], ids=["all-disk", "both-ends-disk"]
)
def test_check_device_map_from_pretrained_serves_one_entry(
    build: BuildFn, tmp_path: Path, device_map: dict[str, str]
) -> None:
    """from_pretrained serves both ends of a tie on disk from the checkpoint's one entry: no finding, and
    the pre-flight says so when told who places the model."""
    tiny_llama().save_pretrained(tmp_path / "ckpt")
    model = AutoModelForCausalLM.from_pretrained(
        tmp_path / "ckpt", device_map=device_map, offload_folder=tmp_path / "off"
    )
    assert build(model).audit() == []
    assert tiegraph.check_device_map(tiny_llama(), device_map, placed_by="from_pretrained") == []
    with pytest.raises(ValueError, match="placed_by must be"):
        tiegraph.check_device_map(tiny_llama(), device_map, placed_by="accelerate")


def test_check_device_map_auto_resolves_through_accelerate() -> None:
    from accelerate import infer_auto_device_map

    model = tiny_llama()
    budget: dict[int | str, int | str] = {"cpu": 2_000}
    placed = infer_auto_device_map(model, max_memory=budget, no_split_module_classes=model._no_split_modules)
    assert set(placed.values()) >= {"disk"}
    expected = tiegraph.check_device_map(model, dict(placed))
    assert tiegraph.check_device_map(model, "auto", max_memory=budget) == expected


def test_check_device_map_on_an_empty_model() -> None:
    """The usual order: build on meta (init_empty_weights), check the map, then load; nothing is read."""
    from accelerate import init_empty_weights

    with init_empty_weights():
        model = tiny_llama()
    model.tie_weights()
    assert model.lm_head.weight.device.type == "meta"
    found = tiegraph.check_device_map(model, {"model": "cpu", "lm_head": "disk"})
    assert [f.kind for f in found] == ["group-split-across-devices"]
    assert tiegraph.check_device_map(model, {"model": "cpu", "lm_head": "cpu"}) == []


def test_check_device_map_errors() -> None:
    with pytest.raises(TypeError):
        tiegraph.check_device_map(object(), {})  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        tiegraph.check_device_map(tiny_llama(), "balanced")
    with pytest.raises(ValueError, match="lm_head"):
        tiegraph.check_device_map(tiny_llama(), {"model": "cpu"})


# ------------------------------------------------------------------------------------------ quantizers


def test_torchao_int8_unties_with_safe_advice(build: BuildFn) -> None:
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    model = tiny_llama(64)
    quantize_(model, Int8WeightOnlyConfig())
    tg = build(model)
    assert kinds(tg) == ["untied-by-quantization"]  # not declared-not-tied a second time
    message = tg.audit()[0].message
    assert "torchao.Int8Tensor" in message
    assert "filter_fn" in message
    assert "call model.tie_weights()" not in message
    assert slot(tg, "lm_head.weight")["quantization"] == "torchao.Int8Tensor"
    assert "torchao.Int8Tensor" in tg.report()
    assert "torchao.Int8Tensor" in to_dot(tg)


def test_torchao_float8_wrapper_is_seen_through(build: BuildFn) -> None:
    """The float8 weight wrapper's inner _tensor is the embedding Parameter: still tied."""
    from torchao.float8 import Float8LinearConfig, convert_to_float8_training

    model = tiny_llama()
    convert_to_float8_training(model, config=Float8LinearConfig(enable_fsdp_float8_all_gather=True))
    assert type(model.lm_head.weight).__name__ == "WeightWithDynamicFloat8CastTensor"
    tg = build(model)
    assert tg.tied_to_input_embedding() == ["lm_head"]
    assert slot(tg, "lm_head.weight")["quantization"] == "torchao.WeightWithDynamicFloat8CastTensor"


def test_quanto_qint8_unties(build: BuildFn) -> None:
    from optimum.quanto import freeze, qint8, quantize

    model = tiny_llama(64)
    quantize(model, weights=qint8)
    freeze(model)
    tg = build(model)
    assert kinds(tg) == ["untied-by-quantization"]
    assert slot(tg, "lm_head.weight")["quantization"] == "quanto.qint8"


def test_bitsandbytes_layer_holding_tied_fp32_weight(build: BuildFn) -> None:
    """The skip-modules case: a Linear4bit holds the fp32 embedding Parameter; forward would fail."""
    import bitsandbytes as bnb

    model = tiny_llama(64)
    head = bnb.nn.Linear4bit(64, 64, bias=False, quant_type="nf4")
    head.weight = model.model.embed_tokens.weight
    model.lm_head = head
    tg = build(model)
    assert kinds(tg) == ["quantized-layer-holds-tied-weight"]
    assert "Linear4bit" in tg.audit()[0].message


@pytest.mark.parametrize("load", ["load_in_4bit", "load_in_8bit"])
def test_bitsandbytes_from_pretrained_with_no_skip_modules(build: BuildFn, tmp_path: Path, load: str) -> None:
    """transformers + bitsandbytes (CPU backend), llm_int8_skip_modules=[]: the quantized lm_head layer
    keeps the fp32 tied embedding Parameter and its forward fails; tiegraph says so at load time."""
    from transformers import BitsAndBytesConfig

    tiny_llama(64).save_pretrained(tmp_path)
    config = BitsAndBytesConfig(llm_int8_skip_modules=[], **{load: True})
    model = AutoModelForCausalLM.from_pretrained(tmp_path, quantization_config=config, device_map={"": "cpu"})
    assert type(model.lm_head).__name__ in ("Linear4bit", "Linear8bitLt")
    tg = build(model)
    assert kinds(tg) == ["quantized-layer-holds-tied-weight"]
    with pytest.raises((AssertionError, AttributeError)):
        model(X)


def test_bitsandbytes_default_skip_keeps_the_tie(build: BuildFn, tmp_path: Path) -> None:
    from transformers import BitsAndBytesConfig

    tiny_llama(64).save_pretrained(tmp_path)
    config = BitsAndBytesConfig(load_in_4bit=True)
    model = AutoModelForCausalLM.from_pretrained(tmp_path, quantization_config=config, device_map={"": "cpu"})
    tg = build(model)
    assert tg.tied_to_input_embedding() == ["lm_head"]
    assert kinds(tg) == []
    assert slot(tg, "model.layers.0.mlp.up_proj.weight")["quantization"] == "bitsandbytes.fp4"


@pytest.mark.parametrize("kind", ["nf4", "int8"])
def test_bitsandbytes_quantized_head_unties(build: BuildFn, kind: str) -> None:
    import bitsandbytes as bnb

    model = tiny_llama(64)
    head: nn.Module
    if kind == "nf4":
        head = bnb.nn.Linear4bit(64, 64, bias=False, quant_type="nf4")
    else:
        head = bnb.nn.Linear8bitLt(64, 64, bias=False, has_fp16_weights=False)
    head.load_state_dict({"weight": model.lm_head.weight.detach().clone()})
    model.lm_head = head.to("cpu")
    tg = build(model)
    assert kinds(tg) == ["untied-by-quantization"]
    assert slot(tg, "lm_head.weight")["quantization"] == f"bitsandbytes.{kind}"


def test_hqq_layer_is_labelled(build: BuildFn) -> None:
    from hqq.core.quantize import BaseQuantizeConfig, HQQLinear

    model = tiny_llama(64)
    model.lm_head = HQQLinear(
        model.lm_head, BaseQuantizeConfig(nbits=4, group_size=64), compute_dtype=torch.float32, device="cpu"
    )
    tg = build(model)
    assert slot(tg, "lm_head.W_q")["quantization"] == "hqq.4bit"
    (finding,) = tg.audit()  # lm_head.weight is gone (packed into W_q): not an unresolved declaration
    assert finding.kind == "untied-by-quantization"
    assert "hqq.4bit, packed into lm_head.W_q" in finding.message


def test_quantized_tensors_flatten_to_their_storages() -> None:
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    linear = nn.Linear(16, 16)
    layer = nn.Sequential(linear)
    quantize_(layer, Int8WeightOnlyConfig())
    found = leaves(linear.weight)
    assert found.unknown == ""
    assert {t.dtype for t in found.tensors} >= {torch.int8}
    assert quantization(linear.weight) == "torchao.Int8Tensor"


# ------------------------------------------------------------------------------ tensors that are not plain


class Opaque(torch.Tensor):
    """A wrapper subclass with neither storage nor __tensor_flatten__: storage unknown."""

    @staticmethod
    def __new__(cls, like: torch.Tensor) -> Opaque:
        return torch.Tensor._make_wrapper_subclass(cls, like.shape, dtype=like.dtype)

    @classmethod
    def __torch_dispatch__(  # type: ignore[override]  # (torch's is a plain function, not a classmethod)
        cls,
        func: Any,
        types: Iterable[type],
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        raise NotImplementedError(str(func))


def _jagged(values: torch.Tensor) -> torch.Tensor:
    return torch.nested.nested_tensor_from_jagged(values, torch.tensor([0, 2, values.shape[0]]))


def _odd(kind: str, base: torch.Tensor) -> torch.Tensor:
    """A tensor of ``kind`` reading ``base``'s bytes where the kind allows it."""
    if kind == "plain":
        return base
    if kind == "view":
        return base[1:]
    if kind == "coo":
        return torch.sparse_coo_tensor(torch.tensor([[0, 1]]), base[:2], (base.shape[0],))
    if kind == "csr":
        return torch.sparse_csr_tensor(torch.tensor([0, 1, 2]), torch.tensor([0, 1]), base[:2], (2, 2))
    if kind == "bsr":
        return torch.sparse_bsr_tensor(
            torch.tensor([0, 1]), torch.tensor([0]), base[:4].view(1, 2, 2), (2, 2)
        )
    if kind == "jagged":
        return _jagged(base.view(-1, 1))
    if kind == "nested":
        return torch.nested.nested_tensor([torch.zeros(2), torch.zeros(3)])
    if kind == "dtensor":  # a one-rank CPU mesh (the process_group fixture); the local shard is base
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.tensor import DTensor, Replicate

        return DTensor.from_local(base, init_device_mesh("cpu", (1,)), [Replicate()], run_check=False)
    if kind == "fake":
        from torch._subclasses.fake_tensor import FakeTensorMode

        with FakeTensorMode():
            return torch.empty(4)
    if kind == "functional":
        from torch._subclasses.functional_tensor import FunctionalTensor, FunctionalTensorMode

        with FunctionalTensorMode():
            return FunctionalTensor.to_functional(base)
    return Opaque(base)


KINDS = ["plain", "view", "coo", "csr", "bsr", "jagged", "nested", "dtensor", "fake", "functional", "opaque"]
SHARES_BASE = {"plain", "view", "coo", "csr", "bsr", "jagged", "dtensor", "functional"}


@pytest.mark.usefixtures("process_group")
@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(KINDS), st.integers(0, 2)), min_size=1, max_size=7))
def test_mixed_trees_never_crash_and_share_by_storage(picks: list[tuple[str, int]]) -> None:
    """Trees of plain, sparse, nested, DTensor, fake, functional and unknown tensors over three storages.

    Oracle: two slots share exactly when both read the same base (for kinds that read their base) or are
    the same object; unknown storage warns and never ties.
    """
    bases = [torch.arange(6.0) + i for i in range(3)]
    model = nn.Module()
    made: list[tuple[str, int, torch.Tensor]] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for n, (kind, b) in enumerate(picks):
            tensor = _odd(kind, bases[b])
            model.register_buffer(f"b{n}", tensor)
            made.append((kind, b, tensor))
        tg = tiegraph.build_graph(model)
    groups = {frozenset(g) for g in tg.tie_groups()}
    for i, (ki, bi, ti) in enumerate(made):
        for j, (kj, bj, tj) in enumerate(made[:i]):
            expected = ti is tj or (ki in SHARES_BASE and kj in SHARES_BASE and bi == bj)
            together = any({f"b{i}", f"b{j}"} <= g for g in groups)
            assert together == expected, (ki, kj, bi, bj)


def test_unknown_storage_warns_and_stays_alone() -> None:
    model = nn.Module()
    model.register_buffer("a", Opaque(torch.zeros(3)))
    model.register_buffer("b", torch.nested.nested_tensor([torch.zeros(2), torch.zeros(3)]))
    with pytest.warns(RuntimeWarning, match="storage unknown for a"):
        tg = tiegraph.build_graph(model)
    assert tg.tie_groups() == []
    assert slot(tg, "b")["shape"] == (2, -1)


def test_json_round_trip_keeps_placement_quantization_and_findings(tmp_path: Path) -> None:
    from accelerate import dispatch_model
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    from tiegraph.export import from_json, to_json

    quantized = tiny_llama(64)
    quantize_(quantized, Int8WeightOnlyConfig())
    offloaded = dispatch_model(
        tiny_llama(), device_map={"model": "cpu", "lm_head": "disk"}, offload_dir=tmp_path
    )
    for model, facts in (
        (quantized, ("cpu", "torchao.Int8Tensor")),
        (offloaded, ("disk", None)),
    ):
        tg = tiegraph.build_graph(model)
        back = from_json(to_json(tg))
        assert back.audit() == tg.audit()
        node = back.graph.nodes["s:lm_head.weight"]
        assert (node["placement"], node["quantization"]) == facts


def _torchao_int8() -> nn.Module:
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    model = tiny_llama(64)
    quantize_(model, Int8WeightOnlyConfig())
    return model


def _quanto_qint8() -> nn.Module:
    from optimum.quanto import freeze, qint8, quantize

    model = tiny_llama(64)
    quantize(model, weights=qint8)
    freeze(model)
    return model


def _cpu_offload() -> nn.Module:
    from accelerate import cpu_offload

    model: nn.Module = cpu_offload(tiny_llama(), execution_device="cpu")
    return model


@pytest.mark.parametrize(
    ("make", "head"),
    [
        (_torchao_int8, ("torchao.Int8Tensor", "cpu", "cpu")),
        (_quanto_qint8, ("quanto.qint8", "cpu", "cpu")),
        (_cpu_offload, (None, "cpu", "cpu")),  # meta tensors served on cpu: placement differs from device
    ],
    ids=["torchao", "quanto", "cpu_offload"],
)
def test_json_text_round_trip_diffs_empty_for_non_float8_quantization(
    build: BuildFn, make: Callable[[], nn.Module], head: tuple[str | None, str, str]
) -> None:
    """Pins that quantization/placement/execution_device labels beyond float8 survive JSON text.

    Non-float8 labels exist only in the graph's node attributes (not derivable from dtype), so a reader
    that dropped them would make ``diff`` report a quantization change on an unchanged model.
    """
    import json

    keys = ("quantization", "placement", "execution_device")

    def facts(tg: tiegraph.TieGraph) -> dict[str, tuple[Any, ...]]:
        return {n: tuple(d.get(k) for k in keys) for n, d in tg.graph.nodes(data=True) if d["kind"] == "slot"}

    tg = build(make())
    assert facts(tg)["s:lm_head.weight"] == head
    back = tiegraph.TieGraph.from_json(json.loads(json.dumps(tg.to_json())))
    assert facts(back) == facts(tg)
    assert back.audit() == tg.audit()
    assert not tiegraph.diff(tg, back)
    assert back.to_json() == tg.to_json()


class _Marked(torch.Tensor):
    """A tensor subclass with nothing of its own: the pre-flight reads it object by object."""


@pytest.mark.parametrize("kind", ["cpu", "meta", "subclass"])
def test_transposed_tie_found_alike_on_every_path(kind: str) -> None:
    """The pre-flight reads pointers in bulk on real memory and on meta, object by object for a subclass:
    one finding, the same slots and layouts on each."""
    with torch.device("meta" if kind == "meta" else "cpu"):
        model = _Transposed(8, 4)
    if kind == "subclass":
        model.proj.weight = nn.Parameter(model.embed.weight.t().as_subclass(_Marked))
    (found,) = [
        f for f in tiegraph.check_device_map(model, {"": "cpu"}, input_embedding="embed") if f.kind == _WRONG
    ]
    assert found.paths == ("embed.weight", "lm_head.weight", "proj.weight")
    assert "shape (4, 8), stride (1, 4)" in found.message
