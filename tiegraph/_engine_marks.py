"""Build step: what DeepSpeed and Megatron-core leave on a model they cut, read from their own attributes.

- ZeRO-3 placeholders (:func:`with_partitions`, :func:`record_zero3`): a partitioned parameter carries
  ``ds_id``, ``ds_shape`` and ``ds_tensor`` (its partition) while its data is an empty placeholder. The
  share relation gets its logical shape and its partition's device, as FSDP1's flat views give theirs, and
  ``index.engine["zero3"]`` records each slot's ``ds_id``.
- Ties an engine keeps by its own means (:func:`record_kept`, ``index.engine["kept"]``): a DeepSpeed
  ``PipelineModule``'s ``TiedLayerSpec`` modules (``tied_modules``, ``tied_comms``), a Megatron-core model
  whose output layer takes the embedding's weight as an argument, and parameters marked
  ``shared_embedding``.

:mod:`tiegraph.sharding._zero` and :mod:`tiegraph.sharding._kept` turn the records into findings. Nothing here
imports deepspeed or megatron: each engine's attributes are looked for only once it has been imported (a
``sys.modules`` check per build otherwise).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from ._storage import FlatViews

if TYPE_CHECKING:
    from torch import nn

    from ._index import Index

__all__ = ["KEPT", "ZERO3", "partitioned", "record_kept", "record_zero3", "with_partitions"]

ZERO3 = "zero3"  # index.engine key: full slot name -> ds_id
KEPT = "kept"  # index.engine key: list of {"kind", "slots", ...} records


def _is_partitioned(tensor: Any) -> bool:
    return hasattr(tensor, "ds_id") and hasattr(tensor, "ds_shape") and hasattr(tensor, "ds_tensor")


def partitioned(tensors: list[Any]) -> dict[int, Any]:
    """Slot number -> tensor of the slots holding a ZeRO-3 parameter (none unless deepspeed is imported)."""
    if "deepspeed" not in sys.modules:
        return {}
    return {s: t for s, t in enumerate(tensors) if _is_partitioned(t)}


def with_partitions(flat: FlatViews, tensors: list[Any]) -> FlatViews:
    """``flat`` plus the logical shape (``ds_shape``) and partition placement of every ZeRO-3 parameter."""
    found = partitioned(tensors)
    if not found:
        return flat
    shapes, devices = dict(flat.shapes), dict(flat.devices)
    for tensor in found.values():
        shapes[id(tensor)] = tensor.ds_shape
        part = tensor.ds_tensor
        if part is not None and getattr(part, "device", None) is not None:
            devices[id(tensor)] = part.device
    return FlatViews(shapes, flat.containers, devices)


def record_zero3(index: Index, tensors: list[Any]) -> None:
    """Every ZeRO-3 parameter slot's ``ds_id`` in ``index.engine`` (a ``sys.modules`` check when none)."""
    found = partitioned(tensors)
    if found:
        index.engine[ZERO3] = {index.slot_name_of(s): int(t.ds_id) for s, t in found.items()}


def _prefix(path: str) -> str:
    return path + "." if path else ""


def _tied_layers(path: str, module: nn.Module) -> list[dict[str, Any]]:
    """A ``PipelineModule``'s ``TiedLayerSpec`` modules, read from ``tied_modules`` and ``tied_comms``."""
    state = module.__dict__
    tied, comms = state["_modules"].get("tied_modules"), state.get("tied_comms") or {}
    attrs, specs = state.get("tied_weight_attrs") or {}, state.get("_layer_specs") or []
    out = []
    for key in getattr(tied, "_modules", {}):
        layers = [i for i, spec in enumerate(specs) if getattr(spec, "key", None) == key]
        slots = [f"{_prefix(path)}tied_modules.{key}.{attr}" for attr in attrs.get(key, ["weight"])]
        ranks = [int(r) for r in (comms.get(key) or {}).get("ranks", [])]
        record = {"kind": "deepspeed-tied-layer", "slots": slots, "key": key}
        out.append({**record, "layers": layers, "ranks": ranks})
    return out


def _argument_tie(path: str, module: nn.Module) -> list[dict[str, Any]]:
    """A Megatron-core language model whose output layer gets the embedding's weight as an argument."""
    children = module.__dict__["_modules"]
    head, embedding = children.get("output_layer"), children.get("embedding")
    if head is None or embedding is None or getattr(head, "weight", True) is not None:
        return []
    words = embedding.__dict__["_modules"].get("word_embeddings")
    if words is None or getattr(words, "weight", None) is None:
        return []
    slot = f"{_prefix(path)}embedding.word_embeddings.weight"
    return [{"kind": "megatron-argument-tie", "slots": [slot], "head": f"{_prefix(path)}output_layer"}]


def record_kept(index: Index, modules: list[nn.Module], tensors: list[Any]) -> None:
    """The ties DeepSpeed and Megatron-core keep, into ``index.engine`` (a ``sys.modules`` check without)."""
    deepspeed, megatron = "deepspeed" in sys.modules, "megatron.core" in sys.modules
    if not (deepspeed or megatron):
        return
    found: list[dict[str, Any]] = []
    for i, module in enumerate(modules):
        state = module.__dict__
        if deepspeed and "tied_comms" in state and "tied_modules" in state.get("_modules", {}):
            found += _tied_layers(index.path_of(i), module)
        if megatron and state.get("share_embeddings_and_output_weights") is True:
            found += _argument_tie(index.path_of(i), module)
    if megatron:
        for s, tensor in enumerate(tensors):
            if getattr(tensor, "shared_embedding", False) is True:
                found.append({"kind": "megatron-shared-embedding", "slots": [index.slot_name_of(s)]})
    if found:
        index.engine[KEPT] = found
