"""The share relation over slots: which slots share memory, and their tie groups (a step of the build).

:func:`share` is the builder's third room (see :mod:`tiegraph._build` for the design and what was
measured): only the slots on a storage read twice or more, or on the slow path, are looked at; plain
candidates take :func:`_plain_groups`, the rest the general :func:`_groups`. It records the shares, the
tie groups' roots and the candidates' metadata in the index.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Callable, Iterable
from itertools import compress, count, repeat
from operator import attrgetter, is_not, lt, ne, not_
from typing import Any, NamedTuple, cast

import torch

from ._caller import outside_stacklevel
from ._extent import Extent, extents
from ._index import Index
from ._memory import merge_overlapping, read_once, rebase
from ._metadata import parts_of, shape_of, slot_meta
from ._storage import (
    NO_FLAT_VIEWS,
    PLAIN_TYPES,
    Components,
    FlatViews,
    share_components,
    slow_components,
    slow_parts,
)
from ._tensors import leaves
from ._walk import STORAGE_IDENTITY, Keys

__all__ = ["share"]

_DATA_PTR = torch.UntypedStorage.data_ptr
_DTYPE, _DEVICE, _SHAPE = attrgetter("dtype"), attrgetter("device"), attrgetter("shape")
_GRAD, _NBYTES = attrgetter("requires_grad"), attrgetter("nbytes")
_NESTED, _TENSOR_OF = attrgetter("is_nested"), attrgetter("tensor")


class _Piece(NamedTuple):
    slot: int
    tensor: torch.Tensor  # a plain tensor whose bytes the slot reads
    storage: Any  # its storage key (merged)


def share(index: Index, tensors: list[Any], flat: FlatViews, stored: Keys) -> None:
    """Shares and tie groups: only slots on a storage read twice or more (or on the slow path) are looked at.

    ``flat`` (FSDP1): a parameter viewing into a ``FlatParameter`` keeps its unsharded shape, so its slice
    being empty on this rank does not make it share nothing; the FlatParameter itself holds every parameter
    of its unit and is left out of the share relation (it would merge them all into one group).
    """
    if flat.containers:
        _flat_warning(index, tensors, flat)
    keys, slow = stored.keys, stored.slow
    counts = Counter(keys)
    counts.pop(None, None)
    parts = _slow_pieces(index, tensors, slow, counts) if slow else _NO_SLOW
    unknown = parts.unknown
    if unknown:
        _unknown_warning(index, tensors, unknown)
    merged = merge_overlapping(counts) if not parts.apart and _on_real_memory(stored, parts.keys) else {}
    if merged:
        keys = list(map(merged.get, keys, keys))
        parts = parts._replace(keys=list(map(merged.get, parts.keys, parts.keys)))
    repeated = set(compress(counts, map(lt, repeat(1), counts.values())))
    plain = list(compress(range(len(keys)), map(repeated.__contains__, keys)))
    if not (parts.keys or unknown or flat.containers or flat.shapes):
        chosen = list(map(tensors.__getitem__, plain))
        if not any(map(_NESTED, chosen)):  # (the common case: plain strided tensors only)
            if plain:
                _plain_groups(index, keys, plain, chosen, bool(merged))
            return
    pieces = _pieces(tensors, keys, plain, parts, repeated)
    # a slow slot whose components read no repeated storage shares with nothing (one object under two
    # names counts its components twice); only unknown ones are compared by identity
    candidates = sorted({p.slot for p in pieces}.union(unknown))
    if not candidates:
        return
    _groups(index, tensors, candidates, pieces, flat, bool(merged))


class _Slow(NamedTuple):
    """The slow path's slots: their components (slot, tensor, storage key) as flat columns."""

    slots: list[int]
    tensors: list[torch.Tensor]
    keys: list[Any]
    unknown: list[int]  # slots whose storage cannot be followed
    apart: bool  # no component storage can be read twice (nothing for merge_overlapping)


_NO_SLOW = _Slow([], [], [], [], False)


