"""Bad input gets a clear error, and analysis never changes the model or reads its data."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
import torch
from models import MODELS, PEFT_MODELS, NoInputEmbedding, Wrapper, compiled, llama_tied, t5
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

import tiegraph
import tiegraph.compat
import tiegraph.export
import tiegraph.naming

# torch.compile's first use imports torch.jit code that warns about its own deprecation (also in fixtures).
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")

BuildFn = Callable[..., tiegraph.TieGraph]

# ------------------------------------------------------------------------------------ not a module


@pytest.mark.parametrize(
    "obj",
    [None, 3, "model", torch.zeros(2), {"lm_head": nn.Linear(2, 2)}, [nn.Linear(2, 2)]],
    ids=["None", "int", "str", "Tensor", "dict", "list"],
)
@pytest.mark.parametrize(
    "call",
    [tiegraph.build_graph, tiegraph.tied_to_input_embedding],
    ids=["build_graph", "tied_to_input_embedding"],
)
def test_non_module_is_type_error(call: Callable[[Any], Any], obj: object) -> None:
    """A non-``nn.Module`` is a TypeError whose message names the type it got."""
    with pytest.raises(TypeError, match=re.escape(type(obj).__name__)):
        call(obj)


# ------------------------------------------------------------------------------------ input_embedding=


@pytest.fixture(scope="module")
def llama() -> nn.Module:
    torch.manual_seed(0)
    return MODELS["llama-tied"]()


@pytest.fixture(scope="module")
def lora() -> nn.Module:
    torch.manual_seed(0)
    return PEFT_MODELS["lora-lm-head"]()


def _answer(model: nn.Module, input_embedding: Any) -> list[str]:
    """Build and query: an error may come from either step."""
    return tiegraph.build_graph(model, input_embedding=input_embedding).tied_to_input_embedding()


@pytest.mark.parametrize(
    "call", [_answer, tiegraph.tied_to_input_embedding], ids=["build_graph", "module_level"]
)
def test_input_embedding_path_not_found(llama: nn.Module, call: Callable[..., Any]) -> None:
    """``input_embedding="nonexistent.path"`` is a TiegraphError naming the path."""
    with pytest.raises(tiegraph.TiegraphError, match=re.escape("nonexistent.path")):
        call(llama, input_embedding="nonexistent.path")


@pytest.mark.parametrize(
    ("model_fixture", "typo", "nearest"),
    [
        ("llama", "model.embed_token", "model.embed_tokens"),
        ("llama", "model.embedtokens", "model.embed_tokens"),
        ("llama", "lm_haed", "lm_head"),
        # on a PEFT model the nearest path may be given canonical or full: both contain the canonical one
        ("lora", "model.embed_tokns", "model.embed_tokens"),
    ],
)
def test_input_embedding_typo_suggests_nearest(
    request: pytest.FixtureRequest, model_fixture: str, typo: str, nearest: str
) -> None:
    """A mistyped ``input_embedding`` path: the error names the path given and suggests the nearest path."""
    model = request.getfixturevalue(model_fixture)
    with pytest.raises(tiegraph.TiegraphError) as info:
        _answer(model, typo)
    message = str(info.value)
    assert repr(typo) in message or typo in message.replace(nearest, "")
    assert nearest in message


def test_input_embedding_module_not_in_model(llama: nn.Module) -> None:
    """A module object that is not part of the model cannot be its input embedding: a TiegraphError."""
    with pytest.raises(tiegraph.TiegraphError):
        _answer(llama, nn.Embedding(4, 4))


# ------------------------------------------------------------------------------------ no input embedding


class RaisingInputEmbedding(NoInputEmbedding):
    """``get_input_embeddings`` exists but raises, as PreTrainedModel's default does when it finds nothing."""

    def get_input_embeddings(self) -> nn.Module:
        raise NotImplementedError("no input embedding here")


@pytest.mark.parametrize("model_cls", [NoInputEmbedding, RaisingInputEmbedding])
def test_no_input_embedding(build: BuildFn, model_cls: type[nn.Module]) -> None:
    """No way to find the input embedding: the graph is still built, ``input_embedding()`` is None, and
    ``tied_to_input_embedding`` raises a TiegraphError telling the caller to pass ``input_embedding=``."""
    model = model_cls()
    tg = build(model)
    assert tg.input_embedding() is None
    assert tg.input_embedding(full_paths=True) is None
    assert tg.tie_groups() == [["emb.weight", "head.weight"]]
    with pytest.raises(tiegraph.TiegraphError, match=re.escape("input_embedding=")):
        tg.tied_to_input_embedding()
    with pytest.raises(tiegraph.TiegraphError, match=re.escape("input_embedding=")):
        tg.tied_to_input_embedding(full_paths=True)
    with pytest.raises(tiegraph.TiegraphError, match=re.escape("input_embedding=")):
        tiegraph.tied_to_input_embedding(model)
    # and naming it fixes it
    assert tiegraph.tied_to_input_embedding(model, input_embedding="emb") == ["head"]
    assert tiegraph.tied_to_input_embedding(model, input_embedding=model.emb) == ["head"]


