"""The deployed-model pass: ties that placement, device maps and quantization hold apart.

Placement and quantization labels are recorded by the build step :mod:`tiegraph._served` (the tensors
accelerate's offload hooks serve) and read through the view; this pass turns them into findings
(registered with :mod:`tiegraph._audit` like every other finder), and :func:`check_device_map` answers
the same question for a device map before anything is placed.

See :mod:`tiegraph._served` for what offload hooks serve and what is not covered (DeepSpeed ZeRO-3).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ._build import build_graph
from ._finding import Finding, finding, kinds
from ._graph import amend
from ._placement import map_entry
from ._quantized_ties import End, keep_out, retie
from ._served import device_label
from ._values import sentence
from .errors import ConfigurationError

if TYPE_CHECKING:
    from ._declared import Declaration
    from ._view import GraphView

__all__ = ["KINDS", "check_device_map", "deployed_rows", "explains_untied", "findings", "untied_pairs"]


def check_device_map(
    model: nn.Module,
    device_map: Mapping[str, int | str | torch.device] | str,
    *,
    max_memory: Mapping[int | str, int | str] | None = None,
    no_split_module_classes: list[str] | None = None,
    input_embedding: Any = None,
    placed_by: str = "dispatch_model",
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
    placed_by
        Who will place the model: ``"dispatch_model"`` (accelerate's ``dispatch_model``, ``disk_offload``,
        ``cpu_offload``: every parameter a disk entry places is written to a file of its own, so the ends
        of a tie both on disk are served as two copies) or ``"from_pretrained"`` (transformers serves disk
        weights from the checkpoint's entries, one entry for a tied pair).

    Returns
    -------
    list of Finding
        What :meth:`tiegraph.TieGraph.audit` would say about the placed model: ``group-split-across-devices``
        naming the device map entries to change when a tie group's members land on different devices.

    Raises
    ------
    TypeError
        If ``model`` is not an ``nn.Module`` or ``device_map`` is neither a mapping nor ``"auto"``.
    ConfigurationError
        If ``device_map`` leaves a slot of the model unplaced, or ``placed_by`` is neither value.

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
    >>> [f.kind for f in tiegraph.check_device_map(Tiny(), {"": "disk"})]
    ['group-split-across-devices']
    >>> tiegraph.check_device_map(Tiny(), {"": "disk"}, placed_by="from_pretrained")
    []
    """
    if not isinstance(model, nn.Module):
        kind = type(model)
        raise TypeError(
            f"check_device_map expects a torch.nn.Module, got {kind.__module__}.{kind.__qualname__}"
        )
    if placed_by not in ("dispatch_model", "from_pretrained"):
        raise ConfigurationError(
            f"placed_by must be 'dispatch_model' or 'from_pretrained', got {placed_by!r}"
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
    amend(tg, device_map=names, disk_files=placed_by == "dispatch_model")
    return tg.audit()


def _device_name(value: object) -> str:
    if isinstance(value, str) and value in ("disk", "cpu", "meta"):
        return value
    if isinstance(value, int):
        return f"cuda:{value}"
    return device_label(value) or str(value)


# -------------------------------------------------------------------------------------------- findings


def split_advice(view: GraphView, slots: list[int]) -> str:
    """The device map entries to change so that ``slots`` land on one device ('' without a device map)."""
    device_map = view.device_map
    if not device_map:
        return ""
    entries: dict[str, str] = {}
    for s in slots:
        key = map_entry(device_map, view.module_path(view.slot_owner(s)))
        if key is not None:
            entries[key] = device_map[key]
    if len(set(entries.values())) < 2:
        return ""
    embed = set(view.input_embedding_slots)
    keep = next(
        (
            map_entry(device_map, view.module_path(view.slot_owner(s)))
            for s in slots
            if s in embed and map_entry(device_map, view.module_path(view.slot_owner(s))) is not None
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
KINDS: dict[str, str] = kinds(
    {
        "group-split-across-devices": (
            "error",
            "{paths} should be one tensor but sit on {devices}: the placement holds them apart; keep them "
            "on one device (pass the tie group to infer_auto_device_map / no_split_module_classes) and call "
            "model.tie_weights(){values}.",
        ),
        "untied-by-quantization": (
            "warning",
            "{target} is declared tied to {source} (by {declared_by}) but quantization keeps them apart "
            "({target}: {target_q}; {source}: {source_q}); {retie}; to keep one unquantized weight, leave "
            "{quantized} out of quantization ({how}) and then tie, or quantize the tied pair as one tensor "
            "where the library supports it; to keep both copies as they are, set "
            "config.tie_word_embeddings=False so the saved model says so.",
        ),
        "tie-served-in-wrong-layout": (
            "error",
            "{paths} are one weight in different layouts ({layouts}) at one data pointer: accelerate's "
            "dispatch_model and offload hooks find already-placed tied weights by data_ptr() and serve one "
            "tensor in all of them, so a transposed end gets the untransposed weight and the forward changes "
            "or fails with a shape error; tie the transposed end in its forward (use the weight's .t() "
            "there) instead of a Parameter view, or keep the model out of accelerate's hooks.",
        ),
        "quantized-layer-holds-tied-weight": (
            "error",
            "{layer} is a quantized layer ({cls}) but its {attr} is an unquantized {dtype} tensor shared "
            "with {others}: its forward expects the quantized format; leave {layer} out of quantization "
            "(e.g. bitsandbytes llm_int8_skip_modules=[{layer_name!r}]) or untie it before quantizing.",
        ),
    }
)


def untied_pairs(view: GraphView) -> dict[tuple[str, str], str]:
    """Declared pairs (target, source) that a finding of this room explains better than declared-not-tied.

    Values are the finding kind: ``untied-by-quantization`` (an end is quantized) or
    ``group-split-across-devices`` (the ends are served from different places, or as separate copies).
    """
    out: dict[tuple[str, str], str] = {}
    layers = _layer_labels(view)
    for d in view.declarations:
        tie = d.tie
        if tie.status == "unresolved" and {_module_of(tie.target), _module_of(tie.source)} & layers.keys():
            out[(tie.target, tie.source)] = "untied-by-quantization"  # hqq's W_q, torch.ao's packed weight
        if tie.status != "not-tied":
            continue
        t, s = d.target_slot, d.source_slot
        if view.quantization(t) or view.quantization(s):
            out[(tie.target, tie.source)] = "untied-by-quantization"
        elif (
            view.placement(t) != view.placement(s)
            or view.served_from(t) is not None
            or view.served_from(s) is not None
        ):
            out[(tie.target, tie.source)] = "group-split-across-devices"
    return out


def explains_untied(view: GraphView) -> bool:
    """Whether this pass finds a split or a quantization that explains an untied input embedding.

    The core's flag checks ask it (a split device map says more than a wrong flag does): true exactly
    when :func:`findings` holds a ``group-split-across-devices`` or ``untied-by-quantization`` finding.
    """
    return bool(untied_pairs(view)) or any(len({view.placement(s) for s in g}) > 1 for g in view.groups())


def _module_of(name: str) -> str:
    return name.rpartition(".")[0]


def _layer_labels(view: GraphView) -> dict[str, tuple[str, str]]:
    """Canonical path -> (quantization, class) of the quantized layers whose weight is no ``weight`` slot.

    hqq renames it (``W_q``); torch.ao's quantized layers pack it into ``_packed_params`` (no slot at all).
    """
    out = {}
    for s in view.quantized_layer_slots:
        label = view.quantization(s)
        if view.slot_attr(s) != "weight" and label:
            owner = view.slot_owner(s)
            packed = f"{label}, packed into {view.module_belongs(owner)}.{view.slot_attr(s)}"
            out[view.module_belongs(owner)] = (packed, view.module_cls(owner))
    packed_layers = view.packed_layers
    if packed_layers:
        for i in range(view.num_modules):
            label = packed_layers.get(view.module_path(i))
            if label:
                name = view.module_canonical(i)
                out[name] = (f"{label}, packed into {name}._packed_params", view.module_cls(i))
    return out


def findings(view: GraphView) -> list[Finding]:
    """Findings of deployed models: quantization that unties or breaks a tie, ties split by placement.

    ``group-split-across-devices`` is decided on placement (where the served bytes live), so an offloaded
    model and a device map checked before use are judged alike; the message names the device map entries
    to change when the model has a device map.
    """
    out: list[Finding] = []
    explained = untied_pairs(view)
    for d in view.declarations:
        tie = d.tie
        kind = explained.get((tie.target, tie.source))
        if kind == "untied-by-quantization":
            out.append(_untied_by_quantization(view, d))
        elif kind is not None:
            values = sentence(tie.values, tie.target, tie.source)
            out.append(_split(view, [d.target_slot, d.source_slot], [tie.target, tie.source], values))
    for slots in view.groups():
        places = {view.placement(s) for s in slots}
        if len(places) > 1 or _served_apart(view, slots):
            out.append(_split(view, slots, sorted({view.slot_canonical(s) for s in slots})))
    out += _layer_findings(view)
    if view.has_placement:
        out += _wrong_layouts(view)
    return out


def _wrong_layouts(view: GraphView) -> list[Finding]:
    """Tie groups whose ends in different layouts accelerate's hooks place by data pointer.

    Slots on disk are served from files of their own (fresh pointers), so only the others count; a group
    the build recorded because a module's own sizes contradict its weight (the swap already made) counts
    as it is.
    """
    out = []
    for names, layouts in view.pointer_aliases:
        slots = [s for name in names for s in view.resolve(name)]
        placed = [n for n, s in enumerate(slots) if view.placement(s) != "disk"]
        if len(placed) < len(slots) and len({layouts[n] for n in placed}) < 2:
            continue
        shown = "; ".join(f"{names[n]}: {layouts[n]}" for n in placed)
        out.append(
            finding(
                KINDS,
                "tie-served-in-wrong-layout",
                [view.slot_canonical(slots[n]) for n in placed],
                layouts=shown,
            )
        )
    return out


def _served_apart(view: GraphView, slots: list[int]) -> bool:
    """Whether offload hooks serve two slots of one tie group from two files on disk (two copies)."""
    files = {view.served_from(s) for s in slots if view.placement(s) == "disk"} - {None}
    return len(files) > 1


def _untied_by_quantization(view: GraphView, d: Declaration) -> Finding:
    tie = d.tie
    layers = _layer_labels(view) if tie.status == "unresolved" else {}
    ends = [
        _end(view, slot, name, layers)
        for slot, name in ((d.target_slot, tie.target), (d.source_slot, tie.source))
    ]
    (module, target_q, target_cls), (_, source_q, _) = ends
    return finding(
        KINDS,
        "untied-by-quantization",
        [tie.target, tie.source],
        target=tie.target,
        source=tie.source,
        declared_by=tie.declarer,
        target_q=target_q or "not quantized",
        source_q=source_q or "not quantized",
        retie=retie(tie.source, source_q, module, target_q, target_cls),
        quantized=" and ".join(name for name, label, _ in ends if label),
        how=keep_out(ends),
    )


def _end(view: GraphView, slot: int, name: str, layers: dict[str, tuple[str, str]]) -> End:
    """(module, quantization or None, class) of one end of a declared pair quantized apart.

    An end with no slot is a layer that renamed or packed its weight (hqq's ``W_q``, torch.ao), or a slot the
    declaration names that resolution left out (the pair is unresolved as a whole).
    """
    module = _module_of(name)
    if module in layers:
        return (module, *layers[module])
    if slot < 0:
        found = view.resolve(name)
        slot = found[0] if found else -1
    if slot < 0:
        return (module, None, "")
    owner = view.slot_owner(slot)
    return (view.module_belongs(owner), view.quantization(slot), view.module_cls(owner))


def _split(view: GraphView, slots: list[int], names: list[str], values: str = "") -> Finding:
    """A ``group-split-across-devices`` finding; ``values`` ends it with a declared pair's value verdict."""
    places = []
    for s in sorted(slots, key=view.slot_canonical):  # (one order, however the slots were found)
        where = view.placement(s)
        source = view.served_from(s)
        if where == "meta" and source:
            where = f"nowhere ({view.slot_canonical(s)} is {source}: forward fails)"
        elif where == "disk" and source:
            where = f"disk ({source.rsplit('/', 1)[-1]})"
        places.append(where)
    distinct = list(dict.fromkeys(places))
    devices = " and ".join(distinct)
    if {view.placement(s) for s in slots} == {"disk"}:
        devices += (
            ", served by the offload hooks as separate copies (accelerate writes every weight a disk entry "
            "places to a file of its own: map the tie group to cpu or an accelerator instead)"
        )
    elif len({view.placement(s) for s in slots}) == 1:
        devices += ", served by the offload hooks as separate copies"
    found = finding(KINDS, "group-split-across-devices", names, devices=devices, values=values)
    advice = split_advice(view, slots)
    if advice:
        found = Finding(found.kind, found.paths, f"{found.message} Change the {advice}.")
    return found


def _layer_findings(view: GraphView) -> list[Finding]:
    out: list[Finding] = []
    candidates = view.quantized_layer_slots
    if not candidates:
        return out
    for s in candidates:
        group = view.tie_group(s)
        if not group or view.quantization(s):
            continue
        dtype = view.tensor(s).dtype
        if not dtype.startswith(("float", "bfloat")):
            continue
        owner = view.slot_owner(s)
        layer = view.module_belongs(owner)
        own = view.slot_canonical(s)
        others = sorted({view.slot_canonical(o) for o in group if o != s} - {own})
        if not others:
            continue
        out.append(
            finding(
                KINDS,
                "quantized-layer-holds-tied-weight",
                [own, *others],
                layer=layer,
                layer_name=layer.rsplit(".", 1)[-1],
                cls=view.module_cls(owner),
                attr=view.slot_attr(s),
                dtype=dtype,
                others=", ".join(others),
            )
        )
    return out


def deployed_rows(view: GraphView) -> list[list[str]]:
    """Report rows ``[slot, quantization, placement, execution device]`` for slots that are not plain.

    A slot is listed when its tensor is quantized or when a hook serves it or places it elsewhere than its
    tensor sits; none for a plain model.
    """
    rows = []
    placed = view.has_placement
    for s in range(view.num_slots):
        label = view.quantization(s)
        where, runs = view.placement(s), view.execution_device(s)
        device = view.tensor(s).device
        if label or (placed and (where != device or runs != device)):
            rows.append([view.slot_canonical(s), label or "-", where, runs])
    return rows
