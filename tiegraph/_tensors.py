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
builder records it as unknown storage with a warning. :mod:`tiegraph._quantization` names the format of a
slot's tensor.

The builder asks both for all its slow slots at once, through :func:`tiegraph._expand.expand`: the same
answers, decided per class within the call. torchao classes that keep torchao's own ``__tensor_flatten__`` are
read in C-level passes over all their tensors (a quantized model has one class for a hundred weights; calling
``__tensor_flatten__`` per weight cost about 1.3 us and the recursion as much again); the label is one string
per class. Subclasses without ``__tensor_flatten__`` that hold their own storage (bitsandbytes) are checked in
C-level passes too. Nothing is cached between calls, so a class patched between two builds is read as it is.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import nn

__all__ = ["PLAIN", "PLAIN_SET", "SPARSE", "Leaves", "leaves", "ragged_shape"]

PLAIN = (torch.Tensor, nn.Parameter)
PLAIN_SET = frozenset(PLAIN)
_MAX_DEPTH = 16

# the component tensors of each sparse layout, by method name
SPARSE: dict[torch.layout, tuple[str, ...]] = {
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
    if kind in PLAIN:
        _collect_plain(tensor, found, unknown, depth)
        return
    flatten = getattr(kind, "__tensor_flatten__", None)  # (read each time: a class may be patched)
    if flatten is not None:
        _collect_flattened(tensor, flatten, found, unknown, depth)
        return
    if _is_functional(tensor):
        elem = getattr(tensor, "elem", tensor)
        _collect(torch._from_functional_tensor(elem), found, unknown, depth + 1)
        return
    if tensor.layout in SPARSE or tensor.is_nested:
        unknown.append(f"{_name(kind)}: a {tensor.layout} subclass without __tensor_flatten__")
        return
    try:
        tensor.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError, TypeError, AttributeError):
        unknown.append(f"{_name(kind)} has no readable storage and no __tensor_flatten__")
        return
    found.append(tensor)  # a subclass with ordinary storage (Params4bit, Int8Params, fake tensors, ...)


def _collect_plain(tensor: torch.Tensor, found: list[torch.Tensor], unknown: list[str], depth: int) -> None:
    """A plain tensor: itself, a sparse layout's parts, or a strided nested tensor's constituents."""
    layout = tensor.layout
    parts = SPARSE.get(layout)
    if parts is not None:
        for part in parts:
            _collect(getattr(tensor, part)(), found, unknown, depth + 1)
    elif layout != torch.strided:
        unknown.append(f"layout {layout} is not followed")
    elif tensor.is_nested:  # strided nested: one buffer; constituents are views of it
        found.extend(tensor.unbind())
    else:
        found.append(tensor)


def _collect_flattened(
    tensor: torch.Tensor, flatten: Any, found: list[torch.Tensor], unknown: list[str], depth: int
) -> None:
    """A wrapper subclass: the tensors its ``__tensor_flatten__`` names, followed."""
    kind = type(tensor)
    try:
        names, _ = flatten(tensor)
    except Exception as error:  # a subclass's own code may raise anything
        unknown.append(f"{_name(kind)}.__tensor_flatten__ raised {type(error).__name__}")
        return
    for name in names:
        try:
            inner = getattr(tensor, name, None)
        except Exception as error:  # a property of the subclass's own code may raise anything
            unknown.append(f"{_name(kind)}.{name} raised {type(error).__name__}")
            return
        if isinstance(inner, torch.Tensor):
            _collect(inner, found, unknown, depth + 1)


def _is_functional(tensor: torch.Tensor) -> bool:
    elem = getattr(tensor, "elem", None)
    probe = elem if isinstance(elem, torch.Tensor) else tensor
    try:
        return bool(torch._is_functional_tensor(probe))
    except (RuntimeError, TypeError):
        return False


def _name(kind: type) -> str:
    return f"{kind.__module__}.{kind.__qualname__}"


def ragged_shape(tensor: torch.Tensor) -> tuple[int, ...]:
    """The shape, with -1 for ragged dimensions (nested tensors)."""
    try:
        return tuple(int(size) if isinstance(size, int) else -1 for size in tensor.shape)
    except RuntimeError:
        try:
            return (int(tensor.size(0)), -1)
        except RuntimeError:
            return (-1,)
