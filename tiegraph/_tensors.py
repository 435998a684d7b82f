"""Tensors that are not plain: wrapper subclasses, sparse and nested layouts, and quantization labels.

The builder's fast path handles ``torch.Tensor`` and ``nn.Parameter`` with ordinary storage. Everything
else comes here, to :func:`leaves`: the plain tensors that really hold the bytes, found without reading
any data:

- wrapper subclasses (torchao quantized and float8 tensors, quanto ``QTensor``, jagged ``NestedTensor``,
  ``DTensor``) through ``__tensor_flatten__``, recursively;
- functional tensors to the tensor they wrap;
- sparse COO/CSR/CSC/BSR/BSC to their index and value tensors;
- strided nested tensors to their constituents (views of one buffer);
- subclasses with ordinary storage (bitsandbytes ``Params4bit``/``Int8Params``, fake tensors) as they are.

A slot reads every storage its leaves read; what cannot be followed gets a reason instead, and the
builder records it as unknown storage with a warning. :func:`quantization` names the format of a slot's
tensor (``"torchao.Int8Tensor"``, ``"bitsandbytes.nf4"``, ``"quanto.qint8"``, ``"hqq.4bit"``) or None.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import nn

from .storage import Extent, share_components, strided_extent

if TYPE_CHECKING:
    from ._index import Index

__all__ = ["Leaves", "is_quantized_layer", "leaves", "quantization", "slow_path"]

_PLAIN = (torch.Tensor, nn.Parameter)
_MAX_DEPTH = 16

# the component tensors of each sparse layout, by method name
_SPARSE: dict[torch.layout, tuple[str, ...]] = {
    torch.sparse_coo: ("_indices", "_values"),
    torch.sparse_csr: ("crow_indices", "col_indices", "values"),
    torch.sparse_bsr: ("crow_indices", "col_indices", "values"),
    torch.sparse_csc: ("ccol_indices", "row_indices", "values"),
    torch.sparse_bsc: ("ccol_indices", "row_indices", "values"),
}


class Leaves(NamedTuple):
    """The plain tensors holding a tensor's bytes, and why some could not be followed ('' when none)."""

    tensors: list[torch.Tensor]
    unknown: str


def leaves(tensor: torch.Tensor) -> Leaves:
    """The plain tensors (ordinary storage, strided layout) whose bytes ``tensor`` reads.

    Only metadata is touched: ``__tensor_flatten__`` names, sparse index/value accessors, nested views.

    Examples
    --------
    >>> import torch
    >>> base = torch.arange(6.0)
    >>> csr = torch.sparse_csr_tensor(torch.tensor([0, 1, 2]), torch.tensor([0, 1]), base[:2], (2, 2))
    >>> found = leaves(csr)
    >>> len(found.tensors), found.tensors[2].untyped_storage().data_ptr() == base.data_ptr(), found.unknown
    (3, True, '')
    """
    found: list[torch.Tensor] = []
    unknown: list[str] = []
    _collect(tensor, found, unknown, 0)
    return Leaves(found, "; ".join(dict.fromkeys(unknown)))


def _collect(tensor: torch.Tensor, found: list[torch.Tensor], unknown: list[str], depth: int) -> None:
    kind = type(tensor)
    if depth > _MAX_DEPTH:
        unknown.append(f"{_name(kind)} nests wrapper tensors more than {_MAX_DEPTH} deep")
        return
    layout = tensor.layout
    parts = _SPARSE.get(layout)
    if parts is not None:
        for part in parts:
            _collect(getattr(tensor, part)(), found, unknown, depth + 1)
        return
    if kind in _PLAIN:
        if tensor.is_nested and layout == torch.strided:  # one buffer; constituents are views of it
            found.extend(tensor.unbind())
        elif layout == torch.strided:
            found.append(tensor)
        else:
            unknown.append(f"layout {layout} is not followed")
        return
    flatten = getattr(kind, "__tensor_flatten__", None)
    if flatten is not None:
        try:
            names, _ = flatten(tensor)
        except Exception as error:  # a subclass's own code may raise anything
            unknown.append(f"{_name(kind)}.__tensor_flatten__ raised {type(error).__name__}")
            return
        for name in names:
            inner = getattr(tensor, name, None)
            if isinstance(inner, torch.Tensor):
                _collect(inner, found, unknown, depth + 1)
        return
    if _is_functional(tensor):
        elem = getattr(tensor, "elem", tensor)
        _collect(torch._from_functional_tensor(elem), found, unknown, depth + 1)
        return
    try:
        tensor.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError, TypeError, AttributeError):
        unknown.append(f"{_name(kind)} has no readable storage and no __tensor_flatten__")
        return
    found.append(tensor)  # a subclass with ordinary storage (Params4bit, Int8Params, FakeTensor, ...)


