"""Build step: the tensors accelerate's offload hooks serve, and which slots are quantized layers' weights.

A module carrying an accelerate hook (``_hf_hook``: ``cpu_offload``, ``disk_offload``, ``dispatch_model``,
``from_pretrained(device_map=...)``) does not compute with the tensor sitting in its slot but with the one
its hook's ``weights_map`` serves at execution time. :func:`annotate` puts that *served tensor* in the
slot before the share relation is computed, so ties are judged the same before and after a forward, and
records where every slot's bytes live (``placement``: a device, ``"disk"``, or ``"meta"`` when they exist
nowhere) and where it runs (``execution_device``). No data is read: a tensor served from a dict (cpu
offload) is that dict's tensor; one served from disk is known by its file and weight name and stands in as
a meta tensor; one the hook cannot find exists nowhere.

This room sits below every pass: the walk (:mod:`tiegraph._walk`) calls :func:`annotate`, and the value
step reads a served slot's values with :func:`served_value`. What the placement means for ties (device
maps, split groups, quantization that unties) is the pass :mod:`tiegraph._deployed`.

Notes
-----
- ``accelerate.disk_offload`` writes every name to its own ``.dat`` file, so a tied pair is served as two
  copies and reported as ``group-split-across-devices`` ("served by the offload hooks as separate
  copies"); ``from_pretrained(..., device_map={"": "disk"})`` serves both names from one checkpoint entry
  and stays tied.
- DeepSpeed ZeRO-3 is not covered (it has no CPU backend here to test against). Its parameters are empty
  placeholders (``param.data`` is ``torch.empty(0)``) whose identity is ``param.ds_id`` and whose local
  partition is ``param.ds_tensor``; following them would mean keying a slot's storage by ``ds_id`` (one id
  under two names is one tensor, and ZeRO-3 keeps tied parameters as one id), reading the logical shape
  from ``param.ds_shape`` instead of the empty tensor, and the placement from ``param.ds_status`` /
  the offload config (``ds_tensor`` on CPU or NVMe).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch import nn

from ._quantization import is_packed_layer_type, is_quantized_layer_type, packed_quantization, quantization

if TYPE_CHECKING:
    from ._index import Index

__all__ = ["HOOK", "annotate", "device_label", "served_value"]

#: The attribute accelerate puts its hook in, on a module's instance ``__dict__``.
HOOK = "_hf_hook"


def annotate(
    index: Index,
    modules: list[nn.Module],
    tensors: list[Any],
    hooked: list[int],
    kinds: set[type],
    *,
    record: bool = True,
) -> None:
    """Served tensors, placement, execution devices, hqq labels and quantized layers, recorded in the index.

    The builder's hook for this room (see :mod:`tiegraph._build`): called after the slots are read and
    before the share relation, with ``modules`` per module path, ``tensors`` per slot (served tensors
    replace entries in place), ``hooked`` the module paths whose instance ``__dict__`` holds ``_hf_hook``
    and ``kinds`` the set of module classes. A plain model costs one check per distinct class. With
    ``record=False`` (the builder's metadata re-walk) only the served tensors are put in place.
    """
    layers = {kind for kind in kinds if is_quantized_layer_type(kind)}
    if layers and record:
        _quantized_layers(index, modules, tensors, layers)
    packed = {kind for kind in kinds if is_packed_layer_type(kind)}
    if packed and record:
        for i, module in enumerate(modules):
            label = packed_quantization(module) if type(module) in packed else None
            if label:
                index.deployed.packed_layers[index.path_of(i)] = label
    if hooked:
        _serve(index, modules, tensors, hooked, record)


def _quantized_layers(index: Index, modules: list[nn.Module], _tensors: list[Any], layers: set[type]) -> None:
    """Weight slots of quantized layer classes, and hqq's labels (its format lives on the layer)."""
    slots = []
    labels: dict[int, str] = {}
    for s, owner in enumerate(index.s_owner):
        module = modules[owner]
        if type(module) in layers:
            attr = index.s_attr[s]
            if attr in ("weight", "W_q"):
                slots.append(s)
            tensor = module._parameters.get(attr)
            label = quantization(tensor, module, attr) if tensor is not None else None
            if label:
                labels[s] = label
    index.deployed.quantized_layer_slots = slots
    index.deployed.slot_quantization.update(labels)


def _hooks(module: nn.Module) -> list[Any]:
    hook = module.__dict__.get(HOOK)
    inner = getattr(hook, "hooks", None)  # SequentialHook
    return list(inner) if isinstance(inner, (list, tuple)) else [hook]


def device_label(value: object) -> str | None:
    """A device as a string (``"cpu"``, ``"cuda:0"``), or None for no single device."""
    if value is None:
        return None
    if isinstance(value, Mapping):  # per-tensor execution devices: not a single answer
        return None
    try:
        return str(torch.device(value)) if isinstance(value, (str, int, torch.device)) else str(value)
    except (RuntimeError, TypeError):
        return str(value)


class _Stand:
    """Meta stand-ins for tensors served from disk, one per (file, weight name), so equal keys share."""

    def __init__(self) -> None:
        self.cache: dict[tuple[str, str], torch.Tensor] = {}

    def get(self, key: tuple[str, str] | None, shape: Any, dtype: torch.dtype) -> torch.Tensor:
        if key is None:
            return torch.empty(tuple(shape), dtype=dtype, device="meta")
        found = self.cache.get(key)
        if found is None:
            found = self.cache[key] = torch.empty(tuple(shape), dtype=dtype, device="meta")
        return found


class _Location(NamedTuple):
    """Where a hook's ``weights_map`` keeps one tensor (found without reading any data)."""

    placement: str  # a device, "disk", "meta" (nowhere) or "offloaded" (a store tiegraph does not open)
    source: str  # for the report: weights_map['name'], file['weight name'] or folder/name.dat
    tensor: torch.Tensor | None = None  # the store's own tensor (cpu offload, a loader's state dict)
    file: tuple[str, str] | None = None  # (safetensors file, weight name) or (folder, name) of a .dat file
    info: Mapping[str, Any] | None = None  # the loader's index entry (dtype, shape) for a file


def _locate(hook: Any, name: str) -> _Location:
    """Where ``hook`` serves tensor ``name`` (relative to the hooked module) from."""
    weights = hook.weights_map
    prefix = getattr(weights, "prefix", None)
    dataset = getattr(weights, "dataset", None) if prefix is not None else weights
    key = f"{prefix or ''}{name}"
    state = getattr(dataset, "state_dict", None)
    index = getattr(dataset, "index", None)
    missing = _Location("meta", f"missing from weights_map ({key!r})")
    if isinstance(dataset, Mapping) and not isinstance(index, Mapping):
        value = dataset.get(key)
        return _stored(value, key) if isinstance(value, torch.Tensor) else missing
    if isinstance(index, Mapping):  # accelerate's OffloadedWeightsLoader: a state dict and files
        if isinstance(state, Mapping) and isinstance(state.get(key), torch.Tensor):
            return _stored(state[key], key)
        info = index.get(key)
        if not isinstance(info, Mapping):
            return missing
        if info.get("safetensors_file") is not None:
            where = (str(info["safetensors_file"]), str(info.get("weight_name", key)))
            return _Location("disk", f"{where[0]}[{where[1]!r}]", file=where, info=info)
        folder = str(getattr(dataset, "save_folder", ""))
        return _Location("disk", f"{folder}/{key}.dat", file=(folder, key), info=info)
    return _Location("offloaded", f"{type(dataset).__name__}[{key!r}]")


def _stored(value: torch.Tensor, key: str) -> _Location:
    return _Location(device_label(value.device) or "cpu", f"weights_map[{key!r}]", tensor=value)


def _served(
    hook: Any, name: str, current: torch.Tensor, stand: _Stand
) -> tuple[torch.Tensor | None, str, str]:
    """(tensor the hook serves, placement, where from) for tensor ``name`` relative to the hooked module."""
    found = _locate(hook, name)
    if found.tensor is not None or found.placement == "offloaded":
        return found.tensor, found.placement, found.source
    if found.info is None:  # missing: exists nowhere
        return stand.get(None, current.shape, current.dtype), found.placement, found.source
    dtype = getattr(torch, str(found.info.get("dtype", "")), None)
    dtype = dtype if isinstance(dtype, torch.dtype) else current.dtype
    shape = found.info.get("shape") or current.shape
    return stand.get(found.file, shape, dtype), found.placement, found.source


def _offloads(hook: Any) -> bool:
    """Whether ``hook`` (an accelerate hook: it has an execution device) serves from a ``weights_map``."""
    return (
        hasattr(hook, "execution_device")
        and bool(getattr(hook, "offload", False))
        and getattr(hook, "weights_map", None) is not None
    )


def _served_slots(module: nn.Module, hook: Any) -> Iterator[tuple[nn.Module, str, str, torch.Tensor]]:
    """``(holder, attr, name, tensor)`` of every tensor an offloading ``hook`` on ``module`` serves."""
    from accelerate.utils import named_module_tensors

    for name, tensor in named_module_tensors(
        module,
        include_buffers=bool(getattr(hook, "offload_buffers", False)),
        recurse=bool(getattr(hook, "place_submodules", False)),
        remove_non_persistent=True,
    ):
        owner_path, _, attr = name.rpartition(".")
        yield (module.get_submodule(owner_path) if owner_path else module), attr, name, tensor


_Entry = tuple[torch.Tensor | None, str, str, str | None]  # served tensor, placement, where from, device


def _hooks_serve(
    modules: list[nn.Module], hooked: list[int]
) -> tuple[dict[tuple[int, str], _Entry], dict[int, str | None]]:
    """What the hooks on ``hooked`` module paths serve, and where each hooked module executes.

    Served entries are keyed by (id of the module holding the tensor, attribute); execution devices by the
    hooked module's id.
    """
    stand = _Stand()
    served: dict[tuple[int, str], _Entry] = {}
    executes: dict[int, str | None] = {}
    for i in hooked:
        module = modules[i]
        if id(module) in executes:
            continue  # the same module at another path
        for hook in _hooks(module):
            if not hasattr(hook, "execution_device"):
                continue
            device = device_label(hook.execution_device)
            executes.setdefault(id(module), device)
            if not _offloads(hook):
                continue
            for holder, attr, name, tensor in _served_slots(module, hook):
                value, where, source = _served(hook, name, tensor, stand)
                served[(id(holder), attr)] = (value, where, source, device)
    return served, executes


def _serve(
    index: Index, modules: list[nn.Module], tensors: list[Any], hooked: list[int], record: bool
) -> None:
    served, executes = _hooks_serve(modules, hooked)
    m_exec: list[str | None] = []
    for i, parent in enumerate(index.m_parent):
        key = id(modules[i])
        m_exec.append(executes[key] if key in executes else (m_exec[parent] if parent >= 0 else None))
    placement: list[str | None] = [None] * len(index.s_owner)
    execution: list[str | None] = [m_exec[owner] for owner in index.s_owner]
    sources: dict[str, str] = {}
    for s, owner in enumerate(index.s_owner):
        entry = served.get((id(modules[owner]), index.s_attr[s]))
        if entry is None:
            continue
        value, where, source, device = entry
        placement[s] = where
        sources[index.slot_name_of(s)] = source
        if device is not None:
            execution[s] = device
        if value is not None:
            tensors[s] = value
    if not record:
        return
    index.deployed.placement = placement
    index.deployed.execution_device = execution
    index.deployed.served_from = sources
    device_map = getattr(modules[0], "hf_device_map", None)
    if isinstance(device_map, Mapping):
        index.deployed.device_map = {str(k): str(v) for k, v in device_map.items()}


# -------------------------------------------------------------------------------------- served values


def served_value(model: nn.Module, index: Index, s: int) -> torch.Tensor | None:
    """The values an accelerate hook serves in slot ``s``, read from its ``weights_map``; None if unreadable.

    For :mod:`tiegraph._values`, on slots a hook serves (``index.deployed.served_from``). The hook is the one
    :func:`annotate` took the slot's served tensor from (the nearest offloading hook above the slot), and
    only that one tensor is read: the store's own tensor (``cpu_offload``, ``dispatch_model``'s cpu state
    dict), one safetensors entry (``safe_open(...).get_tensor``) or one ``.dat`` file through a numpy
    memmap (accelerate's ``load_offloaded_weight``). Nothing is unpickled. None when the hook serves the
    slot from nowhere (a name missing from its store) or from a store of a kind tiegraph does not open.
    """
    owner, attr = index.owner_of(s), index.s_attr[s]
    try:
        holder = model.get_submodule(index.path_of(owner))
    except AttributeError:
        return None
    i = owner
    while i >= 0:
        module = model.get_submodule(index.path_of(i))
        for hook in reversed([h for h in _hooks(module) if _offloads(h)]):  # the last hook wins in _serve
            for served, served_attr, name, _ in _served_slots(module, hook):
                if served is holder and served_attr == attr:
                    return _read(_locate(hook, name))
        i = index.m_parent[i]
    return None


def _read(found: _Location) -> torch.Tensor | None:
    """The values at ``found``: the store's tensor, one safetensors entry or one memory-mapped .dat file."""
    from safetensors import SafetensorError, safe_open

    if found.tensor is not None:
        return found.tensor
    if found.file is None or found.info is None:
        return None
    file, name = found.file
    try:
        if found.info.get("safetensors_file") is not None:
            with safe_open(file, framework="pt", device="cpu") as f:
                value: torch.Tensor = f.get_tensor(name)
            dtype = getattr(torch, str(found.info.get("dtype", "")), None)
            return value.to(dtype) if isinstance(dtype, torch.dtype) else value
        from accelerate.utils.offload import load_offloaded_weight

        loaded: torch.Tensor = load_offloaded_weight(os.path.join(file, f"{name}.dat"), found.info)
        return loaded
    except (OSError, KeyError, ValueError, TypeError, RuntimeError, SafetensorError):
        return None