def _slow_pieces(index: Index, tensors: list[Any], slow: list[int], counts: Counter[Any]) -> _Slow:
    """Read the slow path's slots in bulk: record their quantization labels, count their storages.

    The labels are recorded once the storages are counted (they stay in the index; the count's transient
    then no longer adds to them).
    """
    labels = index.deployed.slot_quantization
    labelled = set(compress(count(), map(labels.__contains__, slow))) if labels else ()
    found = slow_parts(list(map(tensors.__getitem__, slow)), labelled)
    unknown = list(map(slow.__getitem__, found.unknown))
    read = found.read
    apart = bool(read) and read_once(read, counts)
    _record_labels(labels, slow, found.labels)
    if not read or apart:
        return _Slow([], [], [], unknown, apart)
    part_slots = list(map(slow.__getitem__, found.owners))
    part_tensors, part_keys = found.tensors, found.storages
    readable = list(map(is_not, part_keys, repeat(None)))
    if not all(readable):  # a component whose storage cannot be read reads nothing
        part_slots = list(compress(part_slots, readable))
        part_tensors = list(compress(part_tensors, readable))
        part_keys = list(compress(part_keys, readable))
    if not STORAGE_IDENTITY:
        part_keys = [storage._cdata for storage in part_keys]
    counts.update(part_keys)
    return _Slow(part_slots, part_tensors, part_keys, unknown, apart)


def _record_labels(labels: dict[int, str], slow: list[int], found: list[str | None]) -> None:
    """Record the slow slots' quantization labels (those of quantized layer classes, set first, stand)."""
    named = cast("Iterable[tuple[int, str]]", compress(zip(slow, found, strict=True), found))
    if labels:
        for s, label in named:
            labels.setdefault(s, label)
    else:
        labels.update(named)


def _pieces(
    tensors: list[Any], keys: list[Any], plain: list[int], slow: _Slow, repeated: set[Any]
) -> list[_Piece]:
    """The general path's pieces: the plain candidates, and the slow components on a repeated storage."""
    pieces = [_Piece(s, tensors[s], keys[s]) for s in plain]
    if slow.keys:
        chosen = list(map(repeated.__contains__, slow.keys))
        if any(chosen):
            pieces.extend(
                map(
                    _Piece,
                    compress(slow.slots, chosen),
                    compress(slow.tensors, chosen),
                    compress(slow.keys, chosen),
                )
            )
    if any(map(_NESTED, map(_TENSOR_OF, pieces))):  # strided nested: its constituents' byte ranges decide
        pieces = [q for p in pieces for q in _unnest(p)]
    return pieces


def _layouts(
    index: Index,
    slots: list[int],
    starts: list[int],
    stops: list[int],
    strided: dict[int, Extent],
    own: list[bool] | None = None,
) -> None:
    """Record each tensor object's bytes and strides (``own``: the piece is the slot's own tensor)."""
    for n, slot in enumerate(slots):
        if own is None or own[n]:
            extent = strided.get(n)
            index.layouts[slot] = (starts[n], stops[n], None if extent is None else extent.strides)


def _unnest(piece: _Piece) -> list[_Piece]:
    if not piece.tensor.is_nested:
        return [piece]
    found = slow_components(piece.tensor) or []
    return [_Piece(piece.slot, c, piece.storage) for c in found]


def _unknown_warning(index: Index, tensors: list[Any], unknown: list[int]) -> None:
    described = []
    for s in unknown:
        reason = leaves(tensors[s]).unknown or "it holds no tensor"
        described.append(f"{index.slot_name_of(s)} ({type(tensors[s]).__name__}: {reason})")
    warnings.warn(
        f"storage unknown for {', '.join(described)}; ties through these slots are not seen (only the same "
        "object under two names counts)",
        RuntimeWarning,
        stacklevel=outside_stacklevel(),
    )


def _on_real_memory(found: Keys, components: list[Any]) -> bool:
    """Whether any storage can have a data pointer (else, on meta, storages never overlap).

    The plain tensors were asked while their keys were taken (:class:`Keys`: asking a tensor costs a third
    of asking its storage on meta, and stops at the first one on real memory); here the slow path's
    components are asked.
    """
    if not STORAGE_IDENTITY:
        return False
    if found.real:
        return True
    try:
        return any(map(_DATA_PTR, components))
    except (RuntimeError, NotImplementedError, TypeError):
        return True


