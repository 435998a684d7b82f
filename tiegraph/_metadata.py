"""Tensor metadata on first use: dtype, shape, device, requires_grad, byte extents and the storage table.

The builder (:mod:`tiegraph.build`) reads metadata only for slots on shared storages; :func:`watch` lets the
index read the rest by re-walking the model through a weak reference (:func:`fill_metadata`), checked
against the module paths and slots recorded at build, and at the latest when the model dies.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import nn

from ._index import Index, SlotMeta
from ._tensors import ragged_shape
from ._walk import PLAIN_TYPES, flat_views, hooked_paths, key_of, serve_hooked, slots_of, walk
from .errors import TiegraphError
from .storage import Extent, FlatViews, slow_components, strided_extent


def shape_of(tensor: Any, flat: FlatViews) -> tuple[int, ...]:
    shape = flat.shapes.get(id(tensor))
    if shape is not None:
        return tuple(shape)
    try:
        return tuple(tensor.shape)
    except (RuntimeError, NotImplementedError, TypeError, AttributeError):
        return ragged_shape(tensor)  # nested: -1 for ragged dimensions


def byte_extent(tensor: torch.Tensor) -> tuple[int, int, Extent | None]:
    """Byte extent (start, stop) of a plain tensor in its storage, and its full Extent when not contiguous."""
    try:
        if tensor.is_nested:  # (strided nested: its buffer; the slow path may say better)
            raise NotImplementedError
        nbytes = int(tensor.nbytes)
        if not nbytes:
            return 0, 0, None
        itemsize = tensor.element_size()
        offset = int(tensor.storage_offset()) * itemsize
        if tensor.is_contiguous():
            return offset, offset + nbytes, None
        found = strided_extent(tensor, offset, itemsize)
        return offset, found.stop, found
    except (RuntimeError, NotImplementedError, TypeError):
        return 0, int(tensor.untyped_storage().nbytes()), None


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
    works, a finalizer holds the model's instance ``__dict__`` (not the model): while the model lives, that
    costs nothing (the model holds it anyway); when the model is collected, the finalizer fills the index's
    metadata from the dict (one re-walk) and lets it go. It is detached as soon as the metadata is filled or
    the index dies, so no model outlives its own lifetime because of a graph.
    """
    index.model_ref = weakref.ref(model)
    index.meta_filler = fill_metadata
    watch = weakref.finalize(model, _on_model_death, weakref.ref(index), type(model), model.__dict__)
    watch.atexit = False
    index.watch = watch
    weakref.finalize(index, watch.detach).atexit = False


class _Shell:
    """Stands in for a collected model whose instance ``__dict__`` is still held (see :func:`watch`)."""


def _on_model_death(index_ref: weakref.ref[Index], kind: type, state: dict[str, Any]) -> None:
    index = index_ref()
    if index is None or index.meta_filler is None:
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
    except TiegraphError as error:
        index.meta_error = str(error)
    finally:
        index.model_ref = None


def fill_metadata(index: Index) -> None:
    """dtype, shape, device, requires_grad, byte extents and the storage table, by re-walking the model.

    The re-walk must find the same module paths and slots (owner, attribute) as the build; otherwise the
    model changed since the build and the answers would mix two models.
    """
    model = index.model_ref() if index.model_ref is not None else None
    if model is None:
        if index.meta_error:
            raise TiegraphError(index.meta_error)
        raise TiegraphError(
            "the model this graph was built from no longer exists; tiegraph keeps no reference to it and "
            "reads "
            "dtype, shape, device and storage details on first use: keep the model alive until then, or call "
            "build_graph again"
        )
    tree = walk(model)
    modules = tree.modules
    hooked = hooked_paths(tree)
    slots = slots_of(tree, keys=False)
    if tree.parents != index.m_parent or tree.names != index.m_name:
        raise TiegraphError(
            "the model's module tree changed since build_graph (a module was added, removed or replaced); "
            "call build_graph again for details of the model as it is now"
        )
    if tree.numbers != index.d_number or slots.sizes != index.d_size or slots.attrs != index.s_attr:
        now = Index(lazy=True)
        now.d_number, now.d_size, now.s_attr = tree.numbers, slots.sizes, slots.attrs
        then = list(zip(index.s_owner, index.s_attr, index.s_param, strict=True))
        pairs = zip(zip(now.s_owner, now.s_attr, now.s_param, strict=True), then, strict=False)
        changed = next((s for s, (a, b) in enumerate(pairs) if a != b), min(now.num_slots, len(then)))
        where = index.slot_name_of(changed) if changed < index.num_slots else "the end"
        raise TiegraphError(
            f"the model's parameters or buffers changed since build_graph (first difference at {where!r}); "
            "call build_graph again for details of the model as it is now"
        )
    kinds = set(tree.types)
    serve_hooked(index, modules, slots.tensors, hooked, kinds, record=False)
    flat = flat_views(modules, kinds)
    with torch._C.DisableTorchFunctionSubclass():
        read_metadata(index, slots.tensors, flat)
    index.meta_filler = None
    if index.watch is not None:
        index.watch.detach()
        index.watch = None


def read_metadata(index: Index, tensors: list[Any], flat: FlatViews) -> None:
    """Per distinct tensor object (``index.s_tensor``): metadata, storage and byte extent."""
    s_tensor = index.s_tensor
    count = (max(s_tensor) + 1) if s_tensor else 0
    firsts = [0] * count
    for s in range(len(s_tensor) - 1, -1, -1):
        firsts[s_tensor[s]] = s
    storage_number: dict[Any, int] = {}
    st_pointer: list[int] = []
    st_device: list[str] = []
    st_nbytes: list[int] = []
    t_storage: list[int] = []
    t_start: list[int] = []
    t_stop: list[int] = []
    t_dtype: list[str] = []
    t_shape: list[tuple[int, ...]] = []
    t_device: list[str] = []
    t_grad: list[bool] = []
    strings: dict[object, str] = {}
    known = index.known
    for s in firsts:
        tensor = tensors[s]
        parts = parts_of(tensor)
        meta = index.meta_of(s) if s in known else slot_meta(tensor, parts, flat, strings)
        t_device.append(meta.device)
        t_dtype.append(meta.dtype)
        t_shape.append(meta.shape)
        t_grad.append(meta.requires_grad)
        local = parts[0] if parts else tensor
        if not parts:
            t_storage.append(-1)
            t_start.append(0)
            t_stop.append(0)
            continue
        try:
            storage = local.untyped_storage()
            pointer = storage.data_ptr()
        except (RuntimeError, NotImplementedError, TypeError, AttributeError):
            t_storage.append(-1)
            t_start.append(0)
            t_stop.append(0)
            continue
        sname = str(local.device)
        key: object = (sname, pointer) if pointer else key_of(storage)
        st = storage_number.get(key)
        if st is None:
            st = storage_number[key] = len(st_pointer)
            st_pointer.append(pointer)
            st_device.append(sname)
            st_nbytes.append(storage.nbytes())
        start, stop, _ = byte_extent(local)
        t_storage.append(st)
        t_start.append(start)
        t_stop.append(stop)
    index.t_storage, index.t_start, index.t_stop = t_storage, t_start, t_stop
    index.t_dtype, index.t_shape, index.t_device, index.t_grad = t_dtype, t_shape, t_device, t_grad
    index.st_pointer, index.st_device, index.st_nbytes = st_pointer, st_device, st_nbytes
    index.st_id = [
        f"{device}:{pointer:#x}" if pointer else f"{device}:storage-{n}"
        for n, (device, pointer) in enumerate(zip(st_device, st_pointer, strict=True))
    ]
