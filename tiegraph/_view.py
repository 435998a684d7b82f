"""The read-only internal interface over one graph: what the audit, the report and the pictures read.

:class:`GraphView` answers from the compact index a :class:`tiegraph.TieGraph` holds, so that no room
outside :mod:`tiegraph._graph` reaches into private attributes. Slots and modules are numbered as in the
index (and as the networkx graph orders its nodes); every method is cheap and nothing here changes.

A finding function (see :mod:`tiegraph._audit`) takes a ``GraphView``; ``view.tg`` is the public
:class:`~tiegraph.TieGraph` for the public queries.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._copies import UNUSED, forward_of
from ._placement import execution_device_of, placement_of, quantization_of
from ._records import CopyWrapper, TieConfig
from .errors import PathNotFoundError

if TYPE_CHECKING:
    from ._copies import Forward
    from ._declared import Declaration
    from ._graph import TieGraph
    from ._index import Index

__all__ = ["GraphView", "TensorFacts", "resolve_slots"]


@dataclass(frozen=True)
class TensorFacts:
    """What a slot's tensor is, without the tensor: dtype, shape, device, ``requires_grad``."""

    number: int  # stands for the tensor object: the first slot holding it, where the builder knows
    dtype: str
    shape: tuple[int, ...] | None  # None: unknown (the model changed before the graph read it)
    device: str
    requires_grad: bool