def _is_functional(tensor: torch.Tensor) -> bool:
    elem = getattr(tensor, "elem", None)
    probe = elem if isinstance(elem, torch.Tensor) else tensor
    try:
        return bool(torch._is_functional_tensor(probe))
    except (RuntimeError, TypeError):
        return False


def _name(kind: type) -> str:
    return f"{kind.__module__}.{kind.__qualname__}"


# ---------------------------------------------------------------------------------------- quantization

# module classes whose weight is expected to be quantized: (top-level package, class names)
_QUANTIZED_LAYERS: dict[str, frozenset[str]] = {
    "bitsandbytes": frozenset(
        {"Linear4bit", "LinearFP4", "LinearNF4", "Linear8bitLt", "Embedding4bit", "Embedding8bit"}
    ),
    "hqq": frozenset({"HQQLinear"}),
}


def quantization(tensor: torch.Tensor, module: nn.Module | None = None, attr: str = "") -> str | None:
    """The quantization format of a tensor sitting at ``module.attr``, or None for a plain float tensor.

    Examples
    --------
    >>> import torch
    >>> quantization(torch.zeros(2)) is None, quantization(torch.zeros(2, dtype=torch.float8_e4m3fn))
    (True, 'torch.float8_e4m3fn')
    """
    kind = type(tensor)
    package = kind.__module__.partition(".")[0]
    if kind not in _PLAIN:
        if package == "torchao":
            return f"torchao.{kind.__name__}"
        if package == "optimum" and kind.__module__.startswith("optimum.quanto"):
            qtype = getattr(tensor, "qtype", None)
            name = getattr(qtype, "name", None)
            return f"quanto.{name}" if name else f"quanto.{kind.__name__}"
        if package == "bitsandbytes":
            if kind.__name__ == "Params4bit":
                quantized = getattr(tensor, "bnb_quantized", False)
                return f"bitsandbytes.{getattr(tensor, 'quant_type', '4bit')}" if quantized else None
            if kind.__name__ == "Int8Params":
                return "bitsandbytes.int8" if tensor.dtype == torch.int8 else None
    if module is not None and _package(module) == "hqq" and attr == "W_q":
        meta = getattr(module, "meta", None)
        nbits = meta.get("nbits") if isinstance(meta, dict) else None
        return f"hqq.{nbits}bit" if nbits else "hqq"
    dtype = tensor.dtype
    if dtype.is_floating_point and dtype.itemsize == 1:
        return str(dtype)
    return None


def _package(module: nn.Module) -> str:
    return type(module).__module__.partition(".")[0]


def is_quantized_layer(module: nn.Module) -> bool:
    """A layer class that computes with a quantized weight (bitsandbytes ``Linear4bit``, hqq, ...).

    Such a layer holding a plain float weight is broken: forward expects the quantized format.
    """
    names = _QUANTIZED_LAYERS.get(_package(module))
    return names is not None and any(k.__name__ in names for k in type(module).__mro__)


# ------------------------------------------------------------------------------------ the builder's slow path


