"""Ties accelerate's hooks break by data pointer (a build step, see :mod:`tiegraph._build`).

accelerate's ``dispatch_model`` keeps a ``tied_params_map``: the ``data_ptr()`` of every parameter
``find_tied_parameters`` reports (one Parameter object under several names) -> the tensor already placed
on each device; every tensor its hooks place whose ``data_ptr()`` is in the map gets that tensor instead
(``set_module_tensor_to_device``). A second Parameter over the same bytes that starts at the same byte in
another layout (``proj.weight = nn.Parameter(embed.weight.t())`` beside ``lm_head.weight =
embed.weight``) then gets the first one's tensor: the untransposed weight in a transposed slot, so the
output changes or the forward raises a shape error. Measured with accelerate 1.15 (``force_hooks=True``,
CPU): without offload the swap happens in ``dispatch_model`` itself, with ``cpu_offload`` at every forward.

:func:`record` finds such slots before anything is placed (and on a placed model whose hooks still serve
the tensors apart); :func:`_wrong_shapes` finds the swap already made, where the module's own sizes
(``nn.Linear``, ``nn.Embedding``) contradict the tensor in its weight slot. A square transposed weight
swapped at dispatch cannot be told from a plain tie afterwards; the pre-flight is the place to catch it.
"""

from __future__ import annotations

from collections import Counter
from itertools import chain, compress, repeat
from operator import attrgetter, eq, is_not, itemgetter, lt, mul
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ._storage import PLAIN_TYPES
from ._walk import STORAGE_IDENTITY

if TYPE_CHECKING:
    from ._index import Index

__all__ = ["record"]

Layout = tuple[tuple[int, ...], tuple[int, ...], torch.dtype]
Place = tuple[tuple[Any, ...], Layout] | None  # a tensor's (pointer, layout), None where it has no pointer

_DATA_PTR, _STORAGE = torch.Tensor.data_ptr, torch.Tensor.untyped_storage
_OFFSET, _ITEMSIZE, _STRIDE = torch.Tensor.storage_offset, torch.Tensor.element_size, torch.Tensor.stride
_SHAPE, _DTYPE, _DEVICE = attrgetter("shape"), attrgetter("dtype"), attrgetter("device")
_SIZED = (nn.Linear, nn.Embedding)  # the module classes whose sizes a weight slot must fit


def record(index: Index, modules: list[nn.Module], tensors: list[Any]) -> None:
    """Record in ``index.deployed.pointer_aliases`` each tie group accelerate's hooks would serve wrongly.

    Only groups holding one tensor object under several names (what accelerate's map is keyed by) are
    read: a few slots of a tied model, none of an untied one. Each entry is ``(slot names, layouts)``.
    Pointers and layouts are read once per tensor object, in C-level passes, and only in groups of two or
    more objects (one object under every name has one pointer and one layout); the module sizes are asked
    only of weight slots of Linear and Embedding modules.
    """
    same_as, root_of = index.same_as, index.root_of
    if not same_as:
        return
    roots = set(map(root_of.get, same_as))  # (an empty slot is in no group: None)
    members: dict[int, list[int]] = {}
    for s, root in compress(root_of.items(), map(roots.__contains__, root_of.values())):
        members.setdefault(root, []).append(s)
    groups = list(map(sorted, members.values()))
    firsts = [list(map(same_as.get, group, group)) for group in groups]
    mixed = [len(set(objects)) > 1 for objects in firsts]  # (one object: one pointer, one layout)
    grouped = list(chain.from_iterable(groups))
    owners = dict(zip(grouped, map(index.owner_of, grouped), strict=True))
    places: dict[int, Place] = {}
    picked = _wrong_shapes(index, modules, tensors, grouped, owners)
    if any(mixed):
        several = list(compress(groups, mixed))
        objects = list(chain.from_iterable(compress(firsts, mixed)))
        places = _places(tensors, list(dict.fromkeys(objects)))
        picked.update(_at_pointer(same_as, several, objects, places))
    found = [chosen for chosen in (sorted(picked.intersection(group)) for group in groups) if chosen]
    names = _names(index, list(chain.from_iterable(found)), owners)
    shown: dict[Any, str] = {}
    out = []
    for chosen in found:
        count = len(chosen)
        out.append(
            (names[:count], [_shown(tensors[s], places.get(same_as.get(s, s)), shown) for s in chosen])
        )
        del names[:count]
    index.deployed.pointer_aliases = out


def _at_pointer(
    same_as: dict[int, int], groups: list[list[int]], objects: list[int], places: dict[int, Place]
) -> set[int]:
    """The slots of ``groups`` at a data pointer their group reads in two layouts, one an identity tie's.

    ``objects``: each slot's first slot (its tensor object), group after group. Keyed by (group, pointer)
    in C-level passes over all groups at once.
    """
    slots = list(chain.from_iterable(groups))
    found: list[Any] = list(map(places.__getitem__, objects))
    group_of = list(chain.from_iterable(map(repeat, map(itemgetter(0), groups), map(len, groups))))
    if None in found:  # (a tensor without a pointer is at none)
        read = list(map(is_not, found, repeat(None)))
        slots, found, group_of = (
            list(compress(slots, read)),
            list(compress(found, read)),
            list(compress(group_of, read)),
        )
    keys = list(zip(group_of, map(itemgetter(0), found), strict=True))
    layouts = Counter(map(itemgetter(0), dict.fromkeys(zip(keys, map(itemgetter(1), found), strict=True))))
    twice = set(compress(layouts, map(lt, repeat(1), layouts.values())))
    tied = twice.intersection(compress(keys, map(same_as.__contains__, slots)))  # (an object under two names)
    return set(compress(slots, map(tied.__contains__, keys))) if tied else set()


