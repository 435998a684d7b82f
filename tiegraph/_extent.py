"""Byte extents: which bytes of its storage a tensor reads, from metadata only (the one rule).

A strided tensor reads ``(storage_offset + sum(i_k * stride_k)) * itemsize + [0, itemsize)`` over its
index box. :func:`extents` gives, for many tensors at once, the first byte of that set and the byte after
its last, relative to the start of the tensor's storage, and the full :class:`Extent` (sizes and strides)
of the tensors that are not contiguous; whether two tensors on one storage share a byte is decided from
these (:func:`tiegraph._storage.share_components`). Every caller asks here: the builder's share relation
(in bulk, over the candidates), the metadata read on first use, and the drop-ins of :mod:`tiegraph.compat`.

What a tensor reads, by kind (no tensor data is read, ever):

- plain strided (``Tensor``, ``Parameter``; on CPU, an accelerator or meta alike: on meta every data
  pointer is 0 but offsets, sizes and strides are real): contiguous, ``[offset, offset + nbytes)``;
  otherwise ``[offset, offset + (span + 1) * itemsize)`` with its :class:`Extent`, dense when its elements
  tile that range without a gap (a transpose, any permutation), else read exactly by the overlap search.
- empty (a 0 in its shape): ``(0, 0)``, no byte: it shares with nothing, even with itself.
- nested (strided layout): its whole buffer, ``[0, storage nbytes)``. Its own offset and size describe
  the buffer only loosely; the builder asks its constituents instead where the answer matters.
- DTensor: its local shard's bytes (what this rank holds).
- a tensor whose metadata raises (a layout or subclass that cannot answer ``nbytes``, ``storage_offset``
  or ``stride``): its whole storage, ``[0, storage nbytes)``, so that it may share rather than be missed.
  When its storage cannot be read either, the error is torch's (callers ask only tensors whose storage
  they could read: the builder's wrapper subclasses, sparse tensors and the like are asked through their
  components, :func:`tiegraph._tensors.leaves`).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import compress
from operator import add, attrgetter, mul, not_
from typing import NamedTuple

import torch

__all__ = ["Extent", "Extents", "extents", "shift", "strided_extent"]

_PLAIN = frozenset((torch.Tensor, torch.nn.Parameter))
_OFFSET, _ITEMSIZE = torch.Tensor.storage_offset, torch.Tensor.element_size
_NBYTES, _NESTED = attrgetter("nbytes"), attrgetter("is_nested")
_CONTIGUOUS = torch.Tensor.is_contiguous
_CANNOT = (RuntimeError, NotImplementedError, TypeError, AttributeError)  # (a tensor that cannot answer)


class Extent(NamedTuple):
    """The bytes a tensor reads, relative to the start of its storage."""

    start: int
    stop: int
    dense: bool
    offset: int  # storage offset in bytes
    sizes: tuple[int, ...]
    strides: tuple[int, ...]  # in elements
    itemsize: int


#: byte starts and stops of tensors, and the full Extent of the non-contiguous ones (by position)
Extents = tuple[list[int], list[int], dict[int, Extent]]


def extents(tensors: Sequence[torch.Tensor]) -> Extents:
    """Byte extents of many tensors at once: ``(starts, stops, strided)`` (see the module for each kind).

    ``starts[n]``, ``stops[n]``: tensor ``n``'s bytes within its storage (``(0, 0)``: none);
    ``strided[n]``: its full :class:`Extent` when it is not contiguous (its bytes need not fill the range).
    Plain tensors are read in C-level passes (``map`` over unbound tensor methods); when some tensor is
    of another type, is nested or cannot answer, every tensor is read one by one by the same rule.

    Examples
    --------
    >>> import torch
    >>> w = torch.zeros(4, 3)
    >>> starts, stops, strided = extents([w, w.t(), w[1:, ::2], w[:0]])
    >>> starts, stops, sorted(strided)
    ([0, 0, 12, 0], [48, 48, 48, 0], [1, 2])
    >>> strided[1].dense, strided[2].dense
    (True, False)
    """
    if set(map(type, tensors)) <= _PLAIN:
        try:
            itemsizes = list(map(_ITEMSIZE, tensors))
            starts = list(map(mul, map(_OFFSET, tensors), itemsizes))
            nbytes = list(map(_NBYTES, tensors))
            contiguous = list(map(_CONTIGUOUS, tensors))
            nested = any(map(_NESTED, tensors))
        except _CANNOT:
            nested = True
        if not nested:
            stops = list(map(add, starts, nbytes))
            strided: dict[int, Extent] = {}
            for n in compress(range(len(tensors)), map(not_, contiguous)):
                if nbytes[n]:
                    extent = strided[n] = strided_extent(tensors[n], starts[n], itemsizes[n])
                    stops[n] = extent.stop
            for n in compress(range(len(tensors)), map(not_, nbytes)):
                starts[n] = stops[n] = 0
            return starts, stops, strided
    rows = list(map(_one, tensors))
    return [r[0] for r in rows], [r[1] for r in rows], {n: r[2] for n, r in enumerate(rows) if r[2]}


def _one(tensor: torch.Tensor) -> tuple[int, int, Extent | None]:
    """:func:`extents`' rule for one tensor of any kind: (start, stop, its Extent when not contiguous)."""
    local = getattr(tensor, "_local_tensor", None)  # (a DTensor: its local shard)
    if not isinstance(local, torch.Tensor):
        local = tensor
    try:
        if local.is_nested:
            raise NotImplementedError
        nbytes = int(local.nbytes)
        if not nbytes:
            return 0, 0, None
        itemsize = local.element_size()
        offset = int(local.storage_offset()) * itemsize
        if local.is_contiguous():
            return offset, offset + nbytes, None
        found = strided_extent(local, offset, itemsize)
        return offset, found.stop, found
    except _CANNOT:
        return 0, int(local.untyped_storage().nbytes()), None


def strided_extent(tensor: torch.Tensor, offset: int, itemsize: int) -> Extent:
    """The extent of a non-contiguous tensor whose storage offset is ``offset`` bytes."""
    sizes = tuple(tensor.shape)
    strides = tuple(tensor.stride())
    span = sum((size - 1) * stride for size, stride in zip(sizes, strides, strict=True))
    return Extent(
        offset, offset + (span + 1) * itemsize, _dense(sizes, strides), offset, sizes, strides, itemsize
    )


def _dense(sizes: Sequence[int], strides: Sequence[int]) -> bool:
    """True when the elements tile ``[0, numel)`` with no gap and no repeat, in some dimension order."""
    expected = 1
    for stride, size in sorted((st, sz) for sz, st in zip(sizes, strides, strict=True) if sz != 1):
        if stride != expected:
            return False
        expected *= size
    return True


def shift(found: Extents, n: int, by: int) -> None:
    """Move tensor ``n``'s extent ``by`` bytes (to another origin: an address, a merged storage's start).

    An empty tensor stays ``(0, 0)``.
    """
    starts, stops, strided = found
    if by and stops[n]:
        starts[n] += by
        stops[n] += by
        extent = strided.get(n)
        if extent is not None:
            strided[n] = extent._replace(
                start=extent.start + by, stop=extent.stop + by, offset=extent.offset + by
            )