def slow_path(
    index: Index,
    tensors: list[torch.Tensor],
    slow: list[int],
    buckets: dict[int, list[int]],
    extents: dict[int, Extent],
    storage_number: dict[object, int],
    dtypes: dict[torch.dtype, tuple[str, int]],
) -> tuple[list[int], list[tuple[int, int, str]]]:
    """Storages, extents and share components when some tensors are not plain (``slow``: their numbers).

    Every leaf of a slow tensor (see :func:`leaves`) reads its own storage extent; the first stands in the
    tensor's own row, the others get numbers after the real tensors and are joined to their tensor after
    the sweep. A tensor with no leaf keeps storage -1 (compared by identity only) and a warning says why.
    Returns ``share_components``' ``(roots, edges)`` over the real tensors.
    """
    count = len(tensors)
    t_storage, t_start, t_stop = index.t_storage, index.t_start, index.t_stop
    starts, stops = list(t_start), list(t_stop)
    owner: list[int] = []  # per extra leaf: the tensor it belongs to
    touched: set[int] = set()
    labels: dict[int, str] = {}
    unknown: list[str] = []
    for number in slow:
        tensor = tensors[number]
        label = quantization(tensor)
        if label:
            labels[number] = label
        if t_storage[number] >= 0 and getattr(type(tensor), "__tensor_flatten__", None) is None:
            continue  # ordinary storage (Params4bit, Int8Params, fake tensors): the fast path was exact
        found = leaves(tensor)
        index.t_shape[number] = _shape(tensor)
        if found.unknown or not found.tensors:
            t_storage[number], t_start[number], t_stop[number] = -1, 0, 0
            starts[number] = stops[number] = 0
            slot = index.s_name[index.s_tensor.index(number)]
            reason = found.unknown or "it holds no tensor"
            unknown.append(f"{slot} ({type(tensor).__name__}: {reason})")
            continue
        for k, leaf in enumerate(found.tensors):
            st, start, stop, extent = _place(index, leaf, storage_number, dtypes)
            i = number if k == 0 else count + len(owner)
            if k == 0:
                t_storage[number], t_start[number], t_stop[number] = st, start, stop
                starts[number], stops[number] = start, stop
            else:
                owner.append(number)
                starts.append(start)
                stops.append(stop)
            if extent is not None:
                extents[i] = extent
            if stop:
                touched.add(st)
                buckets.setdefault(st, [])
                if i >= count:
                    buckets[st].append(i)
    if touched:  # every non-empty tensor reading a touched storage joins its bucket
        for number, st in enumerate(t_storage):
            if st in touched and t_stop[number] and number not in buckets[st]:
                buckets[st].append(number)
    if labels:
        index.extra["tensor_quantization"] = labels
    if unknown:
        warnings.warn(
            f"storage unknown for {', '.join(unknown)}; ties through these slots are not seen (only the same "
            "object under two names counts)",
            RuntimeWarning,
            stacklevel=4,
        )
    total = count + len(owner)
    roots, edges = share_components(total, buckets, starts, stops, extents)
    if not owner:
        return roots, edges
    parent = list(range(count))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def real(i: int) -> int:
        return i if i < count else owner[i - count]

    merged: dict[tuple[int, int], str] = {}
    for i, j, how in edges:
        a, b = real(i), real(j)
        if a == b:
            continue
        pair = (min(a, b), max(a, b))
        merged.setdefault(pair, how)
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return [find(i) for i in range(count)], [(a, b, how) for (a, b), how in merged.items()]


def _place(
    index: Index,
    leaf: torch.Tensor,
    storage_number: dict[object, int],
    dtypes: dict[torch.dtype, tuple[str, int]],
) -> tuple[int, int, int, Extent | None]:
    """(storage number, start, stop, strided extent or None) of a plain leaf, adding its storage if new."""
    storage = leaf.untyped_storage()
    pointer = storage.data_ptr()
    device = str(leaf.device)
    key: object = (device, pointer) if pointer else storage._cdata
    st = storage_number.get(key)
    if st is None:
        st = storage_number[key] = len(index.st_pointer)
        index.st_pointer.append(pointer)
        index.st_device.append(device)
        index.st_nbytes.append(storage.nbytes())
    nbytes = int(leaf.nbytes)
    if not nbytes:
        return st, 0, 0, None
    itemsize = leaf.element_size()
    offset = int(leaf.storage_offset()) * itemsize
    if leaf.is_contiguous():
        return st, offset, offset + nbytes, None
    extent = strided_extent(leaf, offset, itemsize)
    return st, offset, extent.stop, extent


def _shape(tensor: torch.Tensor) -> tuple[int, ...]:
    """The shape, with -1 for ragged dimensions (nested tensors)."""
    try:
        return tuple(int(size) if isinstance(size, int) else -1 for size in tensor.shape)
    except RuntimeError:
        try:
            return (int(tensor.size(0)), -1)
        except RuntimeError:
            return (-1,)
