"""Deployed models: accelerate's offload hooks, placement, device maps and quantization findings.

A module carrying an accelerate hook (``_hf_hook``: ``cpu_offload``, ``disk_offload``, ``dispatch_model``,
``from_pretrained(device_map=...)``) does not compute with the tensor sitting in its slot but with the one
its hook's ``weights_map`` serves at execution time. :func:`annotate` puts that *served tensor* in the
slot before the share relation is computed, so ties are judged the same before and after a forward, and
records where every slot's bytes live (``placement``: a device, ``"disk"``, or ``"meta"`` when they exist
nowhere) and where it runs (``execution_device``). No data is read: a tensor served from a dict (cpu
offload) is that dict's tensor; one served from disk is known by its file and weight name and stands in as
a meta tensor; one the hook cannot find exists nowhere.

:func:`check_device_map` answers the same question for a device map before anything is placed, and
:func:`findings` turns placement and quantization into findings (registered with :mod:`tiegraph.audit`).

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

from ._tensors import is_quantized_layer_type, quantization

if TYPE_CHECKING:
    from ._index import Index
    from ._view import GraphView
    from .audit import Finding

__all__ = ["check_device_map", "execution_device_of", "placement_of", "quantization_of"]

_HOOK = "_hf_hook"


# ----------------------------------------------------------------------------------------- annotation


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

    The builder's hook for this room (see :mod:`tiegraph.build`): called after the slots are read and
    before the share relation, with ``modules`` per module path, ``tensors`` per slot (served tensors
    replace entries in place), ``hooked`` the module paths whose instance ``__dict__`` holds ``_hf_hook``
    and ``kinds`` the set of module classes. A plain model costs one check per distinct class. With
    ``record=False`` (the builder's metadata re-walk) only the served tensors are put in place.
    """
    layers = {kind for kind in kinds if is_quantized_layer_type(kind)}
    if layers and record:
        _quantized_layers(index, modules, tensors, layers)
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
    hook = module.__dict__.get(_HOOK)
    inner = getattr(hook, "hooks", None)  # SequentialHook
    return list(inner) if isinstance(inner, (list, tuple)) else [hook]


def _device(value: object) -> str | None:
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
    return _Location(_device(value.device) or "cpu", f"weights_map[{key!r}]", tensor=value)


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


def _serve(
    index: Index, modules: list[nn.Module], tensors: list[Any], hooked: list[int], record: bool
) -> None:
    stand = _Stand()
    served: dict[tuple[int, str], tuple[torch.Tensor | None, str, str, str | None]] = {}
    executes: dict[int, str | None] = {}
    for i in hooked:
        module = modules[i]
        if id(module) in executes:
            continue  # the same module at another path
        for hook in _hooks(module):
            if not hasattr(hook, "execution_device"):
                continue
            device = _device(hook.execution_device)
            executes.setdefault(id(module), device)
            if not _offloads(hook):
                continue
            for holder, attr, name, tensor in _served_slots(module, hook):
                value, where, source = _served(hook, name, tensor, stand)
                served[(id(holder), attr)] = (value, where, source, device)
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
        if record:
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

    For :mod:`tiegraph.values`, on slots a hook serves (``index.deployed.served_from``). The hook is the one
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


# ------------------------------------------------------------------------------------ per-slot answers


def placement_of(index: Index, s: int) -> str:
    """Where slot ``s``'s bytes live: a device, ``"disk"``, or ``"meta"`` when they exist nowhere."""
    placement = index.deployed.placement
    if placement:
        found = placement[s]
        if found is not None:
            return str(found)
    return index.meta_of(s).device


def execution_device_of(index: Index, s: int) -> str:
    """The device slot ``s`` is computed on (its hook's execution device, else where it sits)."""
    execution = index.deployed.execution_device
    if execution:
        found = execution[s]
        if found is not None:
            return str(found)
    return index.meta_of(s).device


def quantization_of(index: Index, s: int) -> str | None:
    """The quantization format of slot ``s``'s tensor, or None."""
    labels = index.deployed.slot_quantization
    if labels:
        found = labels.get(s)
        if found:
            return str(found)
    dtype = index.meta_of(s).dtype
    return f"torch.{dtype}" if dtype.startswith("float8") else None


# ---------------------------------------------------------------------------------------- device maps


def _entry(device_map: Mapping[str, str], path: str) -> str | None:
    """The device map key that places module ``path`` (the longest key that is ``path`` or a prefix)."""
    best: str | None = None
    for key in device_map:
        inside = key == "" or key == path or path.startswith(key + ".")
        if inside and (best is None or len(key) > len(best)):
            best = key
    return best


