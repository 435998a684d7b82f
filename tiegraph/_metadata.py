"""Tensor metadata on first use: dtype, shape, device, requires_grad, byte extents and the storage table.

A graph is a record of the model at build time. The builder (:mod:`tiegraph._build`) reads full metadata
only for slots on shared storages (and for slots hooks serve); for every slot it also captures the one
fact that changes in place (requires_grad) and a *witness*: the identity of the storage the slot read
(the C++ storage object), or of the tensor object for the slow path's wrapper tensors (:func:`capture`).
:func:`watch` lets the index read dtype, shape, device and byte extents of the other slots later, by
re-walking the model through a weak reference (:func:`fill_metadata`), at the latest when the model dies.
A slot is read then only if it is still there (same full name, still a parameter or still a buffer) and
still holds what it held at build (same witness); otherwise its dtype, shape, device and storage are
*unknown* (``"unknown"``, ``None``, ``"unknown"``, no storage), never the values of the changed model. So
a graph taken before ``get_peft_model``, ``merge_and_unload``, ``.half()``, ``.to()``, a replaced module
or ``del model`` keeps answering, and says plainly what it can no longer know.

The witness's limit: a tensor re-viewed over the same storage (``p.data = p.data.view(...)``) keeps its
witness, and its shape and dtype are read as they are now. dtype is not captured for every slot: a third
pass over every tensor costs about 8% of a build, and dtype changes only with a new storage otherwise.
"""

from __future__ import annotations

import sys
import weakref
from array import array
from collections.abc import Callable
from functools import partial
from operator import attrgetter
from typing import Any

import torch
from torch import nn

from ._engine_marks import with_partitions
from ._extent import extents
from ._index import Index
from ._records import SlotMeta
from ._storage import PLAIN_TYPES, FlatViews, slow_components
from ._tensors import ragged_shape
from ._walk import Keys, flat_views, hooked_paths, key_of, serve_hooked, slots_of, storages, walk

#: The device (and, in :class:`SlotMeta`, ``shape=None``) of a slot whose tensor the graph can no longer
#: read: the model changed or died before the metadata was first needed, and the build did not capture it.
UNKNOWN = "unknown"

_GRAD, _CDATA = attrgetter("requires_grad"), attrgetter("_cdata")


def shape_of(tensor: Any, flat: FlatViews) -> tuple[int, ...]:
    shape = flat.shapes.get(id(tensor))
    if shape is not None:
        return tuple(shape)
    try:
        return tuple(tensor.shape)
    except (RuntimeError, NotImplementedError, TypeError, AttributeError):
        return ragged_shape(tensor)  # nested: -1 for ragged dimensions


def parts_of(tensor: Any) -> list[torch.Tensor] | None:
    """The plain tensors holding a slot's bytes: itself, or what the slow path says."""
    if type(tensor) in PLAIN_TYPES and tensor.layout is torch.strided:
        return [tensor]
    return slow_components(tensor)


def slot_meta(
    tensor: Any, parts: list[torch.Tensor] | None, flat: FlatViews, strings: dict[object, str]
) -> SlotMeta:
    """dtype, shape (FSDP1: unsharded), device and requires_grad; strings interned per build."""
    try:
        device, dtype = tensor.device, tensor.dtype
    except (RuntimeError, NotImplementedError, TypeError, AttributeError):
        local = parts[0] if parts else tensor
        device, dtype = local.device, local.dtype
    device = flat.devices.get(id(tensor), device)  # a ZeRO-3 parameter is where its partition is
    dname = strings.get(dtype)
    if dname is None:
        dname = strings[dtype] = str(dtype).removeprefix("torch.")
    name = strings.get(device)
    if name is None:
        name = strings[device] = str(device)
    # (a torch.Size, as before: JSON writes it as a list)
    shape = torch.Size(shape_of(tensor, flat))
    return SlotMeta(dname, shape, name, bool(getattr(tensor, "requires_grad", False)))


def watch(index: Index, model: nn.Module) -> None:
    """Let the index read metadata from the model on first use, and at the latest when the model dies.

    The index keeps a weak reference to the model. So that ``build_graph(make_model()).to_json()`` still
    works, the reference's callback holds the model's instance ``__dict__`` (not the model): while the model
    lives, that costs nothing (the model holds it anyway); when the model is collected, the callback fills
    the index's metadata from the dict (one re-walk) and lets it go. The index holds the reference alone, so
    it goes (callback and dict with it) as soon as the metadata is filled or the index dies, and no model
    outlives its own lifetime because of a graph. At interpreter shutdown the callback does nothing.
    (One ``weakref.ref`` with a callback: two ``weakref.finalize`` objects, one on the model and one on the
    index to detach it, cost several times more per build.)
    """
    index.meta_filler = fill_metadata
    on_death = partial(_on_model_death, weakref.ref(index), type(model), model.__dict__)
    index.model_ref = weakref.ref(model, on_death)


