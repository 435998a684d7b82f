"""Property test: tiegraph's share relation and tied targets against a brute-force byte oracle.

Hypothesis draws a small *recipe* (base tensors, chains of views over them, Parameter objects, module
containers and a list of registration operations) and :func:`build_model` executes it into a module tree with
random nesting of ``nn.Module`` / ``nn.ModuleList`` / ``nn.ModuleDict`` / ``nn.Embedding``, aliasing of
parameters, buffers and whole modules (never a cycle: a module is only ever added under a module created
before it), transposed / sliced / strided / reshaped / detached / expanded / dtype-reinterpreting views,
the same bytes through another storage object (``torch.from_numpy(x.numpy())``, ``set_`` onto a slice of
the storage), empty tensors, on CPU, on the meta device or mixed. The answers of
:func:`tiegraph.build_graph` are then compared with an oracle that knows nothing of tiegraph:

* slots are what torch's own ``named_parameters(remove_duplicate=False)`` and
  ``named_buffers(remove_duplicate=False)`` yield;
* every slot's bytes are enumerated element by element,
  ``(storage_offset + sum(i_k * stride_k)) * element_size + [0, element_size)``, as addresses (real: the
  device and ``untyped_storage().data_ptr()`` plus that, so separate storage objects over one memory meet,
  as ``torch.from_numpy`` views and ``set_`` onto a slice of a storage make; meta: the storage object's
  ``_cdata`` and that);
* two slots share iff they are the same object or some byte belongs to both; empty tensors share with
  nothing; tie groups are the connected components with at least two slots;
* tied targets are every module path (aliases included) owning a slot in the component of a slot inside
  the input embedding (its primary path, the first path ``named_modules()`` yields, and everything under
  it), minus the embedding's own paths (every path of its module object) and the paths under them.

On failure Hypothesis prints the shrunk recipe and, as notes, the Python code it executed and the table of
resulting slots (shape, stride, offset, storage).

Examples: at least ``MIN_EXAMPLES`` (300, about 15 s); a loaded Hypothesis profile asking for more raises the
count, and ``HYPOTHESIS_PROFILE=ci`` runs ``CI_EXAMPLES`` (1000).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import networkx as nx
import pytest
import torch
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from torch import nn

import tiegraph
from tiegraph import TiegraphError

BuildFn = Callable[..., tiegraph.TieGraph]  # the conftest `build` fixture: build_graph + check_invariants


# --------------------------------------------------------------------------------------------------
# Settings: at least MIN_EXAMPLES. The loaded Hypothesis profile keeps its other settings (CI=true loads
# Hypothesis' built-in "ci" profile: derandomized, no database) and raises the count if it asks for more;
# HYPOTHESIS_PROFILE=ci asks for CI_EXAMPLES (about 30 s on two cores), for a deeper run on demand.

MIN_EXAMPLES = 300
CI_EXAMPLES = 1000


def _max_examples() -> int:
    default = settings.default
    assert default is not None  # (a profile is always loaded)
    wanted = default.max_examples
    if os.environ.get("HYPOTHESIS_PROFILE") == "ci":
        wanted = max(wanted, CI_EXAMPLES)
    return max(MIN_EXAMPLES, wanted)


PROPERTY_SETTINGS = settings(
    max_examples=_max_examples(),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --------------------------------------------------------------------------------------------------
# The recipe: plain data, so that failures shrink to a few operations and print readably.

DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "int8": torch.int8}
VIEW_DTYPES = {"uint8": torch.uint8, "int16": torch.int16, "int32": torch.int32, "float64": torch.float64}
# Names a wrapper would use are deliberately in the pool: wrappers are recognised by type, never by name,
# so on these plain trees canonical names must equal full names.
CHILD_NAMES = ("a", "b", "emb", "embed", "head", "module", "model", "base_layer", "_orig_mod")
PARAM_NAMES = ("weight", "bias", "w")
BUFFER_NAMES = ("buf", "running", "weight")


@dataclass(frozen=True)
class Base:
    """``torch.zeros(shape, dtype=dtype, device=device)``: one fresh storage."""

    shape: tuple[int, ...]
    dtype: str
    device: str


@dataclass(frozen=True)
class View:
    """``bases[base]``, reinterpreted as ``dtype`` and cut to ``piece`` (if set), then transformed by ``ops``.

    Each op is skipped when it does not apply (a transpose of a 1-D tensor, a dtype view of a tensor whose
    last dimension does not fit, ...). Reinterpreting first makes slots of different dtypes over one storage
    common, so overlap must be decided per byte, not per element.
    """

    base: int
    dtype: str | None
    piece: int | None  # shorthand for a leading ("piece", piece) op
    ops: tuple[tuple[Any, ...], ...]


@dataclass(frozen=True)
class Embedding:
    """``nn.Embedding(num, dim, device=device)``, its weight then replaced by ``params[weight]`` if set."""

    num: int
    dim: int
    device: str
    weight: int | None


@dataclass(frozen=True)
class Child:
    """Register ``modules[child]`` under ``modules[parent]`` (parent < child, so never a cycle)."""

    parent: int
    child: int
    name: str


@dataclass(frozen=True)
class Param:
    """Register Parameter object ``params[param]`` on ``modules[module]`` (the same index twice aliases)."""

    module: int
    param: int
    name: str


@dataclass(frozen=True)
class Buffer:
    """Register the tensor object ``views[view]`` as a buffer of ``modules[module]``."""

    module: int
    view: int
    name: str
    persistent: bool


@dataclass(frozen=True)
class InputEmbedding:
    """Which module is the input embedding and how it is named to ``build_graph``.

    ``how`` is ``"module"`` (the object) or ``"path"`` (its ``path_pick``-th full path, aliases included).
    """

    module: int
    how: str
    path_pick: int


@dataclass(frozen=True)
class Recipe:
    bases: tuple[Base, ...]
    cut: tuple[int, int, str]  # (dim, m, "interleaved" | "block"), how every ("piece", k) op cuts
    views: tuple[View, ...]
    params: tuple[int, ...]  # params[k] = index of the view that Parameter object k is made from
    modules: tuple[str | Embedding, ...]  # "module" | "list" | "dict" | Embedding; modules[0] is the root
    ops: tuple[Child | Param | Buffer, ...]
    embedding: InputEmbedding | None


_devices = st.sampled_from(["cpu", "meta"])

# A slice is (dim, start, stop or None for "to the end", step). A piece is piece k of the recipe's `cut`
# (dim, m, style): interleaved x[k::m] or block x[k*n//m:(k+1)*n//m] along dim. All pieces of a recipe share
# the cut, so two pieces of one base never share a byte, yet interleaved pieces and column blocks
# (W[:, :4], W[:, 4:]) have overlapping byte extents: the cases an extent-based check gets wrong.
_slices = st.tuples(
    st.just("slice"),
    st.integers(0, 2),
    st.integers(0, 4),
    st.one_of(st.none(), st.integers(0, 8)),
    st.sampled_from([1, 2, 2, 3]),
)
_pieces = st.tuples(st.just("piece"), st.integers(0, 2))
_cuts = st.tuples(st.integers(0, 1), st.sampled_from([2, 3]), st.sampled_from(["interleaved", "block"]))
_view_ops = st.one_of(
    _pieces,
    _slices,
    _slices,
    st.just(("t",)),
    st.tuples(st.just("select"), st.integers(0, 2), st.integers(0, 5)),
    st.just(("reshape",)),
    st.tuples(st.just("split"), st.integers(2, 3)),
    st.just(("detach",)),
    st.tuples(st.just("dtype"), st.sampled_from(sorted(VIEW_DTYPES))),
    st.tuples(st.just("expand"), st.integers(1, 3)),
    st.just(("numpy",)),
    st.tuples(st.just("substorage"), st.integers(0, 4)),
)


def _draw_bases(draw: st.DrawFn, device: st.SearchStrategy[str]) -> tuple[Base, ...]:
    return tuple(
        draw(
            st.builds(
                Base,
                shape=st.lists(st.sampled_from(range(9)), min_size=1, max_size=3).map(tuple),
                dtype=st.sampled_from(list(DTYPES)),
                device=device,
            )
        )
        for _ in range(draw(st.integers(1, 2)))
    )


def _draw_views(draw: st.DrawFn, bases: int) -> tuple[View, ...]:
    return tuple(
        View(
            draw(st.integers(0, bases - 1)),
            draw(st.one_of(st.none(), st.sampled_from(sorted(VIEW_DTYPES)))),
            draw(st.one_of(st.none(), st.integers(0, 2))),
            tuple(draw(st.lists(_view_ops, max_size=3))),
        )
        for _ in range(draw(st.integers(2, 6)))
    )


def _draw_ops(
    draw: st.DrawFn, params: tuple[int, ...], views: int, n: int
) -> tuple[Child | Param | Buffer, ...]:
    module_index = st.integers(0, n - 1)
    # Every Parameter object is registered once, and every view no Parameter is made from is registered
    # once as a buffer; then random operations nest modules and alias parameters, buffers and modules.
    ops: list[Child | Param | Buffer] = [
        Param(draw(module_index), k, draw(st.sampled_from(PARAM_NAMES))) for k in range(len(params))
    ]
    ops += [
        Buffer(draw(module_index), v, draw(st.sampled_from(BUFFER_NAMES)), draw(st.booleans()))
        for v in range(views)
        if v not in params
    ]
    op_kinds = ["param", "buffer", "child", "child"]
    for _ in range(draw(st.integers(2, 14))):
        kind = draw(st.sampled_from(op_kinds))
        if kind == "child":
            parent = draw(st.integers(0, n - 2))
            ops.append(
                Child(parent, draw(st.integers(parent + 1, n - 1)), draw(st.sampled_from(CHILD_NAMES)))
            )
        elif kind == "param":
            param = draw(st.integers(0, len(params) - 1))
            ops.append(Param(draw(module_index), param, draw(st.sampled_from(PARAM_NAMES))))
        else:
            view, name = draw(st.integers(0, views - 1)), draw(st.sampled_from(BUFFER_NAMES))
            ops.append(Buffer(draw(module_index), view, name, draw(st.booleans())))
    return tuple(ops)


def _draw_embedding(draw: st.DrawFn, modules: tuple[str | Embedding, ...]) -> InputEmbedding | None:
    if not draw(st.sampled_from(range(10))):  # about one recipe in ten names no input embedding
        return None
    return draw(
        st.builds(
            InputEmbedding,
            # mostly an nn.Embedding, sometimes any non-root module (which may contain others)
            module=st.one_of(
                st.sampled_from([i for i, kind in enumerate(modules) if isinstance(kind, Embedding)]),
                st.integers(1, len(modules) - 1),
            ),
            how=st.sampled_from(["module", "path"]),
            path_pick=st.integers(0, 3),
        )
    )


@st.composite
def recipes(draw: st.DrawFn) -> Recipe:
    # The helpers draw in the order of the fields; each takes `draw`, so the draws are this function's own.
    mode = draw(st.sampled_from(["cpu", "meta", "mixed"]))
    device = _devices if mode == "mixed" else st.just(mode)
    bases = _draw_bases(draw, device)
    cut = draw(_cuts)
    views = _draw_views(draw, len(bases))
    params = tuple(draw(st.lists(st.integers(0, len(views) - 1), min_size=1, max_size=5)))

    embeddings = st.builds(
        Embedding,
        num=st.integers(0, 4),
        dim=st.integers(1, 3),
        device=device,
        weight=st.one_of(st.none(), st.integers(0, len(params) - 1)),
    )
    kinds = st.one_of(st.sampled_from(["module", "module", "list", "dict"]), embeddings)
    # modules[1] is always an nn.Embedding, the usual input embedding.
    modules = ("module", draw(embeddings), *draw(st.lists(kinds, max_size=4)))
    ops = _draw_ops(draw, params, len(views), len(modules))
    return Recipe(bases, cut, views, params, modules, ops, _draw_embedding(draw, modules))


# --------------------------------------------------------------------------------------------------
# The builder: executes a recipe, logging the Python it ran.


@dataclass
class Built:
    model: nn.Module
    input_embedding: nn.Module | str | None  # what build_graph is given
    embedding_module: nn.Module | None
    code: list[str]  # the Python the builder ran
    labels: dict[int, str]  # id(tensor) -> the variable it was built as, for `describe`

    def describe(self) -> str:
        """The resulting slots, one a line: what a failure is about, whatever the recipe did on the way."""
        storages: dict[tuple[Any, ...], int] = {}
        lines = ["slots (name <- tensor: dtype shape stride offset, storage):"]
        for name, t in slots(self.model):
            number = storages.setdefault(storage_key(t), len(storages))
            lines.append(
                f"  {name} <- {self.labels.get(id(t), '?')}: {str(t.dtype)[6:]} {tuple(t.shape)} "
                f"{t.stride()} +{t.storage_offset()}, storage #{number} on {t.device}"
            )
        return "\n".join(lines)


def _slice(x: torch.Tensor, var: str, dim: int, start: int, stop: int, step: int) -> tuple[torch.Tensor, str]:
    index = ":, " * dim + f"{start}:{stop}:{step}"
    return x[(slice(None),) * dim + (slice(start, stop, step),)], f"{var}[{index}]"


def _apply_view_op(
    x: torch.Tensor, op: tuple[Any, ...], var: str, cut: tuple[int, int, str]
) -> tuple[torch.Tensor, str | None]:
    """Apply one view op to ``x`` (named ``var``); return the result and its code (None: op skipped)."""
    if op[0] in ("slice", "piece", "select"):
        return _index_op(x, op, var, cut)
    if op[0] in ("numpy", "substorage"):
        return _alias(x, op, var)
    return _shape_op(x, op, var)


def _index_op(
    x: torch.Tensor, op: tuple[Any, ...], var: str, cut: tuple[int, int, str]
) -> tuple[torch.Tensor, str | None]:
    """A slice, a piece of the recipe's ``cut`` or a select, along one dimension (skipped on a 0-d tensor)."""
    kind = op[0]
    if x.dim() == 0:
        return x, None
    if kind == "slice":
        _, dim, start, stop, step = op
        dim %= x.dim()
        size = x.shape[dim]
        start %= size + 1
        stop = size if stop is None else start + stop % (size + 1 - start)
        return _slice(x, var, dim, start, stop, step)
    if kind == "piece":
        dim, m, style = cut
        k = op[1]
        dim %= x.dim()
        k %= m
        size = x.shape[dim]
        if style == "interleaved":
            return _slice(x, var, dim, k, size, m)
        return _slice(x, var, dim, k * size // m, (k + 1) * size // m, 1)
    _, dim, index = op  # select
    dim %= x.dim()
    if x.shape[dim] == 0:
        return x, None
    index %= x.shape[dim]
    return x.select(dim, index), f"{var}.select({dim}, {index})"


def _shape_op(x: torch.Tensor, op: tuple[Any, ...], var: str) -> tuple[torch.Tensor, str | None]:
    """A transpose, reshape, split, detach, dtype reinterpretation or expand of ``x``."""
    kind = op[0]
    if kind == "t":
        if x.dim() < 2:
            return x, None
        return x.transpose(0, 1), f"{var}.transpose(0, 1)"
    if kind == "reshape":  # copies (a new storage) when the view is not viewable as 1-D
        return x.reshape(-1), f"{var}.reshape(-1)"
    if kind == "split":
        _, parts = op
        if x.dim() != 1 or x.shape[0] % parts or not x.is_contiguous():
            return x, None
        return x.view(parts, -1), f"{var}.view({parts}, -1)"
    if kind == "detach":
        return x.detach(), f"{var}.detach()"
    if kind == "dtype":
        name = op[1]
        try:
            return x.view(VIEW_DTYPES[name]), f"{var}.view(torch.{name})"
        except RuntimeError:
            return x, None
    if kind == "expand":
        _, times = op
        return x.unsqueeze(0).expand(times, *x.shape), f"{var}.unsqueeze(0).expand({times}, *{var}.shape)"
    raise AssertionError(f"unknown view op {op!r}")


def _alias(x: torch.Tensor, op: tuple[Any, ...], var: str) -> tuple[torch.Tensor, str | None]:
    """The same bytes through another storage object at another base pointer (CPU only)."""
    if x.device.type != "cpu":
        return x, None
    if op[0] == "numpy":
        try:
            return torch.from_numpy(x.detach().numpy()), f"torch.from_numpy({var}.detach().numpy())"
        except (RuntimeError, TypeError, ValueError):
            return x, None
    keep = min(op[1], x.storage_offset())  # elements of offset left inside the sub-storage
    start = (x.storage_offset() - keep) * x.element_size()
    sub = x.untyped_storage()[start:]
    y = torch.empty(0, dtype=x.dtype).set_(sub, keep, x.shape, x.stride())
    sizes = f"{tuple(x.shape)}, {x.stride()}"
    return y, f"torch.empty(0, dtype={x.dtype}).set_({var}.untyped_storage()[{start}:], {keep}, {sizes})"


def _free_name(module: nn.Module, name: str, replaceable: dict[str, Any]) -> str:
    """``name`` if free on ``module`` (or already in ``replaceable``), else ``name_1``, ``name_2``, ..."""
    candidate, k = name, 0
    while candidate not in replaceable and hasattr(module, candidate):
        k += 1
        candidate = f"{name}_{k}"
    return candidate


def build_model(recipe: Recipe) -> Built:
    code: list[str] = []
    labels: dict[int, str] = {}
    views = _build_views(recipe, code, labels)
    params = _build_params(recipe, views, code, labels)
    modules = _build_modules(recipe, params, code, labels)
    for op in recipe.ops:
        _register(op, modules, params, views, code)
    root = modules[0]
    argument, embedding_module = _name_input_embedding(recipe, modules, code)
    return Built(root, argument, embedding_module, code, labels)


def _build_views(recipe: Recipe, code: list[str], labels: dict[int, str]) -> list[torch.Tensor]:
    bases = []
    for i, b in enumerate(recipe.bases):
        bases.append(torch.zeros(b.shape, dtype=DTYPES[b.dtype], device=b.device))
        code.append(f"base{i} = torch.zeros({b.shape}, dtype=torch.{b.dtype}, device={b.device!r})")

    views = []
    for i, v in enumerate(recipe.views):
        x, expr = bases[v.base], f"base{v.base}"
        lead = (("dtype", v.dtype),) * (v.dtype is not None) + (("piece", v.piece),) * (v.piece is not None)
        for op in lead + v.ops:
            x, step = _apply_view_op(x, op, "_x", recipe.cut)
            if step is not None:
                expr = step.replace("_x", expr)
        views.append(x)
        labels.setdefault(id(x), f"view{i}")
        code.append(f"view{i} = {expr}  # shape {tuple(x.shape)}, stride {x.stride()}")
    return views


def _build_params(
    recipe: Recipe, views: list[torch.Tensor], code: list[str], labels: dict[int, str]
) -> list[nn.Parameter]:
    params = []
    for i, view in enumerate(recipe.params):
        grad = views[view].is_floating_point()
        params.append(nn.Parameter(views[view], requires_grad=grad))
        labels[id(params[-1])] = f"param{i}"
        code.append(f"param{i} = nn.Parameter(view{view}, requires_grad={grad})")
    return params


def _build_modules(
    recipe: Recipe, params: list[nn.Parameter], code: list[str], labels: dict[int, str]
) -> list[nn.Module]:
    modules: list[nn.Module] = []
    for i, kind in enumerate(recipe.modules):
        if isinstance(kind, Embedding):
            modules.append(nn.Embedding(kind.num, kind.dim, device=kind.device))
            labels[id(modules[i].weight)] = f"m{i}'s own weight"
            code.append(f"m{i} = nn.Embedding({kind.num}, {kind.dim}, device={kind.device!r})")
            if kind.weight is not None:
                modules[i].weight = params[kind.weight]
                code.append(f"m{i}.weight = param{kind.weight}")
        else:
            cls = {"module": nn.Module, "list": nn.ModuleList, "dict": nn.ModuleDict}[kind]
            modules.append(cls())
            code.append(f"m{i} = nn.{cls.__name__}()")
    return modules


def _register(
    op: Child | Param | Buffer,
    modules: list[nn.Module],
    params: list[nn.Parameter],
    views: list[torch.Tensor],
    code: list[str],
) -> None:
    if isinstance(op, Child):
        parent, child = modules[op.parent], modules[op.child]
        if isinstance(parent, nn.ModuleList):
            parent.append(child)
            code.append(f"m{op.parent}.append(m{op.child})")
        else:
            name = _free_name(parent, op.name, {})
            parent.add_module(name, child)
            code.append(f"m{op.parent}.add_module({name!r}, m{op.child})")
    elif isinstance(op, Param):
        module = modules[op.module]
        name = _free_name(module, op.name, module._parameters)
        module.register_parameter(name, params[op.param])
        code.append(f"m{op.module}.register_parameter({name!r}, param{op.param})")
    else:
        module = modules[op.module]
        name = _free_name(module, op.name, module._buffers)
        module.register_buffer(name, views[op.view], persistent=op.persistent)
        code.append(f"m{op.module}.register_buffer({name!r}, view{op.view}, persistent={op.persistent})")


def _name_input_embedding(
    recipe: Recipe, modules: list[nn.Module], code: list[str]
) -> tuple[nn.Module | str | None, nn.Module | None]:
    """(what ``build_graph`` is given as ``input_embedding``, the module it names), adding it if needed."""
    if recipe.embedding is None:
        code.append("input_embedding = None")
        return None, None
    root, embedding_module = modules[0], modules[recipe.embedding.module]
    paths = all_paths(root, embedding_module)
    if not paths:  # make sure the chosen module is in the tree
        name = _free_name(root, "emb", {})
        root.add_module(name, embedding_module)
        code.append(f"m0.add_module({name!r}, m{recipe.embedding.module})")
        paths = all_paths(root, embedding_module)
    if recipe.embedding.how == "module":
        code.append(f"input_embedding = m{recipe.embedding.module}")
        return embedding_module, embedding_module
    argument = paths[recipe.embedding.path_pick % len(paths)]
    code.append(f"input_embedding = {argument!r}")
    return argument, embedding_module


def all_paths(root: nn.Module, module: nn.Module) -> list[str]:
    return [p for p, m in root.named_modules(remove_duplicate=False) if m is module]


# --------------------------------------------------------------------------------------------------
# The oracle: brute force over bytes, independent of tiegraph.


def storage_key(t: torch.Tensor) -> tuple[Any, ...]:
    if t.device.type == "meta":
        return ("meta", t.untyped_storage()._cdata)
    return (str(t.device), t.untyped_storage().data_ptr())


def address_space(t: torch.Tensor) -> tuple[tuple[Any, ...], int]:
    """Where ``t``'s storage bytes are numbered from: a real device's addresses from the storage's data
    pointer (two storage objects over one memory meet there), a meta storage's own numbering from 0."""
    if t.device.type == "meta":
        return ("meta", t.untyped_storage()._cdata), 0
    return (str(t.device),), t.untyped_storage().data_ptr()


def byte_addresses(t: torch.Tensor) -> Iterator[int]:
    """Every byte of storage ``t`` reads (tiny tensors only)."""
    size, offset = t.element_size(), t.storage_offset()
    for index in itertools.product(*(range(n) for n in t.shape)):
        element = offset + sum(i * s for i, s in zip(index, t.stride(), strict=True))
        yield from range(element * size, (element + 1) * size)


def slots(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    return [
        *model.named_parameters(remove_duplicate=False),
        *model.named_buffers(remove_duplicate=False),
    ]


def owner(slot: str) -> str:
    return slot.rpartition(".")[0]


def under(path: str, prefix: str) -> bool:
    """``path`` is ``prefix`` or below it (``""`` is the root, above everything)."""
    return prefix == "" or path == prefix or path.startswith(prefix + ".")


@dataclass
class Oracle:
    component_of: dict[str, frozenset[str]]  # slot -> its share component (itself included)
    modules: list[str]  # every module path, aliases included
    groups: list[list[str]]
    primary: str | None
    tied: list[str] | None

    def component(self, name: str) -> list[str]:
        """A slot's component; for a module path, the union over the slots it or its submodules own."""
        if name in self.component_of:
            return sorted(self.component_of[name])
        return sorted(set().union(*(c for s, c in self.component_of.items() if under(owner(s), name))))


def oracle(model: nn.Module, embedding: nn.Module | None) -> Oracle:
    named = slots(model)
    parent = {name: name for name, _ in named}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(a: str, b: str) -> None:
        parent[find(a)] = find(b)

    first_by_object: dict[int, str] = {}
    first_by_byte: dict[tuple[Any, ...], str] = {}
    for name, t in named:
        if t.numel() == 0:  # empty tensors share with nothing, not even with themselves under another name
            continue
        first = first_by_object.setdefault(id(t), name)
        if first != name:
            union(name, first)
        key, origin = address_space(t)
        for byte in byte_addresses(t):
            first = first_by_byte.setdefault((key, origin + byte), name)
            if first != name:
                union(name, first)

    members: dict[str, set[str]] = {}
    for name, _ in named:
        members.setdefault(find(name), set()).add(name)
    component_of = {name: frozenset(members[find(name)]) for name, _ in named}
    groups = sorted(sorted(c) for c in members.values() if len(c) >= 2)

    primary = tied = None
    if embedding is not None:
        primary = next(p for p, m in model.named_modules() if m is embedding)
        inside = [name for name, _ in named if under(owner(name), primary)]
        reached = set().union(*(component_of[name] for name in inside))
        # the embedding's own paths: every path of its module object, and what lies under them
        own = [p for p, m in model.named_modules(remove_duplicate=False) if m is embedding]
        # (a slot of the root module is named by itself, never as '')
        tied = sorted({owner(s) or s for s in reached if not any(under(owner(s), p) for p in own)})
    modules = [path for path, _ in model.named_modules(remove_duplicate=False)]
    return Oracle(component_of, modules, groups, primary, tied)


# --------------------------------------------------------------------------------------------------
# The property.


def _identity_snapshot(model: nn.Module) -> list[tuple[str, int, tuple[Any, ...], int]]:
    return [(name, id(t), storage_key(t), int(t.storage_offset())) for name, t in slots(model)]


def _shares_components(G: nx.MultiDiGraph) -> list[list[str]]:
    """Tie groups as read from the public graph: components of ``shares`` edges over slot nodes."""
    H = nx.Graph()
    H.add_nodes_from(n for n, d in G.nodes(data=True) if d["kind"] == "slot")
    H.add_edges_from((u, v) for u, v, k in G.edges(keys=True) if k == "shares")
    return sorted(sorted(G.nodes[n]["name"] for n in c) for c in nx.connected_components(H) if len(c) >= 2)


@PROPERTY_SETTINGS
@given(recipes())
def test_share_relation_and_tied_targets_match_byte_oracle(build: BuildFn, recipe: Recipe) -> None:
    built = build_model(recipe)
    note("\n".join(built.code))
    note(built.describe())
    model = built.model
    before = _identity_snapshot(model)
    expected = oracle(model, built.embedding_module)

    tg = build(model, input_embedding=built.input_embedding)  # + the suite's check_invariants

    groups = tg.tie_groups(full_paths=True)
    assert groups == expected.groups
    # Plain trees have no wrappers (names like `module` or `base_layer` are not wrappers): canonical == full.
    assert tg.tie_groups() == expected.groups
    for name in [*expected.component_of, *expected.modules]:
        assert tg.component(name, full_paths=True) == expected.component(name), name
        assert tg.component(name) == expected.component(name), name

    assert tg.input_embedding(full_paths=True) == expected.primary
    assert tg.input_embedding() == expected.primary
    if expected.tied is None:
        with pytest.raises(TiegraphError, match="input_embedding"):
            tg.tied_to_input_embedding(full_paths=True)
    else:
        assert tg.tied_to_input_embedding(full_paths=True) == expected.tied
        assert tg.tied_to_input_embedding() == expected.tied
        assert tiegraph.tied_to_input_embedding(model, input_embedding=built.input_embedding) == expected.tied

    assert _shares_components(tg.graph) == expected.groups
    assert _identity_snapshot(model) == before, "analysis changed the model"