def check_device_map(
    model: nn.Module,
    device_map: Mapping[str, int | str | torch.device] | str,
    *,
    max_memory: Mapping[int | str, int | str] | None = None,
    no_split_module_classes: list[str] | None = None,
    input_embedding: Any = None,
) -> list[Finding]:
    """The findings ``model`` would have once placed by ``device_map``, without placing anything.

    Parameters
    ----------
    model
        The model, as it is before dispatch (real tensors or meta from ``init_empty_weights``).
    device_map
        The dict accelerate takes (module name -> device, ``"cpu"`` or ``"disk"``; ``""`` names the whole
        model), or ``"auto"`` to ask accelerate's ``infer_auto_device_map`` with ``max_memory``.
    max_memory, no_split_module_classes
        Passed to ``infer_auto_device_map`` when ``device_map="auto"`` (``no_split_module_classes``
        defaults to the model's ``_no_split_modules``).
    input_embedding
        As for :func:`tiegraph.build_graph`.

    Returns
    -------
    list of Finding
        What :meth:`tiegraph.TieGraph.audit` would say about the placed model: ``group-split-across-devices``
        naming the device map entries to change when a tie group's members land on different devices.

    Raises
    ------
    TypeError
        If ``model`` is not an ``nn.Module`` or ``device_map`` is neither a mapping nor ``"auto"``.
    ValueError
        If ``device_map`` leaves a slot of the model unplaced.

    Examples
    --------
    >>> import torch, tiegraph
    >>> class Tiny(torch.nn.Module):
    ...     _tied_weights_keys = {"head.weight": "embed.weight"}
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.embed = torch.nn.Embedding(10, 4)
    ...         self.head = torch.nn.Linear(4, 10, bias=False)
    ...         self.head.weight = self.embed.weight
    >>> [f.kind for f in tiegraph.check_device_map(Tiny(), {"embed": "cpu", "head": "disk"})]
    ['group-split-across-devices']
    >>> tiegraph.check_device_map(Tiny(), {"": "disk"})
    []
    """
    from .audit import audit
    from .build import build_graph

    if not isinstance(model, nn.Module):
        kind = type(model)
        raise TypeError(
            f"check_device_map expects a torch.nn.Module, got {kind.__module__}.{kind.__qualname__}"
        )
    if isinstance(device_map, str):
        if device_map != "auto":
            raise TypeError(
                f"device_map must be a dict (module name -> device) or 'auto', got {device_map!r}; the "
                "strings 'balanced' and 'sequential' need GPUs, pass the dict they produce instead"
            )
        from accelerate import infer_auto_device_map

        classes = no_split_module_classes
        if classes is None:
            classes = list(getattr(model, "_no_split_modules", None) or [])
        device_map = infer_auto_device_map(
            model, max_memory=dict(max_memory) if max_memory else None, no_split_module_classes=classes
        )
    if not isinstance(device_map, Mapping):
        raise TypeError(f"device_map must be a dict or 'auto', got {type(device_map).__name__}")
    names = {str(k): _device_name(v) for k, v in device_map.items()}
    tg = build_graph(model, input_embedding=input_embedding)
    index = tg._index
    placement: list[str | None] = []
    for s, owner in enumerate(index.s_owner):
        key = _entry(names, index.m_path[owner])
        if key is None:
            raise ValueError(
                f"device_map places no module holding {index.s_name[s]!r}; add an entry for "
                f"{index.m_path[owner] or '<root>'!r} or one of its parents (accelerate would refuse it too)"
            )
        placement.append(names[key])
    index.deployed.placement = placement
    index.deployed.execution_device = [p if p != "disk" else "cpu" for p in placement]
    index.deployed.device_map = names
    return audit(tg)


def _device_name(value: object) -> str:
    if isinstance(value, str) and value in ("disk", "cpu", "meta"):
        return value
    if isinstance(value, int):
        return f"cuda:{value}"
    return _device(value) or str(value)


# -------------------------------------------------------------------------------------------- findings


def split_advice(view: GraphView, slots: list[int]) -> str:
    """The device map entries to change so that ``slots`` land on one device ('' without a device map)."""
    index = view.index
    device_map = index.deployed.device_map
    if not device_map:
        return ""
    entries: dict[str, str] = {}
    for s in slots:
        key = _entry(device_map, index.m_path[index.s_owner[s]])
        if key is not None:
            entries[key] = device_map[key]
    if len(set(entries.values())) < 2:
        return ""
    embed = set(index.ie_slots)
    keep = next(
        (
            _entry(device_map, index.m_path[index.s_owner[s]])
            for s in slots
            if s in embed and _entry(device_map, index.m_path[index.s_owner[s]]) is not None
        ),
        None,
    )
    if keep is None:  # the entry on the fastest place stays
        keep = min(entries, key=lambda k: (_rank(entries[k]), k))
    target = entries[keep]
    change = sorted(k for k, v in entries.items() if v != target)
    moves = ", ".join(f"device_map[{k!r}] = {target!r}" for k in change)
    return f"device map entries {', '.join(repr(k) for k in sorted(entries))}: set {moves}"