def test_no_input_embedding_under_wrapper(build: BuildFn) -> None:
    """The same through a user's wrapper. With no model class below it (nothing has
    ``get_input_embeddings``), the wrapper is the canonical root: its ``inner.`` is not a prefix to drop."""
    model = Wrapper(NoInputEmbedding())
    assert build(model).input_embedding() is None
    assert tiegraph.tied_to_input_embedding(model, input_embedding="inner.emb") == ["inner.head"]
    assert tiegraph.tied_to_input_embedding(model, input_embedding=model.get_submodule("inner.emb")) == [
        "inner.head"
    ]


# ------------------------------------------------------------------------------------ cycles

CYCLE_TIMEOUT = 20.0  # seconds; the answer should take milliseconds


def _self_loop() -> tuple[nn.Module, str]:
    m = nn.Module()
    m.lin = nn.Linear(2, 2)
    m.add_module("loop", m)
    return m, "loop"


def _deep_loop() -> tuple[nn.Module, str]:
    a, b, c = nn.Module(), nn.Module(), nn.Module()
    a.add_module("b", b)
    b.add_module("c", c)
    c.add_module("back", a)
    c.w = nn.Parameter(torch.zeros(2))
    return a, "back"


def _llama_back_reference() -> tuple[nn.Module, str]:
    torch.manual_seed(0)
    model = llama_tied()
    # a layer holding its parent model as a submodule: the accidental shape of a cycle
    model.model.layers[0].add_module("parent", model)
    return model, "parent"


@pytest.mark.parametrize(
    "make", [_self_loop, _deep_loop, _llama_back_reference], ids=lambda f: f.__name__[1:]
)
@pytest.mark.parametrize(
    "call", [tiegraph.build_graph, tiegraph.tied_to_input_embedding], ids=["build", "tied"]
)
def test_cycle_is_an_error(
    with_timeout: Callable[..., Any], make: Callable[[], tuple[nn.Module, str]], call: Callable[..., Any]
) -> None:
    """``m.add_module("loop", m)``: torch's own ``named_parameters(remove_duplicate=False)`` recurses forever;
    tiegraph raises a TiegraphError naming the cycle, never a RecursionError or a hang."""
    model, edge = make()

    def run() -> Any:
        tg = call(model)
        if isinstance(tg, tiegraph.TieGraph):  # a lazy builder must fail on first use at the latest
            tg.tie_groups()
        return tg

    with pytest.raises(tiegraph.TiegraphError, match=rf"\b{edge}\b"):
        with_timeout(run, CYCLE_TIMEOUT)


# ------------------------------------------------------------------------------------ never changes the model


def _snapshot(model: nn.Module) -> dict[str, Any]:
    """Everything analysis could disturb: tree, slot objects, storages, flags, hooks, attributes, config."""
    tensors = [
        *model.named_parameters(remove_duplicate=False),
        *model.named_buffers(remove_duplicate=False),
    ]
    slots = [
        (
            name,
            id(t),
            type(t),
            t.data_ptr(),
            t.untyped_storage()._cdata,
            t.device,
            t.dtype,
            tuple(t.shape),
            t.stride(),
            t.storage_offset(),
            t.requires_grad,
            t.grad is None,
        )
        for name, t in tensors
    ]
    modules = [
        (
            name,
            id(m),
            type(m),
            m.training,
            sorted(vars(m)),
            {k: len(v) for k, v in vars(m).items() if k.endswith("hooks") and isinstance(v, dict)},
            list(m._parameters),
            list(m._buffers),
            list(m._modules),
        )
        for name, m in model.named_modules(remove_duplicate=False)
    ]
    config = getattr(model, "config", None)
    return {
        "slots": slots,
        "modules": modules,
        "config": config.to_dict() if config is not None and hasattr(config, "to_dict") else None,
        "tied_keys": dict(getattr(model, "all_tied_weights_keys", {}) or {}),
    }


