"""The compact index the builder records: plain lists, one entry per module path, slot, tensor, storage.

Everything public is derived from it: the networkx graph (:mod:`tiegraph.graph`) and the fast queries of
:class:`tiegraph.TieGraph`. It holds no reference to the model's modules or tensors (only their classes),
so a graph never keeps a model alive.

Canonical names are computed on demand: :meth:`Index.belongs_of` and :meth:`Index.slot_canon_of` name one
place (memoised), and the list attributes ``m_canon``, ``m_belongs`` and ``s_canon`` name every place on
first access. A query that needs three canonical names pays for three, not for the whole model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Index:
    """Parallel lists; indices into them are the identities used everywhere else."""

    def __init__(self) -> None:
        # module paths (one entry per path, aliases included), in named_modules(remove_duplicate=False) order
        self.m_path: list[str] = []
        self.m_parent: list[int] = []  # -1 for the root
        self.m_name: list[str] = []  # segment under the parent
        self.m_object: list[int] = []  # distinct module object number (aliases share it)
        self.m_cls: list[str] = []
        self.m_slot0: list[int] = []  # first slot owned by module path i or a later one
        # slots, in named_parameters then named_buffers order per module
        self.s_name: list[str] = []
        self.s_owner: list[int] = []
        self.s_attr: list[str] = []
        self.s_param: list[bool] = []
        self.s_tensor: list[int] = []
        # distinct tensor objects
        self.t_storage: list[int] = []  # -1: no storage (compared by identity only)
        self.t_start: list[int] = []  # byte extent in its storage; start == stop: empty
        self.t_stop: list[int] = []
        self.t_dtype: list[str] = []
        self.t_shape: list[tuple[int, ...]] = []
        self.t_device: list[str] = []
        self.t_grad: list[bool] = []
        self.t_root: list[int] = []  # share-component representative
        self.s_root: list[int] = []  # share component of every slot (an empty tensor's slots stand alone)
        # storages
        self.st_pointer: list[int] = []  # data pointer; 0 for storages known by identity only (meta)
        self._st_id: list[str] | None = None
        self.st_device: list[str] = []
        self.st_nbytes: list[int] = []
        # sharing pairs between slots: (slot, slot, how)
        self.shares: list[tuple[int, int, str]] = []
        # input embedding
        self.ie_module = -1  # primary module path index; -1 when none or when it is a tensor
        self.ie_slots: list[int] = []  # slots inside the input embedding
        self.ie_note = ""  # why there is none, when there is none
        # declared ties and other extras; plain JSON-able data only
        self.declared: list[dict[str, Any]] = []
        self.extra: dict[str, Any] = {}
        # canonical names: either given whole (from a graph) or computed on demand by a namer
        self._m_canon: list[str | None] = []
        self._m_belongs: list[str | None] = []
        self._s_canon: list[str | None] = []
        self.namer: Callable[[Index, int], tuple[str, str]] | None = None
        self.slot_namer: Callable[[Index, int], str] | None = None
        self._m_named = self._s_named = False  # every module / slot named already

    @property
    def st_id(self) -> list[str]:
        """A label per storage: ``device:0xpointer``, or ``device:storage-N`` when known by identity."""
        if self._st_id is None:
            self._st_id = [
                f"{device}:{pointer:#x}" if pointer else f"{device}:storage-{n}"
                for n, (device, pointer) in enumerate(zip(self.st_device, self.st_pointer, strict=True))
            ]
        return self._st_id

    @st_id.setter
    def st_id(self, labels: list[str]) -> None:
        self._st_id = labels

    def fill_slot_roots(self) -> None:
        """Set ``s_root``: the slot's tensor's component, or a number of its own for an empty tensor."""
        t_root, t_stop, t_shape = self.t_root, self.t_stop, self.t_shape
        offset = len(t_root)
        self.s_root = [
            t_root[t] if t_stop[t] or 0 not in t_shape[t] else offset + s for s, t in enumerate(self.s_tensor)
        ]

    # ------------------------------------------------------------------ canonical names, on demand
    def _module_names(self, i: int) -> tuple[str, str]:
        canon = self._m_canon[i]
        if canon is None:
            assert self.namer is not None
            canon, belongs = self.namer(self, i)
            self._m_canon[i] = canon
            self._m_belongs[i] = belongs
        return canon, self._m_belongs[i]  # type: ignore[return-value]

    def canon_of(self, i: int) -> str:
        """Canonical path of module path ``i``."""
        return self._module_names(i)[0]

    def belongs_of(self, i: int) -> str:
        """Canonical path of the model module that module path ``i`` belongs to."""
        return self._module_names(i)[1]

    def slot_canon_of(self, s: int) -> str:
        """Canonical name of slot ``s``."""
        name = self._s_canon[s]
        if name is None:
            assert self.slot_namer is not None
            name = self._s_canon[s] = self.slot_namer(self, s)
        return name

    @property
    def m_canon(self) -> list[str]:
        """Canonical path of every module path (named once; later reads are free)."""
        if self.namer is not None and not self._m_named:
            for i in range(len(self.m_path)):
                self._module_names(i)
            self._m_named = True
        return self._m_canon  # type: ignore[return-value]

    @property
    def m_belongs(self) -> list[str]:
        """Canonical path of the model module every module path belongs to."""
        self.m_canon  # noqa: B018 - fills both lists
        return self._m_belongs  # type: ignore[return-value]

    @property
    def s_canon(self) -> list[str]:
        """Canonical name of every slot (named once; later reads are free)."""
        if self.slot_namer is not None and not self._s_named:
            for s in range(len(self.s_name)):
                self.slot_canon_of(s)
            self._s_named = True
        return self._s_canon  # type: ignore[return-value]

    def set_canonical(self, m_canon: list[str], m_belongs: list[str], s_canon: list[str]) -> None:
        """Give every canonical name at once (used when rebuilding from a graph)."""
        self._m_canon, self._m_belongs, self._s_canon = list(m_canon), list(m_belongs), list(s_canon)
        self.namer = self.slot_namer = None

    def subtree_end(self, i: int) -> int:
        """Module paths ``i .. subtree_end(i) - 1`` are ``i`` and everything under it (pre-order)."""
        parent = self.m_parent
        count = len(parent)
        if i == 0:
            return count
        end = i + 1
        while end < count:
            p = parent[end]
            while p > i:  # ancestors come before their descendants in pre-order
                p = parent[p]
            if p != i:
                break
            end += 1
        return end

    def slots_under(self, i: int) -> range:
        """Slots owned by module path ``i`` or by any path under it."""
        end = self.subtree_end(i)
        stop = self.m_slot0[end] if end < len(self.m_slot0) else len(self.s_name)
        return range(self.m_slot0[i], stop)
