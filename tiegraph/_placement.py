"""Where each slot's bytes live, where it runs and how it is quantized: per-slot answers from the index.

The build step :mod:`tiegraph._served` records served tensors and quantization labels; a device map
checked before anything is placed records its placement here (:func:`place`). Everything above (the view,
the networkx graph, JSON) reads these answers; only :func:`place` and :func:`read_slot_facts` write, the
first through :func:`tiegraph._graph.amend`, the second while an index is read back from a graph.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from .errors import ConfigurationError

if TYPE_CHECKING:
    from ._index import Index

__all__ = [
    "execution_device_of",
    "map_entry",
    "place",
    "placement_of",
    "quantization_of",
    "read_slot_facts",
    "slot_facts",
]


def placement_of(index: Index, s: int) -> str:
    """Where slot ``s``'s bytes live: a device, ``"disk"``, or ``"meta"`` when they exist nowhere."""
    return _recorded(index.deployed.placement, index, s)


def execution_device_of(index: Index, s: int) -> str:
    """The device slot ``s`` is computed on (its hook's execution device, else where it sits)."""
    return _recorded(index.deployed.execution_device, index, s)


def _recorded(column: list[str | None] | None, index: Index, s: int) -> str:
    """Slot ``s``'s entry in a per-slot column the build step or a device map recorded, else its device."""
    if column:
        found = column[s]
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


def map_entry(device_map: Mapping[str, str], path: str) -> str | None:
    """The device map key that places module ``path`` (the longest key that is ``path`` or a prefix)."""
    best: str | None = None
    for key in device_map:
        inside = key == "" or key == path or path.startswith(key + ".")
        if inside and (best is None or len(key) > len(best)):
            best = key
    return best


def place(index: Index, device_map: Mapping[str, str], own_files: bool = True) -> None:
    """Record the placement a device map (module name -> device name) gives every slot.

    ``own_files``: the model is placed by accelerate (``dispatch_model``, ``disk_offload``), which writes
    every parameter a disk entry places to a file of its own, so the ends of a tie both on disk are served
    as separate copies; ``from_pretrained`` instead serves disk weights from the checkpoint's own entries,
    where a tied pair is one entry.

    Raises :class:`~tiegraph.errors.ConfigurationError` naming the first slot no entry places (accelerate
    would refuse that map too).
    """
    placement: list[str | None] = []
    for s, owner in enumerate(index.s_owner):
        key = map_entry(device_map, index.m_path[owner])
        if key is None:
            raise ConfigurationError(
                f"device_map places no module holding {index.s_name[s]!r}; add an entry for "
                f"{index.m_path[owner] or '<root>'!r} or one of its parents (accelerate would refuse it too)"
            )
        placement.append(device_map[key])
    index.deployed.placement = placement
    index.deployed.execution_device = [p if p != "disk" else "cpu" for p in placement]
    index.deployed.device_map = dict(device_map)
    index.deployed.served_from = {
        index.s_name[s]: f"<offload_dir>/{index.s_name[s]}.dat"
        for s, where in enumerate(placement)
        if own_files and where == "disk" and index.s_param[s]
    }