def _values(model: nn.Module) -> list[torch.Tensor]:
    return [
        t.detach().clone()
        for _, t in model.named_parameters(remove_duplicate=False)
        if t.device.type != "meta"
    ]


def _exercise(tg: tiegraph.TieGraph) -> None:
    """Every query, in both namings, and the networkx graph."""
    for full in (False, True):
        tg.input_embedding(full_paths=full)
        tg.tie_groups(full_paths=full)
        if tg.input_embedding() is not None:
            tg.tied_to_input_embedding(full_paths=full)
        for group in tg.tie_groups(full_paths=full):
            tg.component(group[0], full_paths=full)
    assert tg.graph.number_of_nodes() > 0


def _meta_llama() -> nn.Module:
    with torch.device("meta"):
        return MODELS["llama-tied"]()


UNCHANGED: dict[str, Callable[[], nn.Module]] = {
    "llama-tied": MODELS["llama-tied"],
    "t5": MODELS["t5"],
    "bert-mlm": MODELS["bert-mlm"],
    "llama-meta": _meta_llama,
    "lora-ensure-weight-tying": PEFT_MODELS["lora-ensure-weight-tying"],
    "modules-to-save-embed-tokens": PEFT_MODELS["modules-to-save-embed-tokens"],
    "trainable-tokens": PEFT_MODELS["trainable-tokens"],
    "compile-wrapper-peft": lambda: compiled(Wrapper(PEFT_MODELS["lora-lm-head"]())),
}


@pytest.mark.parametrize("name", list(UNCHANGED))
def test_analysis_never_changes_the_model(build: BuildFn, name: str) -> None:
    """DESIGN "What never happens": the model is never modified by analysis: the same module tree, slot
    objects, data pointers, storages, strides, flags, hooks, attributes, config and values after every
    query as before."""
    torch.manual_seed(0)
    model = UNCHANGED[name]()
    before, values = _snapshot(model), _values(model)
    tg = build(model)
    _exercise(tg)
    tiegraph.tied_to_input_embedding(model)
    assert _snapshot(model) == before
    after = _values(model)
    assert len(after) == len(values)
    assert all(torch.equal(a, b) for a, b in zip(after, values, strict=True))


# Ops that only look at metadata or make views: they never read an element.
_METADATA_OPS = {
    torch.ops.aten.detach.default,
    torch.ops.aten.alias.default,
    torch.ops.aten.sym_size.default,
    torch.ops.aten.sym_size.int,
    torch.ops.aten.sym_stride.default,
    torch.ops.aten.sym_stride.int,
    torch.ops.aten.sym_numel.default,
    torch.ops.aten.sym_storage_offset.default,
    torch.ops.aten.is_contiguous.default,
    torch.ops.aten.is_contiguous.memory_format,
}


class _DataReadRecorder(TorchDispatchMode):
    """Records every aten op that takes a tensor over one of the model's storages and is not a pure view or
    metadata query: that op could read (or write) the model's data."""

    def __init__(self, storages: set[int]) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # torch leaves it unannotated
        self.storages = storages
        self.reads: list[str] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if not (getattr(func, "is_view", False) or func in _METADATA_OPS):
            for leaf in tree_leaves((args, kwargs)):
                if isinstance(leaf, torch.Tensor) and leaf.untyped_storage().data_ptr() in self.storages:
                    self.reads.append(str(func))
                    break
        return func(*args, **kwargs)


@pytest.mark.parametrize(
    "name", ["llama-tied", "t5", "bert-mlm", "lora-ensure-weight-tying", "trainable-tokens"]
)
def test_analysis_never_reads_tensor_data(build: BuildFn, name: str) -> None:
    """DESIGN "What never happens": no tensor data is read or copied to build the graph or answer queries.
    Every aten op touching the model's storages is recorded; only views and metadata queries are allowed."""
    torch.manual_seed(0)
    model = (MODELS.get(name) or PEFT_MODELS[name])()
    storages = {
        t.untyped_storage().data_ptr()
        for _, t in [
            *model.named_parameters(remove_duplicate=False),
            *model.named_buffers(remove_duplicate=False),
        ]
        if t.numel()
    }
    recorder = _DataReadRecorder(storages)
    with recorder:
        tg = tiegraph.build_graph(model)
        _exercise(tg)
        tiegraph.tied_to_input_embedding(model)
    assert recorder.reads == []
    build(model)  # the invariant check, outside the recorder: it may read what it likes


def test_recorder_catches_a_data_read() -> None:
    """Control for the test above: the recorder does see a read of a model tensor."""
    lin = nn.Linear(2, 2)
    recorder = _DataReadRecorder({lin.weight.untyped_storage().data_ptr()})
    with recorder:
        lin.weight.t()  # a view: allowed
        lin.weight.sum()  # a read
    assert recorder.reads == ["aten.sum.default"]


