"""safetensors' ``_find_shared_tensors``, on a plain mapping of names to tensors."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from itertools import compress
from typing import Any, NamedTuple

import torch

from .._extent import extents, shift
from .._storage import share_components, slow_components

__all__ = ["find_shared_tensors"]

_PLAIN = (torch.Tensor, torch.nn.Parameter)


class _Piece(NamedTuple):
    name: str
    tensor: torch.Tensor  # a plain tensor whose bytes the named tensor reads
    key: Any  # its storage


def find_shared_tensors(state_dict: Mapping[str, torch.Tensor], *, exact: bool = False) -> list[set[str]]:
    """safetensors' ``_find_shared_tensors``: the names of a state dict grouped by the memory they read.

    Same call shape and return type as the peer: a list of sets of names, one set per group, names that
    share nothing in sets of their own, groups in the order of their first tensor, the pieces of one storage
    by where they start. No module is needed.

    Parameters
    ----------
    state_dict
        A mapping of names to tensors (a ``state_dict()``, a dict you built). Wrapper subclasses (torchao,
        DTensor, sparse) are followed to the tensors holding their bytes.
    exact
        ``False`` (default): the peer's grouping: tensors on one storage whose byte spans (first to last
        byte) overlap are one group; meta tensors, and tensors on a storage of no bytes, are left out, as
        the peer's tests assert. ``True`` (truth first): tiegraph's share relation: exact bytes (``x[::2]``
        and ``x[1::2]`` share nothing), meta tensors grouped by storage object, empty tensors alone.

    Returns
    -------
    list of set of str

    Notes
    -----
    Where the default differs from safetensors 0.8 (tests in ``tests/test_compat_peers.py``):

    - A transposed or other non-contiguous view: the peer crashes (its ``_end_ptr`` calls ``view(-1)``);
      here its span is read from its strides.
    - ``A, A[10:20], A[50:60]``: the peer's sweep keeps only the last span, so it answers
      ``[{A, A[10:20]}, {A[50:60]}]`` and ``save_model`` keeps a slice of ``A`` as a separate tensor; here
      one group.
    - Wrapper subclasses: the peer reads the wrapper's own (empty or absent) storage; here its components.

    ``exact=True`` differs further where the spans of two strided views overlap but no byte does, and on
    meta tensors (the peer's test asserts they share nothing).

    Examples
    --------
    >>> import torch
    >>> from tiegraph.compat import find_shared_tensors
    >>> a = torch.zeros(100)
    >>> groups = find_shared_tensors({"a": a, "b": a[10:20], "c": a[50:60], "d": torch.zeros(3)})
    >>> [sorted(g) for g in groups]
    [['a', 'b', 'c'], ['d']]
    >>> x = torch.zeros(10)
    >>> [sorted(g) for g in find_shared_tensors({"even": x[::2], "odd": x[1::2]}, exact=True)]
    [['even'], ['odd']]
    """
    if not exact:
        fast = _plain(state_dict)
        if fast is not None:
            return fast
    by_key: dict[Any, list[_Piece]] = {}
    split = False  # some name reads several storages (a wrapper): its groups are merged at the end
    for name, tensor in state_dict.items():
        parts = _pieces(name, tensor, exact)
        split = split or len(parts) > 1
        for piece in parts:
            by_key.setdefault(piece.key, []).append(piece)
    found: list[set[str]] = []
    for members in by_key.values():
        if len(members) == 1:
            found.append({members[0].name})
        else:
            found.extend(_exact_groups(members) if exact else _span_groups(members))
    found = _merge(found) if split else found
    if exact:  # in the order of each group's first name (one bucket holds a whole device's storages)
        position = {name: n for n, name in enumerate(state_dict)}
        found.sort(key=lambda group: min(map(position.__getitem__, group)))
    return found


_STORAGE, _GET_DEVICE = torch.Tensor.untyped_storage, torch.Tensor.get_device
_DATA_PTR, _NBYTES = torch.UntypedStorage.data_ptr, torch.UntypedStorage.nbytes


def _plain(state_dict: Mapping[str, torch.Tensor]) -> list[set[str]] | None:
    """The default mode when every value is a plain strided tensor (None otherwise), in C-level passes."""
    values = list(state_dict.values())
    if not set(map(type, values)) <= set(_PLAIN):
        return None
    try:
        storages = list(map(_STORAGE, values))
    except (RuntimeError, NotImplementedError, TypeError):  # sparse and other layouts: the general path
        return None
    names = list(state_dict)
    pointers, sizes = list(map(_DATA_PTR, storages)), list(map(_NBYTES, storages))
    keys = list(zip(pointers, sizes, map(_GET_DEVICE, values), strict=True))
    counts = Counter(keys)
    shared: dict[Any, list[_Piece]] = {}
    for i in compress(range(len(keys)), map((1).__lt__, map(counts.__getitem__, keys))):
        shared.setdefault(keys[i], []).append(_Piece(names[i], values[i], keys[i]))
    found: list[set[str]] = []
    for name, key, pointer, size in zip(names, keys, pointers, sizes, strict=True):
        if not pointer or not size:  # meta, or a storage of no bytes: left out, as the peer does
            continue
        members = shared.get(key)
        if members is None:
            found.append({name})
        elif members[0].name == name:  # the storage's first tensor: its pieces go here
            found.extend(_span_groups(members))
    return found


def _components(tensor: torch.Tensor) -> list[torch.Tensor]:
    if type(tensor) in _PLAIN and tensor.layout is torch.strided:
        return [tensor]
    return slow_components(tensor) or []


def _pieces(name: str, tensor: torch.Tensor, exact: bool) -> list[_Piece]:
    """The plain tensors a name reads, with their storage keys; what the mode leaves out is left out."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"find_shared_tensors: {name!r} is a {type(tensor).__name__}, not a tensor")
    found = []
    for part in _components(tensor):
        storage = part.untyped_storage()
        pointer = storage.data_ptr()
        if pointer and exact:  # every storage of a device in one bucket: overlaps are by address
            key: Any = ("memory", part.get_device())
        elif pointer:  # (meta tensors' pointers are all 0)
            # (the device as its index, -1 on cpu: hashing a torch.device costs more than the rest)
            key = (pointer, storage.nbytes(), part.get_device())
            if not key[1]:
                continue
        elif exact:
            key = ("storage", storage._cdata)
        else:
            continue
        found.append(_Piece(name, part, key))
    return found


def _span_groups(members: list[_Piece]) -> list[set[str]]:
    """The peer's split of one storage by byte spans, with the sweep keeping the furthest stop seen."""
    starts, stops, _ = extents([p.tensor for p in members])
    spans = sorted(zip(starts, stops, (p.name for p in members), strict=True))
    groups: list[set[str]] = []
    furthest = -1
    for start, stop, name in spans:
        if groups and start < furthest:
            groups[-1].add(name)
        else:
            groups.append({name})
        furthest = max(furthest, stop)
    return groups


def _exact_groups(members: list[_Piece]) -> list[set[str]]:
    """Components of the exact share relation over the pieces on one storage, ordered by first byte.

    Extents are in addresses (each storage's data pointer added; 0 on meta): one bucket may hold several
    storages of a device.
    """
    found = extents([p.tensor for p in members])
    for n, piece in enumerate(members):
        shift(found, n, piece.tensor.untyped_storage().data_ptr())
    starts, stops, strided = found
    bucket = [i for i, stop in enumerate(stops) if stop]  # (an empty tensor reads no byte)
    roots, _ = share_components(len(members), {0: bucket}, starts, stops, strided)
    parts: dict[int, set[str]] = {}
    for i in sorted(range(len(members)), key=lambda i: (starts[i], stops[i], members[i].name)):
        parts.setdefault(roots[i], set()).add(members[i].name)
    return list(parts.values())


def _merge(groups: list[set[str]]) -> list[set[str]]:
    """Groups that name one tensor (a wrapper reads several storages) become one, at the first's place."""
    where: dict[str, int] = {}
    out: list[set[str] | None] = []
    for group in groups:
        hits = sorted({where[n] for n in group if n in where})
        if not hits:
            target = len(out)
            out.append(set(group))
        else:
            target = hits[0]
            merged = out[target]
            assert merged is not None
            merged |= group
            for other in hits[1:]:
                moved = out[other]
                assert moved is not None
                merged |= moved
                out[other] = None
        for name in out[target] or ():
            where[name] = target
    return [group for group in out if group is not None]
