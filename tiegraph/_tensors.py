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

import functools
from typing import NamedTuple

import torch
from torch import nn

__all__ = ["Leaves", "is_quantized_layer", "is_quantized_layer_type", "leaves", "quantization"]

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
    if kind in _PLAIN:
        layout = tensor.layout
        parts = _SPARSE.get(layout)
        if parts is not None:
            for part in parts:
                _collect(getattr(tensor, part)(), found, unknown, depth + 1)
        elif layout != torch.strided:
            unknown.append(f"layout {layout} is not followed")
        elif tensor.is_nested:  # strided nested: one buffer; constituents are views of it
            found.extend(tensor.unbind())
        else:
            found.append(tensor)
        return
    flatten = getattr(kind, "__tensor_flatten__", None)  # (read each time: a class may be patched)
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
    if tensor.layout in _SPARSE or tensor.is_nested:
        unknown.append(f"{_name(kind)}: a {tensor.layout} subclass without __tensor_flatten__")
        return
    try:
        tensor.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError, TypeError, AttributeError):
        unknown.append(f"{_name(kind)} has no readable storage and no __tensor_flatten__")
        return
    found.append(tensor)  # a subclass with ordinary storage (Params4bit, Int8Params, fake tensors, ...)


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
        if package == "torchao":  # the class is the format (Int8Tensor, Float8Tensor, ...)
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
    kind: type = type(module)
    return is_quantized_layer_type(kind)


@functools.lru_cache(maxsize=4096)
def is_quantized_layer_type(kind: type) -> bool:
    """:func:`is_quantized_layer` for a module class (the builder asks once per class)."""
    names = _QUANTIZED_LAYERS.get(kind.__module__.partition(".")[0])
    return names is not None and any(k.__name__ in names for k in kind.__mro__)


def _shape(tensor: torch.Tensor) -> tuple[int, ...]:
    """The shape, with -1 for ragged dimensions (nested tensors)."""
    try:
        return tuple(int(size) if isinstance(size, int) else -1 for size in tensor.shape)
    except RuntimeError:
        try:
            return (int(tensor.size(0)), -1)
        except RuntimeError:
            return (-1,)