def _rank(place: str) -> int:
    return {"disk": 3, "meta": 4, "cpu": 2}.get(place, 1)


#: Finding kinds of this room, with the sentence each one says (``str.format`` fields).
KINDS: dict[str, str] = {
    "untied-by-quantization": (
        "{target} is declared tied to {source} (by {declared_by}) but quantization keeps them apart "
        "({target}: {target_q}; {source}: {source_q}); model.tie_weights() is not the fix here: it would put "
        "the unquantized {source} back into {target_module} and drop its quantization; to keep one weight, "
        "leave {target_module} out of quantization ({how}) and then tie, or quantize the tied pair as one "
        "tensor where the library supports it; to keep both quantized copies, set "
        "config.tie_word_embeddings=False so the saved model says so."
    ),
    "quantized-layer-holds-tied-weight": (
        "{layer} is a quantized layer ({cls}) but its {attr} is an unquantized {dtype} tensor shared with "
        "{others}: its forward expects the quantized format; leave {layer} out of quantization (e.g. "
        "bitsandbytes llm_int8_skip_modules=[{layer_name!r}]) or untie it before quantizing."
    ),
}

_HOW = (
    "torchao: quantize_(model, config, filter_fn=lambda m, fqn: isinstance(m, torch.nn.Linear) and "
    "fqn != {name!r}); bitsandbytes: BitsAndBytesConfig(llm_int8_skip_modules=[{name!r}]); quanto: "
    "quantize(model, weights=..., exclude=[{name!r}])"
)


def _make(kind: str, paths: list[str], **fields: Any) -> Finding:
    from .audit import Finding

    ordered = tuple(sorted(dict.fromkeys(paths)))
    fields.setdefault("paths", " and ".join(ordered) if len(ordered) == 2 else ", ".join(ordered))
    return Finding(kind, ordered, KINDS[kind].format(**fields))


def untied_pairs(view: GraphView) -> dict[tuple[str, str], str]:
    """Declared pairs (target, source) that a finding of this room explains better than declared-not-tied.

    Values are the finding kind: ``untied-by-quantization`` (an end is quantized) or
    ``group-split-across-devices`` (the ends are served from different places, or as separate copies).
    """
    index = view.index
    out: dict[tuple[str, str], str] = {}
    sources = index.deployed.served_from
    layers = _layer_labels(index)
    for tie in view.declarations:
        if tie.status == "unresolved" and tie.target.rpartition(".")[0] in layers:
            out[(tie.target, tie.source)] = "untied-by-quantization"  # hqq: the weight became W_q
        if tie.status != "not-tied":
            continue
        t, s = tie.target_slot, tie.source_slot
        if quantization_of(index, t) or quantization_of(index, s):
            out[(tie.target, tie.source)] = "untied-by-quantization"
        elif (
            placement_of(index, t) != placement_of(index, s)
            or index.slot_name_of(t) in sources
            or index.slot_name_of(s) in sources
        ):
            out[(tie.target, tie.source)] = "group-split-across-devices"
    return out


def _layer_labels(index: Index) -> dict[str, str]:
    """Canonical path -> quantization of the quantized layers whose weight slot is renamed (hqq's W_q)."""
    labels = index.deployed.slot_quantization
    out = {}
    for s in index.deployed.quantized_layer_slots:
        if index.s_attr[s] != "weight" and labels.get(s):
            out[index.belongs_of(index.s_owner[s])] = str(labels[s])
    return out


def findings(view: GraphView) -> list[Finding]:
    """Findings of deployed models: quantization that unties or breaks a tie, ties split by placement.

    ``group-split-across-devices`` is decided on placement (where the served bytes live), so an offloaded
    model and a device map checked before use are judged alike; the message names the device map entries
    to change when the model has a device map.
    """
    from .values import sentence

    index = view.index
    out: list[Finding] = []
    explained = untied_pairs(view)
    for tie in view.declarations:
        kind = explained.get((tie.target, tie.source))
        if kind is None:
            continue
        t, s = tie.target_slot, tie.source_slot
        if kind == "untied-by-quantization":
            if t >= 0:
                module = index.belongs_of(index.s_owner[t])
                target_q = quantization_of(index, t) or "not quantized"
            else:  # the layer renamed its weight (hqq packs it into W_q)
                module = tie.target.rpartition(".")[0]
                target_q = f"{_layer_labels(index)[module]}, packed into {module}.W_q"
            out.append(
                _make(
                    kind,
                    [tie.target, tie.source],
                    target=tie.target,
                    source=tie.source,
                    declared_by=tie.declared_by or tie.declared_by_cls or "the model",
                    target_q=target_q,
                    source_q=(quantization_of(index, s) if s >= 0 else None) or "not quantized",
                    target_module=module,
                    how=_HOW.format(name=module),
                )
            )
        else:
            out.append(
                _split(view, [t, s], [tie.target, tie.source], sentence(tie.values, tie.target, tie.source))
            )
    for slots in view.groups():
        places = {placement_of(index, s) for s in slots}
        if len(places) > 1:
            out.append(_split(view, slots, sorted({index.slot_canon_of(s) for s in slots})))
    out += _layer_findings(view)
    return out


