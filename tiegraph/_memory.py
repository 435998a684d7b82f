"""Which storage objects are one memory: overlapping address ranges on one device (see the builder).

In torch 2.13 one storage has one Python object (the builder's storage key), but separate storage objects
can cover the same memory: ``torch.from_numpy`` views of one array, ``torch.frombuffer`` twice over one
buffer, ``set_`` onto a slice of a storage (``untyped_storage()[a:b]``). Bytes decide, so such storages are
merged into one key, and the byte extents of tensors on them are rebased on the merged storage's pointer.

Storages torch allocated itself (resizable) never overlap one another: an allocation is never part of
another. So the common case costs one C-level ``resizable()`` pass, and address ranges are compared only
when some storage is not resizable.
"""

from __future__ import annotations

from collections import Counter
from itertools import repeat
from operator import is_
from typing import Any

import torch

from ._extent import Extents, shift
from ._walk import STORAGE_IDENTITY

__all__ = ["merge_overlapping", "read_once", "rebase"]

_DATA_PTR = torch.UntypedStorage.data_ptr
_RESIZABLE, _NBYTES = torch.UntypedStorage.resizable, torch.UntypedStorage.nbytes


def read_once(storages: list[Any], counts: Counter[Any]) -> bool:
    """Whether no storage in ``storages`` (the slow path's components) can turn out to be read twice.

    True when every storage there and in ``counts`` (the plain slots' storages) was allocated by torch
    (resizable: such a storage never overlaps another, see :func:`merge_overlapping`) and no component
    storage object is read twice or also by a plain slot: then the components need not be counted (a torchao
    model's quantized weights: 3 components each, none shared).
    """
    if not STORAGE_IDENTITY or any(map(is_, storages, repeat(None))):
        return False
    if not (all(map(_RESIZABLE, storages)) and all(map(_RESIZABLE, counts))):
        return False
    # (a dict, not a set: a set of n keys takes a table of up to 8n slots, the dict's is under half that)
    return len(dict.fromkeys(storages)) == len(storages) and not any(map(counts.__contains__, storages))


def merge_overlapping(counts: Counter[Any]) -> dict[Any, Any]:
    """Storage objects on one real device whose address ranges overlap: key -> the lowest one's key.

    Bytes decide, not storage objects: two ``torch.from_numpy`` views of one array, ``torch.frombuffer``
    twice over one buffer or ``set_`` onto a slice of a storage give separate storage objects over the same
    memory, at the same or at different base pointers. Only storages torch did not allocate itself can
    overlap another (an allocation is never part of another), and those are exactly the ones that are not
    resizable: the common case is one C-level pass asking that, and the address ranges are compared only
    when some storage is not (an interval sweep per device). Merged storages keep their own offsets; the
    extents of tensors on them are rebased on the lowest one's pointer (:func:`rebase`).
    """
    if not STORAGE_IDENTITY:
        return {}
    distinct = list(counts)
    try:
        if all(map(_RESIZABLE, distinct)):  # (the common case)
            return {}
        rows = sorted(
            (str(storage.device), _DATA_PTR(storage), _NBYTES(storage), n)
            for n, storage in enumerate(distinct)
        )
    except (RuntimeError, NotImplementedError, TypeError):
        return {}
    merged: dict[Any, Any] = {}
    device, home, end = "", None, 0
    for place, pointer, nbytes, n in rows:
        if not (pointer and nbytes):  # (meta, empty: known by identity only)
            continue
        storage = distinct[n]
        if place == device and pointer < end:
            merged[storage] = home
            counts[home] += counts.pop(storage)
            end = max(end, pointer + nbytes)
        else:
            device, home, end = place, storage, pointer + nbytes
    return merged


def rebase(parts: list[torch.Tensor], homes: list[Any], extents: Extents) -> None:
    """Extents of tensors on a storage merged into another at a lower pointer, made relative to that one."""
    for n, (tensor, home) in enumerate(zip(parts, homes, strict=True)):
        shift(extents, n, _DATA_PTR(tensor.untyped_storage()) - _DATA_PTR(home))