class GraphView:
    """Read-only access to one graph's index, numbered as the index numbers modules and slots."""

    def __init__(self, tg: TieGraph, index: Index) -> None:
        self.tg = tg
        self._idx = index

    @property
    def _forward(self) -> Forward:
        return forward_of(self._idx)

    # ------------------------------------------------------------------ modules
    @property
    def num_modules(self) -> int:
        """How many module paths (aliases included)."""
        return len(self._idx.m_path)

    def module_path(self, i: int) -> str:
        """Full path of module path ``i``."""
        return self._idx.m_path[i]

    def module_canonical(self, i: int) -> str:
        """Canonical path of module path ``i``."""
        return self._idx.canon_of(i)

    def module_belongs(self, i: int) -> str:
        """Canonical path of the model module that module path ``i`` belongs to (adapters: their layer)."""
        return self._idx.belongs_of(i)

    def module_cls(self, i: int) -> str:
        """Class name of module path ``i``."""
        return self._idx.m_cls[i]

    def module_parent(self, i: int) -> int:
        """Parent module path of ``i`` (-1 for the root)."""
        return self._idx.m_parent[i]

    def module_defines(self, i: int, attr: str) -> bool | None:
        """Whether module path ``i``'s class has ``attr`` (None: a graph read back keeps no classes)."""
        types = self._idx.m_type
        return None if types is None else hasattr(types[i], attr)

    def is_input_embedding_alias(self, i: int) -> bool:
        """Module path ``i`` is, or lies under, another path of the input embedding's module object."""
        return self._idx.under_alias_of_input_embedding(i)

    # ------------------------------------------------------------------ slots
    @property
    def num_slots(self) -> int:
        """How many slots (named parameters and buffers, aliases included)."""
        return self._idx.num_slots

    def slot_name(self, s: int) -> str:
        """Full name of slot ``s``."""
        return self._idx.s_name[s]

    def slot_canonical(self, s: int) -> str:
        """Canonical name of slot ``s``."""
        return self._idx.slot_canon_of(s)

    def slot_owner(self, s: int) -> int:
        """Module path owning slot ``s``."""
        return self._idx.s_owner[s]

    def slot_attr(self, s: int) -> str:
        """Attribute name of slot ``s`` on its owner."""
        return self._idx.s_attr[s]

    def is_parameter(self, s: int) -> bool:
        """True for a parameter slot, False for a buffer slot."""
        return self._idx.s_param[s]

    def tensor(self, s: int) -> TensorFacts:
        """The facts of the tensor in slot ``s``."""
        idx = self._idx
        meta = idx.meta_of(s)
        number = idx.same_as.get(s, s)
        return TensorFacts(
            number,
            meta.dtype,
            None if meta.shape is None else tuple(meta.shape),
            meta.device,
            meta.requires_grad,
        )

    def storage(self, s: int) -> tuple[int, int, int] | None:
        """``(storage number, byte offset, byte length)`` that slot ``s`` reads, or None."""
        idx = self._idx
        t = idx.s_tensor[s]
        number = idx.t_storage[t]
        if number < 0:
            return None
        return number, idx.t_start[t], idx.t_stop[t] - idx.t_start[t]

    def layout(self, s: int) -> tuple[int, int, tuple[int, ...] | None] | None:
        """``(byte start, byte stop, strides)`` of slot ``s``'s tensor (strides None: contiguous).

        Kept at build when several tensor objects read its storage; None when not kept.
        """
        return self._idx.layouts.get(self._idx.same_as.get(s, s))

    def storage_facts(self, number: int) -> tuple[str, str, int]:
        """``(label, device, nbytes)`` of storage ``number``."""
        idx = self._idx
        return idx.st_id[number], idx.st_device[number], idx.st_nbytes[number]

    def group_of(self, s: int) -> int:
        """The tie group number of slot ``s`` (equal for slots that share memory), over the slots in use.

        Slots the forward does not use (see :mod:`tiegraph._copies`) each have a number of their own.
        """
        return self._forward.root_of(s)

    def memory_group_of(self, s: int) -> int:
        """The share component of slot ``s`` over every slot, used by the forward or not (memory alone)."""
        return self._idx.s_root[s]

    def groups(self) -> list[list[int]]:
        """Tie groups of the slots in use, each in slot order, in order of first slot."""
        return list(self._forward.groups.values())

    def tie_group(self, s: int) -> Sequence[int]:
        """Slot ``s``'s tie group (``s`` included), in slot order; empty when ``s`` shares nothing in use."""
        return self._forward.groups.get(self._forward.root_of(s), ())

    def is_used(self, s: int) -> bool:
        """Whether the forward uses slot ``s`` (False inside a PEFT copy another copy stands in for)."""
        return self._forward.used(s)

    def shares(self) -> Sequence[tuple[int, int, str]]:
        """The sharing pairs ``(slot, slot, how)`` the builder recorded."""
        return self._idx.shares

    def resolve(self, name: str) -> list[int]:
        """Slots a full or canonical slot name names, or every slot under a module path (``""``: all).

        Only the slots in use, unless the name reaches none of those (a full path into a copy the forward
        does not use): then those slots.

        Raises :class:`~tiegraph.errors.PathNotFoundError` naming the nearest names.
        """
        return resolve_slots(self._idx, name)

    # ------------------------------------------------------------------ placement and quantization
    def placement(self, s: int) -> str:
        """Where slot ``s``'s bytes live: a device, ``"disk"``, or ``"meta"`` when they exist nowhere."""
        return placement_of(self._idx, s)

    def execution_device(self, s: int) -> str:
        """The device slot ``s`` is computed on (its hook's execution device, else where it sits)."""
        return execution_device_of(self._idx, s)

    def quantization(self, s: int) -> str | None:
        """The quantization format of slot ``s``'s tensor (``torchao.Int8Tensor``, ...), or None."""
        return quantization_of(self._idx, s)

    def served_from(self, s: int) -> str | None:
        """Where an accelerate offload hook reads slot ``s`` from (for the report), or None (not served)."""
        return self._idx.deployed.served_from.get(self._idx.s_name[s])

    @property
    def has_placement(self) -> bool:
        """Whether a hook or a checked device map placed the slots (else each sits where its tensor is)."""
        return bool(self._idx.deployed.placement)

    @property
    def device_map(self) -> Mapping[str, str] | None:
        """The model's ``hf_device_map``, or the device map checked by :func:`tiegraph.check_device_map`."""
        return self._idx.deployed.device_map

    @property
    def pointer_aliases(self) -> Sequence[tuple[list[str], list[str]]]:
        """Slot names (and layouts) that accelerate's hooks serve by data pointer as another slot's tensor."""
        return self._idx.deployed.pointer_aliases

    @property
    def packed_layers(self) -> Mapping[str, str]:
        """Full path -> label of the torch.ao quantized layers, whose weight is packed (no slot)."""
        return self._idx.deployed.packed_layers

    @property
    def quantized_layer_slots(self) -> Sequence[int]:
        """The weight slots of quantized layer classes (bitsandbytes, hqq, ...)."""
        return self._idx.deployed.quantized_layer_slots

    # ------------------------------------------------------------------ the model's own words
    @property
    def declarations(self) -> Sequence[Declaration]:
        """Every declared pair between slots in use, in declaration order (see :mod:`tiegraph._copies`)."""
        declared = self._idx.declared
        if not self._forward.unused:
            return declared
        return [d for d in declared if UNUSED.isdisjoint((d.tie.target_copy, d.tie.source_copy))]

    @property
    def all_declarations(self) -> Sequence[Declaration]:
        """Every declared pair, those of PEFT copies the forward does not use included."""
        return self._idx.declared

    @property
    def tie_config(self) -> TieConfig:
        """The root model's tie flags (all None without a config)."""
        return self._idx.tie_config or TieConfig()

    @property
    def modules_to_save(self) -> list[CopyWrapper]:
        """PEFT ``ModulesToSaveWrapper`` modules: ``path``, ``canonical``, ``active``, ``adapters``."""
        return list(self._idx.modules_to_save)

    @property
    def checkpoint(self) -> dict[str, Any] | None:
        """A checkpoint's findings as :func:`tiegraph._checkpoint.check_checkpoint` recorded them, or None."""
        return self._idx.checkpoint

    @property
    def fsdp_groups(self) -> Mapping[str, str]:
        """Full slot name -> the FSDP2 ``fully_shard`` call holding it (empty: no FSDP2 module at build)."""
        return self._idx.cut

    @property
    def engine(self) -> Mapping[str, Any]:
        """What the builder read of DeepSpeed's and Megatron-core's marks (:mod:`tiegraph._engine_marks`)."""
        return self._idx.engine

    # ------------------------------------------------------------------ input embedding
    @property
    def input_embedding_module(self) -> int:
        """Module path of the input embedding (its primary path), or -1 (none, or a bare tensor)."""
        return self._idx.ie_module

    @property
    def input_embedding_slots(self) -> Sequence[int]:
        """Slots inside the input embedding."""
        return self._idx.ie_slots