def _groups(
    index: Index,
    tensors: list[Any],
    candidates: list[int],
    pieces: list[_Piece],
    flat: FlatViews,
    merged: bool = False,
) -> None:
    """Union the candidate slots by object identity and byte overlap; record shares and tie groups.

    Metadata and byte extents of the candidates are read in C-level passes (``map`` over unbound tensor
    methods); a pass that raises (a tensor that cannot answer) is redone slot by slot.
    """
    same_as = index.same_as
    empty = index.empty
    _, distinct, held = _same_objects(index, candidates, list(map(tensors.__getitem__, candidates)))
    _known(index, held, distinct, flat)
    joined = Components[int]()
    find, union = joined.find, joined.union
    shares = index.shares
    for s, f in same_as.items():
        if f not in empty:
            shares.append((f, s, "same"))
            union(f, s)
        else:
            empty.add(s)
    owner, parts, homes = _distinct_pieces(tensors, pieces, joined, shares, empty)
    found = extents(parts)
    if merged:  # (extents on a storage merged into one at a lower pointer: made relative to it)
        rebase(parts, homes, found)
    starts, stops, strided = found
    _layouts(
        index, owner, starts, stops, strided, [parts[n] is tensors[slot] for n, slot in enumerate(owner)]
    )
    buckets: dict[Any, list[int]] = {}
    containers = flat.containers
    for n, (stop, home) in enumerate(zip(stops, homes, strict=True)):
        if stop and (not containers or id(parts[n]) not in containers):
            buckets.setdefault(home, []).append(n)
    _, edges = share_components(len(owner), buckets, starts, stops, strided)
    for i, j, how in edges:
        a, b = owner[i], owner[j]
        if a != b:
            shares.append((min(a, b), max(a, b), how))
            union(a, b)
    _record_groups(index, candidates, find)


def _distinct_pieces(
    tensors: list[Any],
    pieces: list[_Piece],
    joined: Components[int],
    shares: list[tuple[int, int, str]],
    empty: set[int],
) -> tuple[list[int], list[torch.Tensor], list[Any]]:
    """Distinct piece tensors: (first slot holding each, the tensor, its storage).

    A piece that is another slot's tensor object joins the two slots (``view``).
    """
    find, union = joined.find, joined.union
    number: dict[int, int] = {}
    owner: list[int] = []
    parts: list[torch.Tensor] = []
    homes: list[Any] = []
    for piece in pieces:
        key = id(piece.tensor)
        n = number.get(key)
        if n is None:
            number[key] = len(owner)
            owner.append(piece.slot)
            parts.append(piece.tensor)
            homes.append(piece.storage)
        elif (
            tensors[piece.slot] is not piece.tensor  # (the same object: the "same" rule decided)
            and find(owner[n]) != find(piece.slot)
            and piece.slot not in empty
            and owner[n] not in empty
        ):  # a component that is another slot's tensor object
            shares.append((min(owner[n], piece.slot), max(owner[n], piece.slot), "view"))
            union(owner[n], piece.slot)
    return owner, parts, homes


def _record_groups(index: Index, candidates: list[int], find: Callable[[int], int]) -> None:
    """``index.root_of`` for every candidate slot in a tie group of two or more."""
    members: dict[int, list[int]] = {}
    for s in candidates:
        members.setdefault(find(s), []).append(s)
    root_of = index.root_of
    for root, group in members.items():
        if len(group) > 1:
            root_of.update(zip(group, repeat(root)))


def _same_objects(
    index: Index, candidates: list[int], chosen: list[Any]
) -> tuple[list[int], list[int], list[Any]]:
    """Record in ``index.same_as`` the slots holding a tensor object an earlier slot holds.

    Returns every candidate's first slot with its object, and the distinct first slots with their tensors.
    """
    ids = list(map(id, chosen))
    first_of = dict(zip(reversed(ids), reversed(candidates), strict=True))  # first slot per tensor object
    firsts = list(map(first_of.__getitem__, ids))
    repeats = list(map(ne, firsts, candidates))
    if not any(repeats):
        return firsts, candidates, chosen
    index.same_as.update(compress(zip(candidates, firsts, strict=True), repeats))
    return firsts, list(compress(candidates, map(not_, repeats))), list(compress(chosen, map(not_, repeats)))