class _Shell:
    """Stands in for a collected model whose instance ``__dict__`` is still held (see :func:`watch`)."""


def _on_model_death(
    index_ref: weakref.ref[Index],
    kind: type,
    state: dict[str, Any],
    _model_ref: object,
    finalizing: Callable[[], bool] = sys.is_finalizing,  # (bound now: module globals are gone at shutdown)
) -> None:
    index = index_ref()
    if index is None or index.meta_filler is None or finalizing():
        return
    shell: Any
    try:
        shell = object.__new__(kind)
    except TypeError:
        shell = _Shell()
    shell.__dict__ = state
    index.model_ref = lambda: shell
    try:
        fill_metadata(index)
    except Exception:  # (a weakref callback cannot raise: what was not read is reported unknown instead)
        pass
    finally:
        index.model_ref = None


def capture(index: Index, tensors: list[Any], found: Keys, hooked: list[int], flat: FlatViews) -> None:
    """At build: requires_grad and the witness of every slot; full metadata of the slots hooks serve.

    Two C-level passes over the slots. ``requires_grad`` is captured because it changes without a new
    storage (``get_peft_model`` freezes the base model); dtype, shape and device change only with one, which
    the witness catches. The served slots (a dispatched model's hooked modules) are read whole, since a
    hook may serve a new tensor at every access.
    """
    try:
        index.b_grad = bytes(map(_GRAD, tensors))
    except (RuntimeError, NotImplementedError, TypeError, AttributeError):
        index.b_grad = bytes(bool(_read(_GRAD, t)) for t in tensors)
    index.witness = witnesses(tensors, found)
    if hooked:
        known = index.known
        strings: dict[object, str] = {}
        for i in hooked:
            for s in range(index.slot_start(i), index.slot_start(i + 1)):
                first = index.same_as.get(s, s)
                if first not in known:
                    tensor = tensors[first]
                    known[first] = slot_meta(tensor, parts_of(tensor), flat, strings)


def _read(get: attrgetter[Any], tensor: Any) -> Any:
    try:
        return get(tensor)
    except (RuntimeError, NotImplementedError, TypeError, AttributeError):
        return None


def witnesses(tensors: list[Any], found: Keys) -> array[int]:
    """Per slot: its storage's C++ identity (``_cdata``), or its tensor object's for the slow path."""
    keys = found.keys
    if not found.slow:
        return array("Q", list(map(_CDATA, keys)) if keys and not isinstance(keys[0], int) else keys)
    out = array("Q", map(id, tensors))
    for s, key in enumerate(keys):
        if key is not None:
            out[s] = key if isinstance(key, int) else key._cdata
    return out


def fill_metadata(index: Index) -> None:
    """dtype, shape, device, requires_grad, byte extents and the storage table, by re-walking the model.

    Only slots that are still there and still hold what they held at build are read (see the module
    docstring); the others are unknown. Never raises for a changed or collected model.
    """
    model = index.model_ref() if index.model_ref is not None else None
    count = index.num_slots
    tensors: list[Any] = [None] * count
    flat = FlatViews({}, set())
    if model is not None:
        tree = walk(model)
        modules = tree.modules
        hooked = hooked_paths(tree)
        slots = slots_of(tree, keys=False)
        kinds = set(tree.types)
        serve_hooked(index, modules, slots.tensors, hooked, kinds, record=False)
        flat = with_partitions(flat_views(modules, kinds), slots.tensors)
        same = tree.parents == index.m_parent and tree.names == index.m_name
        if (
            same
            and tree.numbers == index.d_number
            and slots.sizes == index.d_size
            and slots.attrs == index.s_attr
        ):
            tensors = slots.tensors
        else:
            tensors = _by_name(
                index, tree.parents, tree.names, slots.sizes, slots.attrs, tree.numbers, slots.tensors
            )
        tensors = _verified(index, tensors)
    with torch._C.DisableTorchFunctionSubclass():
        read_metadata(index, tensors, flat)
    index.meta_filler = None
    index.model_ref = None  # (and the death callback with the model's ``__dict__``)


def _by_name(
    index: Index,
    parents: list[int],
    names: list[str],
    sizes: list[int],
    attrs: list[str],
    numbers: list[int],
    tensors: list[Any],
) -> list[Any]:
    """The current tensor of every slot of the build, found by full name and kind (None: gone)."""
    now = Index(lazy=True)
    now.m_parent, now.m_name, now.d_number, now.d_size, now.s_attr = parents, names, numbers, sizes, attrs
    where = {key: s for s, key in enumerate(zip(now.s_name, now.s_param, strict=True))}
    found = map(where.get, zip(index.s_name, index.s_param, strict=True))
    return [None if s is None else tensors[s] for s in found]


