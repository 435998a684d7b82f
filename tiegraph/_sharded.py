"""Build step: which FSDP2 ``fully_shard`` call holds each parameter slot of an already-sharded model.

:func:`record_cut` runs when the builder's class marks (:func:`is_fsdp2_type`, decided once per class)
find an ``FSDPModule``: it reads each FSDP2 state's modules and parameters (torch keeps them privately) and
records the call text per parameter slot in ``index.cut``. :mod:`tiegraph.sharding._after` explains a
declared pair the cut split; :mod:`tiegraph.sharding` writes plans with the same call text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from torch import nn

if TYPE_CHECKING:
    from ._index import Index

__all__ = ["NO_CALL", "call_text", "expr", "is_fsdp2_type", "record_cut"]

NO_CALL = "no fully_shard call"


def is_fsdp2_type(kind: type) -> bool:
    """Whether module class ``kind`` is an FSDP2 ``FSDPModule`` (``fully_shard`` names its classes FSDP*)."""
    if not kind.__name__.startswith("FSDP"):
        return False
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # a torch without FSDP2
        return False
    return issubclass(kind, FSDPModule)


def _groups(modules: list[nn.Module], path_of: dict[int, str]) -> dict[int, str]:
    """``id(parameter) -> call text`` for every parameter an FSDP2 state manages (sharded or not)."""
    held: dict[int, str] = {}
    seen: set[int] = set()
    for module in modules:
        get_state = getattr(module, "_get_fsdp_state", None)
        state = get_state() if callable(get_state) else None
        if state is None or id(state) in seen:
            continue
        seen.add(id(state))
        owners = tuple(m for m in getattr(state, "_modules", ()) if id(m) in path_of)
        text = call_text([path_of[id(m)] for m in owners]) if owners else "fully_shard(?)"
        groups = getattr(state, "_fsdp_param_groups", None) or [getattr(state, "_fsdp_param_group", None)]
        for group in groups:
            for fsdp_param in getattr(group, "fsdp_params", None) or ():
                for attr in ("sharded_param", "_unsharded_param"):
                    param = getattr(fsdp_param, attr, None)
                    if param is not None:
                        held[id(param)] = text
    return held


def record_cut(index: Index, modules: list[nn.Module], tensors: list[Any]) -> None:
    """The builder's hook: record the ``fully_shard`` call of every parameter slot of an FSDP2 model.

    Called only when some module class :func:`is_fsdp2_type` (the builder's class marks).
    """
    path_of: dict[int, str] = {}
    for i, module in enumerate(modules):
        path_of.setdefault(id(module), index.path_of(i))
    try:
        held = _groups(modules, path_of)
    except Exception:  # torch's private FSDP state changed shape: record nothing rather than guess
        return
    for slot, (tensor, is_param) in enumerate(zip(tensors, index.s_param, strict=True)):
        if not is_param:
            continue
        index.cut[index.slot_name_of(slot)] = held.get(id(tensor), NO_CALL)


def expr(path: str) -> str:
    """The Python expression reaching module ``path`` from ``model`` (``model.layers[0].mlp``)."""
    out = "model"
    for part in path.split(".") if path else ():
        out += f"[{part}]" if part.isdigit() else f".{part}" if part.isidentifier() else f"[{part!r}]"
    return out


def call_text(paths: Sequence[str]) -> str:
    """A ``fully_shard`` call over modules ``paths`` as a user writes it (``fully_shard(model.lm_head)``)."""
    names = [expr(p) for p in paths]
    return f"fully_shard({names[0]})" if len(names) == 1 else f"fully_shard([{', '.join(names)}])"