def _plain_groups(
    index: Index, keys: list[Any], candidates: list[int], chosen: list[torch.Tensor], merged: bool = False
) -> None:
    """:func:`_groups` for plain strided tensors only, in C-level passes over the candidates.

    Slots holding one tensor object share ``same``; the distinct tensors are grouped by storage and their
    byte extents decide the rest (:func:`~tiegraph._storage.share_components`, whose components give the
    groups directly: a group's root is the first slot of its first tensor). Empty tensors share nothing.
    """
    same_as, empty, shares = index.same_as, index.empty, index.shares
    firsts, distinct, parts = _same_objects(index, candidates, chosen)
    _known(index, parts, distinct, NO_FLAT_VIEWS)
    for s, f in same_as.items():
        if f in empty:
            empty.add(s)
        else:
            shares.append((f, s, "same"))
    homes = list(map(keys.__getitem__, distinct))
    if len(set(homes)) == len(homes):  # one tensor object per storage (most ties): its slots are the group
        group = firsts
    else:
        found = extents(parts)
        if merged:
            rebase(parts, homes, found)
        starts, stops, strided = found
        _layouts(index, distinct, starts, stops, strided)
        buckets: dict[Any, list[int]] = {}
        for n in compress(range(len(parts)), stops):  # (empty tensors read no byte: in no bucket)
            buckets.setdefault(homes[n], []).append(n)
        roots, edges = share_components(len(parts), buckets, starts, stops, strided)
        shares.extend([(distinct[i], distinct[j], how) for i, j, how in edges])
        number = dict(zip(distinct, count()))
        group = list(map(distinct.__getitem__, map(roots.__getitem__, map(number.__getitem__, firsts))))
    if empty:
        group = [s if f in empty else g for s, f, g in zip(candidates, firsts, group, strict=True)]
    sizes = Counter(group)
    if len(sizes) < len(group):
        grouped = map(lt, repeat(1), map(sizes.__getitem__, group))
        index.root_of.update(compress(zip(candidates, group, strict=True), grouped))


def _known(index: Index, chosen: list[Any], slots: list[int], flat: FlatViews) -> None:
    """Metadata of the candidate slots (one per tensor object) at build, and which of them read no byte."""
    known, empty = index.known, index.empty
    strings: dict[object, str] = {}
    if set(map(type, chosen)) <= PLAIN_TYPES:
        try:
            dtypes = list(map(_DTYPE, chosen))
            devices = list(map(_DEVICE, chosen))
            shapes = list(map(_SHAPE, chosen))
            grads = list(map(_GRAD, chosen))
            nbytes = list(map(_NBYTES, chosen))
        except (RuntimeError, NotImplementedError, TypeError, AttributeError):
            pass  # (a nested tensor has no shape): slot by slot below
        else:
            known.update(zip(slots, zip(dtypes, shapes, devices, grads, strict=True), strict=True))
            if flat.shapes:  # FSDP1's unsharded shapes; ZeRO-3's logical shapes and partitions' devices
                for s, tensor in zip(slots, chosen, strict=True):
                    shape = flat.shapes.get(id(tensor))
                    if shape is not None:
                        dtype, _, device, grad = known[s]
                        device = flat.devices.get(id(tensor), device)
                        known[s] = (dtype, torch.Size(shape), device, grad)
            for s in compress(slots, map(not_, nbytes)):
                if 0 in (known[s][1] or (1,)):
                    empty.add(s)
            return
    for s, tensor in zip(slots, chosen, strict=True):
        known[s] = slot_meta(tensor, parts_of(tensor), flat, strings)
        if not _reads_bytes(tensor, flat):
            empty.add(s)


def _reads_bytes(tensor: Any, flat: FlatViews) -> bool:
    """False for an empty tensor (no byte, a 0 in its shape): it shares with nothing, even itself."""
    if id(tensor) in flat.shapes:
        return 0 not in shape_of(tensor, flat)
    if type(tensor) in PLAIN_TYPES:
        try:
            if int(tensor.nbytes):
                return True
        except (RuntimeError, NotImplementedError, TypeError):
            return True
    return 0 not in shape_of(tensor, flat)


def _flat_warning(index: Index, tensors: list[Any], flat: FlatViews) -> None:
    found = compress(range(len(tensors)), map(flat.containers.__contains__, map(id, tensors)))
    containers = [index.slot_name_of(s) for s in found]
    if containers:
        warnings.warn(
            f"{', '.join(containers)}: FSDP1 FlatParameter(s), counted as containers of the parameters of "
            "their units; ties are seen only among parameters registered as their own slots, which FSDP1 "
            "does with use_orig_params=True (or use FSDP2 fully_shard)",
            stacklevel=outside_stacklevel(),
        )