@pytest.mark.parametrize("construct", ["meta", "init_empty_weights"])
def test_meta_model_has_no_data_to_read(build: BuildFn, construct: str) -> None:
    """On a meta model any data read raises (``.item()``/``.tolist()`` on meta tensors): building the graph
    and every query still succeed, the ties are found, and every parameter stays on meta."""
    from accelerate import init_empty_weights

    ctx = torch.device("meta") if construct == "meta" else init_empty_weights()
    with ctx:
        model = t5()
    with pytest.raises((RuntimeError, NotImplementedError)):
        model.shared.weight.tolist()  # the premise: data cannot be read
    tg = build(model)
    _exercise(tg)
    assert tg.tied_to_input_embedding() == ["decoder.embed_tokens", "encoder.embed_tokens", "lm_head"]
    assert {p.device.type for p in model.parameters()} == {"meta"}


# ------------------------------------------------------------------------------------ bad options
def _tied(build: BuildFn) -> tiegraph.TieGraph:
    m = nn.Module()
    m.embed = nn.Embedding(8, 4)
    m.head = nn.Linear(4, 8, bias=False)
    m.head.weight = m.embed.weight
    return build(m, input_embedding="embed")


BAD_OPTIONS: dict[str, tuple[Callable[..., Any], str]] = {
    "rankdir": (lambda tg, _tmp: tg.to_dot(rankdir="UP"), "expected one of 'LR', 'TB', 'RL', 'BT'"),
    "show": (lambda tg, _tmp: tg.to_dot(show="some"), "show='some'; expected one of"),
    "write-suffix": (lambda tg, tmp: tg.write(tmp / "g.txt"), "unknown suffix '.txt'"),
    "write-json-options": (lambda tg, tmp: tg.write(tmp / "g.json", legend=False), "do not apply to .json"),
    "wrapper-name": (lambda _tg, _tmp: tiegraph.register_wrapper("no_colon"), "package.module:QualName"),
    "wrapper-drop-string": (
        lambda _tg, _tmp: tiegraph.register_wrapper(nn.Sequential, drop="inner"),  # type: ignore[arg-type]
        "drop='inner'; expected a tuple of child names",
    ),
    "wrapper-not-registered": (
        lambda _tg, _tmp: tiegraph.naming.unregister_wrapper(tiegraph.naming.WrapperRule(nn.Sequential)),
        "is not a registered wrapper rule",
    ),
    "device-map": (lambda _tg, _tmp: tiegraph.check_device_map(_two(), {"a": "cpu"}), "places no module"),
    "placed-by": (
        lambda _tg, _tmp: tiegraph.check_device_map(_two(), {"": "cpu"}, placed_by="accelerate"),
        "placed_by must be 'dispatch_model' or 'from_pretrained', got 'accelerate'",
    ),
    "split": (
        lambda _tg, _tmp: tiegraph.compat.tie_groups(_two(), split="bytes"),  # type: ignore[arg-type]  # (bad on purpose)
        "split must be one of",
    ),
}


def _two() -> nn.Module:
    m = nn.Module()
    m.a = nn.Linear(2, 2)
    m.b = nn.Linear(2, 2)
    return m


@pytest.mark.parametrize("name", sorted(BAD_OPTIONS))
def test_bad_option_is_a_configuration_error(build: BuildFn, tmp_path: Any, name: str) -> None:
    """An option a function does not accept is a ``ConfigurationError`` (a ``TiegraphError`` and a
    ``ValueError``) whose message names the value and what is accepted."""
    call, message = BAD_OPTIONS[name]
    with pytest.raises(tiegraph.ConfigurationError, match=re.escape(message)) as info:
        call(_tied(build), tmp_path)
    assert isinstance(info.value, tiegraph.TiegraphError)
    assert isinstance(info.value, ValueError)


def test_graph_data_that_is_not_a_graph() -> None:
    """Text that is not JSON is a ``GraphFormatError``; what is not a networkx graph, a ``TypeError``."""
    with pytest.raises(tiegraph.GraphFormatError, match="the text is not JSON"):
        tiegraph.export.from_json("{")
    with pytest.raises(TypeError, match=r"expected a networkx MultiDiGraph .*builtins\.dict"):
        tiegraph.export.lint({})
    with pytest.raises(TypeError, match="expected a networkx MultiDiGraph"):
        tiegraph.TieGraph.from_graph([])
