"""The small records an index holds beside its lists: slot metadata, tie flags, PEFT copies, placement."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

__all__ = ["CopyWrapper", "Deployed", "SlotMeta", "TieConfig"]


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
