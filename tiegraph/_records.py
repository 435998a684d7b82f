"""The small records an index holds beside its lists (slot metadata, tie flags, PEFT copies, placement).

And the extras as plain graph attributes: :func:`graph_attrs` writes them, :func:`set_graph_attrs` reads
them back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from ._index import Index

__all__ = ["CopyWrapper", "Deployed", "SlotMeta", "TieConfig", "graph_attrs", "set_graph_attrs"]


class SlotMeta(NamedTuple):
    """What a slot's tensor is, as the graph records it (``dtype`` without ``torch.``; ``device``: str)."""

    dtype: str
    shape: tuple[int, ...] | None  # None: unknown (the model changed before it was read)
    device: str  # "unknown" when unknown
    requires_grad: bool


@dataclass
class TieConfig:
    """The model root's tie flags as its config states them (None: no config, or no such flag)."""

    config: str | None = None  # the config class name
    tie_word_embeddings: bool | None = None
    text_tie_word_embeddings: bool | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "tie_word_embeddings": self.tie_word_embeddings,
            "text_tie_word_embeddings": self.text_tie_word_embeddings,
        }


@dataclass
class CopyWrapper:
    """One PEFT ``ModulesToSaveWrapper``: where it is, and which adapter copies it holds."""

    path: str
    canonical: str
    active: list[str] = field(default_factory=list)
    adapters: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "canonical": self.canonical,
            "active": self.active,
            "adapters": self.adapters,
        }


@dataclass
class Deployed:
    """What the build step :mod:`tiegraph._served` records: served tensors, placement, quantized layers."""

    placement: list[str | None] | None = None  # per slot; None: where its tensor sits
    execution_device: list[str | None] | None = None  # per slot
    served_from: dict[str, str] = field(default_factory=dict)  # full slot name -> where the hook reads it
    device_map: dict[str, str] | None = None  # the model's hf_device_map, or the one checked
    slot_quantization: dict[int, str] = field(default_factory=dict)  # slot -> format label
    quantized_layer_slots: list[int] = field(default_factory=list)  # weight slots of quantized layer classes
    packed_layers: dict[str, str] = field(default_factory=dict)  # torch.ao layer's full path -> its label
    # (slot names, their layouts) that accelerate's hooks serve by data pointer as another slot's tensor
    pointer_aliases: list[tuple[list[str], list[str]]] = field(default_factory=list)


def graph_attrs(index: Index) -> dict[str, Any]:
    """An index's typed extras as plain JSON-able graph attributes (what ``to_networkx`` stores)."""
    out: dict[str, Any] = {"model_root": index.model_root}
    if index.tie_config is not None:
        out["tie_config"] = index.tie_config.as_dict()
    if index.modules_to_save:
        out["modules_to_save"] = [w.as_dict() for w in index.modules_to_save]
    if len(index.model_roots) > 1:
        out["model_roots"] = list(index.model_roots)
    if index.deployed.device_map is not None:
        out["device_map"] = dict(index.deployed.device_map)
    if index.deployed.served_from:
        out["served_from"] = dict(index.deployed.served_from)
    if index.deployed.quantized_layer_slots:
        out["quantized_layer_slots"] = list(index.deployed.quantized_layer_slots)
    if index.deployed.packed_layers:
        out["packed_layers"] = dict(index.deployed.packed_layers)
    if index.deployed.pointer_aliases:
        out["pointer_aliases"] = [[names, layouts] for names, layouts in index.deployed.pointer_aliases]
    if index.checkpoint is not None:
        out["checkpoint"] = index.checkpoint
    if index.cut:
        out["fsdp_groups"] = dict(index.cut)
    if index.engine:
        out["engine"] = dict(index.engine)
    return out


def set_graph_attrs(index: Index, attrs: dict[str, Any]) -> None:
    """Read back into an index what :func:`graph_attrs` wrote (unknown keys are ignored)."""
    index.model_root = attrs.get("model_root")
    index.model_roots = list(attrs.get("model_roots") or ([index.model_root] if index.model_root else []))
    flags = attrs.get("tie_config")
    index.tie_config = TieConfig(**flags) if isinstance(flags, dict) else None
    index.modules_to_save = [CopyWrapper(**w) for w in attrs.get("modules_to_save") or []]
    index.forward = None
    device_map = attrs.get("device_map")
    index.deployed.device_map = dict(device_map) if isinstance(device_map, dict) else None
    index.deployed.served_from = dict(attrs.get("served_from") or {})
    index.deployed.quantized_layer_slots = [int(s) for s in attrs.get("quantized_layer_slots") or []]
    index.deployed.packed_layers = dict(attrs.get("packed_layers") or {})
    index.deployed.pointer_aliases = [
        ([str(n) for n in names], [str(x) for x in layouts])
        for names, layouts in attrs.get("pointer_aliases") or []
    ]
    checkpoint = attrs.get("checkpoint")
    index.checkpoint = checkpoint if isinstance(checkpoint, dict) else None
    index.cut = dict(attrs.get("fsdp_groups") or {})
    index.engine = dict(attrs.get("engine") or {})