def resolve_slots(idx: Index, name: str) -> list[int]:
    """Slots a full or canonical slot name names, or every slot under a module path (``""``: all).

    Only the slots the forward uses (see :mod:`tiegraph._copies`), unless the name reaches none of those (a
    full path into a PEFT copy the forward does not use): then those slots. Raises
    :class:`~tiegraph.errors.PathNotFoundError` naming the nearest names.
    """
    found = _named_slots(idx, name)
    unused = forward_of(idx).unused
    used = [s for s in found if s not in unused] if unused else found
    return used or found


def _named_slots(idx: Index, name: str) -> list[int]:
    if not isinstance(name, str):
        raise TypeError(f"expected a slot or module name (str), got {type(name).__name__}")
    for names in (idx.s_name, idx.s_canon):
        found = [s for s, n in enumerate(names) if n == name]
        if found:
            return found
    modules = [
        i
        for i in range(len(idx.m_path))
        if idx.m_path[i] == name or idx.m_canon[i] == name or idx.m_belongs[i] == name
    ]
    if not modules:
        from ._text import not_found

        raise PathNotFoundError(
            not_found(f"{name!r} names no slot or module of the model", name, idx.s_name, idx.m_path)
        )
    prefixes = tuple(idx.m_path[i] + "." for i in modules if idx.m_path[i])
    owned = set(modules)
    if any(not idx.m_path[i] for i in modules):
        return list(range(len(idx.s_name)))
    return [
        s for s, owner in enumerate(idx.s_owner) if owner in owned or idx.m_path[owner].startswith(prefixes)
    ]