def _places(tensors: list[Any], firsts: list[int]) -> dict[int, Place]:
    """Pointer and layout of each tensor object (by its first slot).

    In C-level passes where all are plain tensors on one kind of memory (real or meta); object by object
    otherwise, or where a tensor cannot answer.
    """
    chosen = list(map(tensors.__getitem__, firsts))
    if chosen and set(map(type, chosen)) <= PLAIN_TYPES:
        where: list[tuple[Any, ...]] = []
        try:
            pointers = list(map(_DATA_PTR, chosen))
            if all(pointers):
                where = list(zip(map(str, map(_DEVICE, chosen)), pointers, strict=True))
            elif STORAGE_IDENTITY and not any(pointers):  # (meta: each storage is one Python object)
                storages = map(id, map(_STORAGE, chosen))
                where = list(
                    zip(storages, map(mul, map(_OFFSET, chosen), map(_ITEMSIZE, chosen)), strict=True)
                )
            if where:
                layouts = zip(
                    map(tuple, map(_SHAPE, chosen)), map(_STRIDE, chosen), map(_DTYPE, chosen), strict=True
                )
                return dict(zip(firsts, zip(where, layouts, strict=True), strict=True))
        except (RuntimeError, NotImplementedError, TypeError, AttributeError):
            pass  # (a tensor that cannot answer: object by object below)
    return {f: _place(tensors[f]) for f in firsts}


def _wrong_shapes(
    index: Index, modules: list[nn.Module], tensors: list[Any], slots: list[int], owners: dict[int, int]
) -> set[int]:
    """The weight slots among ``slots`` of Linear and Embedding modules holding a tensor they cannot use.

    The modules' classes are read from the walk's record (no other module object is touched).
    """
    attrs, types = index.s_attr, index.m_type or list(map(type, modules))
    weights = compress(slots, map(eq, map(attrs.__getitem__, slots), repeat("weight")))
    return {s for s in weights if types[owners[s]] in _SIZED and _contradicts(modules[owners[s]], tensors[s])}


def _names(index: Index, slots: list[int], owners: dict[int, int]) -> list[str]:
    """Full names of ``slots``, each owner's path built once (and its ancestors' with it)."""
    parent, segment, attrs = index.m_parent, index.m_name, index.s_attr
    paths: dict[int, str] = {}
    names = []
    for s, i in zip(slots, map(owners.__getitem__, slots), strict=True):
        up = []
        while i not in paths and parent[i] >= 0:
            up.append(i)
            i = parent[i]
        path = paths.get(i, "")
        for j in reversed(up):
            path = paths[j] = f"{path}.{segment[j]}" if path else segment[j]
        names.append(f"{path}.{attrs[s]}" if path else attrs[s])
    return names


def _place(tensor: Any) -> Place:
    """A tensor's pointer (:func:`_pointer`) and layout, or None where it has no pointer."""
    where = _pointer(tensor)
    return None if where is None else (where, _layout(tensor))


def _pointer(tensor: Any) -> tuple[Any, ...] | None:
    """Where a tensor's first byte is: (device, data pointer), or on meta (storage object, byte offset)."""
    try:
        pointer = tensor.data_ptr()
        if pointer:
            return (str(tensor.device), pointer)
        storage = tensor.untyped_storage()
        return (id(storage), tensor.storage_offset() * tensor.element_size())
    except (RuntimeError, NotImplementedError, TypeError, AttributeError):
        return None


def _layout(tensor: torch.Tensor) -> Layout:
    return tuple(tensor.shape), tuple(tensor.stride()), tensor.dtype


def _shown(tensor: torch.Tensor, place: Place, shown: dict[Any, str]) -> str:
    """A tensor's shape and stride as a finding shows them.

    ``place``: its layout as read already; ``shown``: the strings made so far, by shape and stride.
    """
    key = (tuple(tensor.shape), tuple(tensor.stride())) if place is None else place[1][:2]
    text = shown.get(key)
    if text is None:
        text = shown[key] = f"shape {key[0]}, stride {key[1]}"
    return text


def _contradicts(module: nn.Module, tensor: Any) -> bool:
    """Whether a Linear's or an Embedding's weight slot holds a tensor of a shape the module cannot use."""
    if not isinstance(tensor, torch.Tensor):
        return False
    if type(module) is nn.Linear:
        return tuple(tensor.shape) != (module.out_features, module.in_features)
    if type(module) is nn.Embedding:
        return tuple(tensor.shape) != (module.num_embeddings, module.embedding_dim)
    return False