def _split(view: GraphView, slots: list[int], names: list[str], values: str = "") -> Finding:
    """A ``group-split-across-devices`` finding; ``values`` ends it with a declared pair's value verdict."""
    from .audit import _finding

    index = view.index
    places = []
    for s in slots:
        where = placement_of(index, s)
        source = index.deployed.served_from.get(index.s_name[s])
        if where == "meta" and source:
            where = f"nowhere ({index.slot_canon_of(s)} is {source}: forward fails)"
        elif where == "disk" and source:
            where = f"disk ({source.rsplit('/', 1)[-1]})"
        places.append(where)
    distinct = list(dict.fromkeys(places))
    devices = " and ".join(distinct)
    if len({placement_of(index, s) for s in slots}) == 1:
        devices += ", served by the offload hooks as separate copies"
    finding = _finding("group-split-across-devices", names, devices=devices, values=values)
    advice = split_advice(view, slots)
    if advice:
        from .audit import Finding

        finding = Finding(finding.kind, finding.paths, f"{finding.message} Change the {advice}.")
    return finding


def _layer_findings(view: GraphView) -> list[Finding]:
    index = view.index
    out: list[Finding] = []
    candidates = index.deployed.quantized_layer_slots
    if not candidates:
        return out
    members: dict[int, list[int]] = {}
    for slots in view.groups():
        for s in slots:
            members[s] = slots
    for s in candidates:
        group = members.get(s)
        if group is None or quantization_of(index, s):
            continue
        dtype = index.meta_of(s).dtype
        if not dtype.startswith(("float", "bfloat")):
            continue
        owner = index.s_owner[s]
        layer = index.belongs_of(owner)
        others = sorted({index.slot_canon_of(o) for o in group if o != s} - {index.slot_canon_of(s)})
        if not others:
            continue
        out.append(
            _make(
                "quantized-layer-holds-tied-weight",
                [index.slot_canon_of(s), *others],
                layer=layer,
                layer_name=layer.rsplit(".", 1)[-1],
                cls=index.m_cls[owner],
                attr=index.s_attr[s],
                dtype=dtype,
                others=", ".join(others),
            )
        )
    return out


def slot_facts(index: Index) -> list[tuple[str, str, str | None]]:
    """``(placement, execution_device, quantization)`` of every slot, for the graph's slot nodes."""
    return [
        (placement_of(index, s), execution_device_of(index, s), quantization_of(index, s))
        for s in range(len(index.s_owner))
    ]


def read_slot_facts(index: Index, facts: list[tuple[str | None, str | None, str | None]]) -> None:
    """Record slot facts read back from a graph (only what differs from the tensors' own devices)."""
    devices = [index.t_device[t] for t in index.s_tensor]
    placement = [p if p is not None and p != d else None for (p, _, _), d in zip(facts, devices, strict=True)]
    execution = [e if e is not None and e != d else None for (_, e, _), d in zip(facts, devices, strict=True)]
    if any(p is not None for p in placement) or any(e is not None for e in execution):
        index.deployed.placement = placement
        index.deployed.execution_device = execution
    labels = {s: q for s, (_, _, q) in enumerate(facts) if q}
    if labels:
        index.deployed.slot_quantization = labels


def deployed_rows(index: Index) -> list[list[str]]:
    """Report rows ``[slot, quantization, placement, execution device]`` for slots that are not plain.

    A slot is listed when its tensor is quantized or when a hook serves it or places it elsewhere than its
    tensor sits; none for a plain model.
    """
    rows = []
    placed = bool(index.deployed.placement)
    for s in range(len(index.s_owner)):
        label = quantization_of(index, s)
        where, runs = placement_of(index, s), execution_device_of(index, s)
        device = index.meta_of(s).device
        if label or (placed and (where != device or runs != device)):
            rows.append([index.slot_canon_of(s), label or "-", where, runs])
    return rows
