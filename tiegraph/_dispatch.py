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
the tensors apart); :func:`wrong_shapes` finds the swap already made, where the module's own sizes
(``nn.Linear``, ``nn.Embedding``) contradict the tensor in its weight slot. A square transposed weight
swapped at dispatch cannot be told from a plain tie afterwards; the pre-flight is the place to catch it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from ._index import Index

__all__ = ["record"]

Layout = tuple[tuple[int, ...], tuple[int, ...], torch.dtype]


def record(index: Index, modules: list[nn.Module], tensors: list[Any]) -> None:
    """Record in ``index.deployed.pointer_aliases`` each tie group accelerate's hooks would serve wrongly.

    Only groups holding one tensor object under several names (what accelerate's map is keyed by) are
    read: a few slots of a tied model, none of an untied one. Each entry is ``(slot names, layouts)``.
    """
    if not index.same_as:
        return
    members: dict[int, list[int]] = {}
    for s, root in index.root_of.items():
        members.setdefault(root, []).append(s)
    found: list[tuple[list[str], list[str]]] = []
    for group in members.values():
        if any(s in index.same_as for s in group):
            names = _aliased(index, modules, tensors, sorted(group))
            if names:
                found.append(names)
    index.deployed.pointer_aliases = found


def _aliased(
    index: Index, modules: list[nn.Module], tensors: list[Any], group: list[int]
) -> tuple[list[str], list[str]] | None:
    """The slots of ``group`` at the data pointer of an identity tie in another layout, or wrongly shaped."""
    identity = {index.same_as[s] for s in group if s in index.same_as}
    layouts: dict[tuple[Any, ...], dict[Layout, list[int]]] = {}
    for s in group:
        where = _pointer(tensors[s])
        if where is not None:
            layouts.setdefault(where, {}).setdefault(_layout(tensors[s]), []).append(s)
    chosen: list[int] = []
    for at in layouts.values():
        if len(at) > 1 and any(s in identity for slots in at.values() for s in slots):
            chosen.extend(s for slots in at.values() for s in slots)
    chosen.extend(
        s
        for s in group
        if s not in chosen and _contradicts(modules[index.owner_of(s)], index.s_attr[s], tensors[s])
    )
    if not chosen:
        return None
    chosen.sort()
    return [index.slot_name_of(s) for s in chosen], [_describe(tensors[s]) for s in chosen]


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


def _describe(tensor: torch.Tensor) -> str:
    return f"shape {tuple(tensor.shape)}, stride {tuple(tensor.stride())}"


def _contradicts(module: nn.Module, attr: str, tensor: Any) -> bool:
    """Whether a Linear's or an Embedding's weight slot holds a tensor of a shape the module cannot use."""
    if attr != "weight" or not isinstance(tensor, torch.Tensor):
        return False
    if type(module) is nn.Linear:
        return tuple(tensor.shape) != (module.out_features, module.in_features)
    if type(module) is nn.Embedding:
        return tuple(tensor.shape) != (module.num_embeddings, module.embedding_dim)
    return False