def _verified(index: Index, tensors: list[Any]) -> list[Any]:
    """``tensors`` with None where a slot no longer holds what it held at build (its witness changed)."""
    then = index.witness
    if then is None:
        return tensors
    present = [t for t in tensors if t is not None]
    now = witnesses(present, storages(present))
    if len(present) == len(tensors):
        if now == then:
            return tensors
        return [t if w == v else None for t, w, v in zip(tensors, now, then, strict=True)]
    marks = iter(now)
    return [None if t is None or next(marks) != v else t for t, v in zip(tensors, then, strict=True)]


def _unknown(s: int, b_grad: bytes | None) -> SlotMeta:
    """A slot the graph can no longer read: its requires_grad at build, and unknown dtype, shape, device."""
    return SlotMeta(UNKNOWN, None, UNKNOWN, bool(b_grad[s]) if b_grad is not None else False)


def read_metadata(index: Index, tensors: list[Any], flat: FlatViews) -> None:
    """Per distinct tensor object (``index.s_tensor``): metadata, storage and byte extent (None: unknown)."""
    s_tensor = index.s_tensor
    count = (max(s_tensor) + 1) if s_tensor else 0
    firsts = [0] * count
    for s in range(len(s_tensor) - 1, -1, -1):
        firsts[s_tensor[s]] = s
    storage_number: dict[Any, int] = {}
    st_pointer: list[int] = []
    st_device: list[str] = []
    st_nbytes: list[int] = []
    storages = (st_pointer, st_device, st_nbytes)
    t_storage: list[int] = []
    read: list[Any] = []  # the tensors whose storage was read: their byte extents, in one pass after
    t_dtype: list[str] = []
    t_shape: list[tuple[int, ...] | None] = []
    t_device: list[str] = []
    t_grad: list[bool] = []
    strings: dict[object, str] = {}
    for s in firsts:
        tensor = tensors[s]
        parts = None if tensor is None else parts_of(tensor)
        meta = _first_meta(index, s, tensor, parts, flat, strings)
        t_device.append(meta.device)
        t_dtype.append(meta.dtype)
        t_shape.append(meta.shape)
        t_grad.append(meta.requires_grad)
        st = _placed(parts[0], storage_number, storages) if parts else -1
        t_storage.append(st)
        if parts and st >= 0:
            read.append(parts[0])
    index.t_storage = t_storage
    index.t_start, index.t_stop = _starts_stops(t_storage, read)
    index.t_dtype, index.t_shape, index.t_device, index.t_grad = t_dtype, t_shape, t_device, t_grad
    index.st_pointer, index.st_device, index.st_nbytes = st_pointer, st_device, st_nbytes
    index.st_id = [
        f"{device}:{pointer:#x}" if pointer else f"{device}:storage-{n}"
        for n, (device, pointer) in enumerate(zip(st_device, st_pointer, strict=True))
    ]


def _first_meta(
    index: Index, s: int, tensor: Any, parts: list[Any] | None, flat: FlatViews, strings: dict[object, str]
) -> SlotMeta:
    """Slot ``s``'s metadata: read at build, unknown (no tensor), or read now with the build's grad flag."""
    if s in index.known:
        return index.meta_of(s)
    if tensor is None:
        return _unknown(s, index.b_grad)
    meta = slot_meta(tensor, parts, flat, strings)
    if index.b_grad is not None:  # the build's, not the value after a requires_grad_() since
        meta = meta._replace(requires_grad=bool(index.b_grad[s]))
    return meta


def _starts_stops(t_storage: list[int], read: list[Any]) -> tuple[list[int], list[int]]:
    """Byte start and stop per distinct tensor: those of ``read`` (the tensors with a storage) in order."""
    starts, stops, _ = extents(read)
    if len(read) == len(t_storage):
        return starts, stops
    t_start, t_stop = [0] * len(t_storage), [0] * len(t_storage)
    for n, start, stop in zip((n for n, st in enumerate(t_storage) if st >= 0), starts, stops, strict=True):
        t_start[n], t_stop[n] = start, stop
    return t_start, t_stop


def _placed(local: Any, numbers: dict[Any, int], storages: tuple[list[int], list[str], list[int]]) -> int:
    """The storage number of a tensor's bytes, the storage recorded on first sight; -1: none."""
    try:
        storage = local.untyped_storage()
        pointer = storage.data_ptr()
    except (RuntimeError, NotImplementedError, TypeError, AttributeError):
        return -1
    st_pointer, st_device, st_nbytes = storages
    sname = str(local.device)
    key: object = (sname, pointer) if pointer else key_of(storage)
    st = numbers.get(key)
    if st is None:
        st = numbers[key] = len(st_pointer)
        st_pointer.append(pointer)
        st_device.append(sname)
        st_nbytes.append(storage.nbytes())
    return st
