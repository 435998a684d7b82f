"""The compact index the builder records: plain lists, one entry per module path, slot, tensor, storage.

Everything public is derived from it: the networkx graph (:mod:`tiegraph.graph`) and the fast queries of
:class:`tiegraph.TieGraph`. It holds no reference to the model, so a graph never keeps a model alive.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Index:
    """Parallel lists; indices into them are the identities used everywhere else."""

    # module paths (one entry per path, aliases included), in named_modules(remove_duplicate=False) order
    m_path: list[str] = field(default_factory=list)
    m_canon: list[str] = field(default_factory=list)
    m_belongs: list[str] = field(default_factory=list)
    m_cls: list[str] = field(default_factory=list)
    m_parent: list[int] = field(default_factory=list)  # -1 for the root
    m_name: list[str] = field(default_factory=list)  # segment under the parent
    m_object: list[int] = field(default_factory=list)  # distinct module object number (aliases share it)
    # slots, in named_parameters then named_buffers order per module
    s_name: list[str] = field(default_factory=list)
    s_canon: list[str] = field(default_factory=list)
    s_owner: list[int] = field(default_factory=list)
    s_attr: list[str] = field(default_factory=list)
    s_param: list[bool] = field(default_factory=list)
    s_tensor: list[int] = field(default_factory=list)
    # distinct tensor objects
    t_storage: list[int] = field(default_factory=list)  # -1: no storage (identity only)
    t_start: list[int] = field(default_factory=list)  # byte extent in its storage; start == stop: empty
    t_stop: list[int] = field(default_factory=list)
    t_dtype: list[str] = field(default_factory=list)
    t_shape: list[tuple[int, ...]] = field(default_factory=list)
    t_device: list[str] = field(default_factory=list)
    t_grad: list[bool] = field(default_factory=list)
    t_root: list[int] = field(default_factory=list)  # component representative
    # storages
    st_id: list[str] = field(default_factory=list)
    st_device: list[str] = field(default_factory=list)
    st_nbytes: list[int] = field(default_factory=list)
    # sharing pairs between slots: (slot, slot, how)
    shares: list[tuple[int, int, str]] = field(default_factory=list)
    # input embedding
    ie_module: int = -1  # primary module path index, -1 when none or when it is a tensor
    ie_slots: list[int] = field(default_factory=list)  # slots inside the input embedding
    ie_note: str = ""  # why there is none, when there is none
    # declared ties and other extras (issue 3 and later); plain data only
    declared: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
