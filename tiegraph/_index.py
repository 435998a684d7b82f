"""The compact index the builder records, and what it derives on first use.

Everything public is derived from it: the networkx graph (:mod:`tiegraph._graph`) and the fast queries of
:class:`tiegraph.TieGraph`. It holds no strong reference to the model's modules or tensors (only their
classes, and one weak reference to the model), so a graph never keeps a model alive.

Design: eager what decides a tie, lazy everything else
------------------------------------------------------
A build records, per module path, its parent, segment name and class; per non-empty slot dict, one
run (``d_number``: ``2 * path`` for parameters, ``2 * path + 1`` for buffers; ``d_size``: its slots); per
slot, its attribute name; the share relation (``shares`` pairs, and the tie groups as a small dict of
root slot per grouped slot), which slots hold the same tensor object and the metadata of the slots on
shared storages; the input embedding; the declaring modules' raw declarations and the tie config. That is all
:meth:`TieGraph.tied_to_input_embedding` and :meth:`TieGraph.tie_groups` need, so ``build_graph`` + one query
costs about one module walk.

Derived on first read, each group at once (a :class:`_Lazy` field's value is not in the index until then):

- slots: ``s_owner`` and ``s_param`` expanded from the runs, ``m_object`` (``range`` unless the build found
  module aliases); meanwhile :meth:`Index.owner_of`, :meth:`Index.slot_start` and :meth:`Index.object_of`
  answer single questions without expanding;
- names: full paths ``m_path``/``s_name``, class names ``m_cls``, and canonical
  names (per place, memoised: :meth:`Index.canon_of`, :meth:`Index.slot_canon_of`; or all at once);
- object and component numbers ``s_tensor``, ``t_root``, ``s_root`` (from the build's share data, no walk);
- tensor metadata ``t_dtype``, ``t_shape``, ``t_device``, ``t_grad``, byte extents ``t_storage``,
  ``t_start``, ``t_stop`` and the storage table ``st_*``: by one re-walk of the model through the weak
  reference (:mod:`tiegraph._metadata`), per slot found by name whose storage witness recorded at build
  still holds; a slot that changed or is gone is unknown (shape ``None``, device ``"unknown"``), never read
  from the changed model, and nothing raises;
- ``declared``: declarations expanded against the slot names (recorded raw during the build).

Why: measured on the 70B-shaped meta Llama and the 100k-slot tree (see ``benchmarks/RESULTS.md`` and the
builder's docstring), per-slot Python work and passes over cold objects are the whole cost. Reading
dtype/shape/device/requires_grad of every slot at build put the 100k tree at ~1.5x a bare
``named_parameters`` walk (target 1.3x); per-slot owner and flag lists cost ~15 ms of a 170 ms build there.
Exports and audits already cost 10-30x a walk, so they pay for the re-walk without noticing.

An index rebuilt from a graph (:func:`tiegraph._json.from_networkx`) is given every field whole (plain
lists appended to, as before): only indexes made by the builder are lazy.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from itertools import accumulate, chain, repeat
from operator import and_, eq, rshift, sub
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from ._records import CopyWrapper, Deployed, SlotMeta, TieConfig

if TYPE_CHECKING:
    from ._copies import Forward
    from ._declared import Declaration

T = TypeVar("T")


class _Lazy(Generic[T]):
    """A field the index computes on first read (by calling its ``filler`` method), and that can be set."""

    def __init__(self, filler: str) -> None:
        self.filler = filler
        self.private = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.private = "_" + name

    @overload
    def __get__(self, obj: None, owner: type) -> _Lazy[T]: ...
    @overload
    def __get__(self, obj: Index, owner: type) -> T: ...
    def __get__(self, obj: Index | None, owner: type) -> _Lazy[T] | T:
        if obj is None:
            return self
        value: T | None = obj.__dict__.get(self.private)
        if value is None:
            getattr(obj, self.filler)()
            value = obj.__dict__[self.private]
        return value

    def __set__(self, obj: Index, value: T) -> None:
        obj.__dict__[self.private] = value


_IS_PARAM = (True, False)  # by run number & 1: parameters, then buffers
_LAZY_SLOTS = ("m_object", "s_owner", "s_param")
_LAZY_NAMES = ("m_path", "m_cls", "s_name")
_LAZY_NUMBERS = ("s_tensor", "t_root", "s_root")
_LAZY_META = (
    "t_storage",
    "t_start",
    "t_stop",
    "t_dtype",
    "t_shape",
    "t_device",
    "t_grad",
    "st_pointer",
    "st_device",
    "st_nbytes",
    "st_id",
)
_LAZY_FIELDS = (*_LAZY_SLOTS, *_LAZY_NAMES, *_LAZY_NUMBERS, *_LAZY_META, "declared")


class Index:
    """Parallel lists; indices into them are the identities used everywhere else.

    Module paths are numbered in ``named_modules(remove_duplicate=False)`` order (aliases included), slots
    in ``named_parameters`` then ``named_buffers`` order per module path, distinct tensor objects in order
    of their first slot, storages in order of their first tensor.
    """

    # derived on first read (see the module docstring); an index from a graph holds them as plain lists
    m_object: _Lazy[list[int]] = _Lazy("_fill_objects")  # distinct module object number (aliases share it)
    s_owner: _Lazy[list[int]] = _Lazy("_fill_slots")  # module path owning every slot
    s_param: _Lazy[list[bool]] = _Lazy("_fill_slots")  # parameter (True) or buffer (False)
    m_path: _Lazy[list[str]] = _Lazy("_fill_names")
    m_cls: _Lazy[list[str]] = _Lazy("_fill_names")
    s_name: _Lazy[list[str]] = _Lazy("_fill_names")
    s_tensor: _Lazy[list[int]] = _Lazy("_fill_numbers")  # distinct tensor object of every slot
    t_root: _Lazy[list[int]] = _Lazy("_fill_numbers")  # share component of every tensor (smallest member)
    s_root: _Lazy[list[int]] = _Lazy("_fill_roots")  # share component of every slot (empties alone)
    t_storage: _Lazy[list[int]] = _Lazy("_fill_meta")  # -1: no storage (compared by identity only)
    t_start: _Lazy[list[int]] = _Lazy("_fill_meta")  # byte extent in its storage; start == stop: empty
    t_stop: _Lazy[list[int]] = _Lazy("_fill_meta")
    t_dtype: _Lazy[list[str]] = _Lazy("_fill_meta")
    t_shape: _Lazy[list[tuple[int, ...] | None]] = _Lazy("_fill_meta")  # None: unknown
    t_device: _Lazy[list[str]] = _Lazy("_fill_meta")
    t_grad: _Lazy[list[bool]] = _Lazy("_fill_meta")
    st_pointer: _Lazy[list[int]] = _Lazy("_fill_meta")  # data pointer; 0 for storages known by identity
    st_device: _Lazy[list[str]] = _Lazy("_fill_meta")
    st_nbytes: _Lazy[list[int]] = _Lazy("_fill_meta")
    st_id: _Lazy[list[str]] = _Lazy("_fill_meta")  # ``device:0xpointer`` or ``device:storage-N``
    declared: _Lazy[list[Declaration]] = _Lazy("_fill_declared")

    # Fields whose value is immutable (None, a number, a flag, a string) and that are only ever reassigned,
    # never changed in place, default here on the class: a build sets few of them, so an index's instance
    # dict holds only what it was given (mutable containers are made per instance in ``__init__``).
    m_type: list[type] | None = None  # class per path (builder only; graphs give m_cls)
    _d_start: list[int] | None = None  # first slot of every run, and the slot count last
    objects_distinct = True  # (builder) no module object under two paths: m_object is range
    ie_module = -1  # primary module path index; -1 when none or when it is a tensor
    ie_note = ""  # why there is none, when there is none
    model_root: str | None = None  # full path of the one model root (None: none, or several)
    tie_config: TieConfig | None = None
    forward: Forward | None = None  # which PEFT copies the forward uses (tiegraph._copies)
    checkpoint: dict[str, Any] | None = None  # a checkpoint's findings (tiegraph._checkpoint)
    namer: Callable[[Index, int], tuple[str, str]] | None = None
    slot_namer: Callable[[Index, int], str] | None = None
    _m_named = _s_named = False  # every module / slot named already
    _groups: dict[int, list[int]] | None = None
    # on-demand sources (builder only): a weak reference to the model (its callback fills the metadata when
    # the model dies, see tiegraph._metadata.watch)
    model_ref: Callable[[], Any] | None = None
    # what the build captured of every slot (builder only): requires_grad, and the witness the metadata
    # re-walk checks a slot against (see tiegraph._metadata)
    b_grad: bytes | None = None
    witness: array[int] | None = None
    meta_filler: Callable[[Index], None] | None = None
    declared_filler: Callable[[Index], None] | None = None
    # a fresh index (filled by hand, e.g. from a graph) holds every field as a plain list; the builder's
    # (``lazy``) derives them on first read (a private ``_name`` absent from the instance dict: not computed)
    # and keeps share data in root_of/same_as
    _built = False

    def __init__(self, lazy: bool = False) -> None:
        # module paths
        self.m_parent: list[int] = []  # -1 for the root
        self.m_name: list[str] = []  # segment under the parent
        # slots
        self.s_attr: list[str] = []
        # the builder's compact form of s_owner/s_param: one run per non-empty ``_parameters`` (number
        # ``2 * path``) or ``_buffers`` (``2 * path + 1``) dict, in slot order, and its number of slots
        self.d_number: list[int] = []
        self.d_size: list[int] = []
        # sharing pairs between slots: (slot, slot, how)
        self.shares: list[tuple[int, int, str]] = []
        # input embedding
        self.ie_slots: list[int] = []  # slots inside the input embedding
        # what the model says about ties beyond its declarations (typed; plain data)
        self.model_roots: list[str] = []  # full paths of the outermost model roots (several: none is used)
        self.modules_to_save: list[CopyWrapper] = []
        self.deployed = Deployed()
        self.cut: dict[str, str] = {}  # full slot name -> the fully_shard call holding it (tiegraph.sharding)
        self.engine: dict[str, Any] = {}  # plain data other engines' marks give (tiegraph._engine_marks)
        # canonical names: either given whole (from a graph) or computed on demand by a namer
        self._m_canon: list[str | None] = []
        self._m_belongs: list[str | None] = []
        self._s_canon: list[str | None] = []
        # the builder's share data (slots only where they differ from "alone")
        self.same_as: dict[int, int] = {}  # slot -> first slot holding the same tensor object
        self.root_of: dict[int, int] = {}  # slot -> smallest slot of its tie group (grouped slots only)
        self.empty: set[int] = set()  # slots on a shared storage whose tensor reads no byte
        # slot -> (byte start, byte stop, strides in elements or None when contiguous) of the first slot of
        # every tensor object on a storage that several tensor objects read: with shape and dtype, what
        # tells an alias from a view (tiegraph._identity), kept at build like ``known``
        self.layouts: dict[int, tuple[int, int, tuple[int, ...] | None]] = {}
        # metadata read at build, for the slots on shared storages: a SlotMeta, or the raw
        # (torch.dtype, shape, torch.device, requires_grad) the builder read in bulk (named on first use)
        self.known: dict[int, SlotMeta | tuple[Any, tuple[int, ...], Any, bool]] = {}
        if lazy:
            self._built = True
        else:
            self.__dict__.update({"_" + name: [] for name in _LAZY_FIELDS})

    # ------------------------------------------------------------------ derived fields
    def path_of(self, i: int) -> str:
        """Full path of module path ``i`` (without naming every module)."""
        known: list[str] | None = self.__dict__.get("_m_path")
        if known is not None:
            return known[i]
        parts = []
        parent, name = self.m_parent, self.m_name
        while parent[i] >= 0:
            parts.append(name[i])
            i = parent[i]
        return ".".join(reversed(parts))

    def slot_name_of(self, s: int) -> str:
        """Full name of slot ``s`` (without naming every slot)."""
        known: list[str] | None = self.__dict__.get("_s_name")
        if known is not None:
            return known[s]
        owner = self.path_of(self.owner_of(s))
        return f"{owner}.{self.s_attr[s]}" if owner else self.s_attr[s]

    @property
    def num_slots(self) -> int:
        """How many slots."""
        return len(self.s_attr)

    def _fill_objects(self) -> None:
        self.m_object = list(range(len(self.m_parent)))

    def _fill_slots(self) -> None:
        numbers, sizes = self.d_number, self.d_size
        self.s_owner = list(chain.from_iterable(map(repeat, map(rshift, numbers, repeat(1)), sizes)))
        flags = map(_IS_PARAM.__getitem__, map(and_, numbers, repeat(1)))
        self.s_param = list(chain.from_iterable(map(repeat, flags, sizes)))

    def object_of(self, i: int) -> int:
        """Distinct module object number of module path ``i`` (without numbering every path)."""
        known = self.__dict__.get("_m_object")
        return i if known is None and self.objects_distinct else self.m_object[i]

    def under_alias_of_input_embedding(self, i: int) -> bool:
        """True when module path ``i`` is, or lies under, another path of the input embedding's module.

        Such a path (PEFT prompt learning's ``word_embeddings``) is the input embedding, not a tied target.
        """
        if self.ie_module < 0 or (self.__dict__.get("_m_object") is None and self.objects_distinct):
            return False
        embedding = self.object_of(self.ie_module)
        parent = self.m_parent
        while i >= 0:
            if i != self.ie_module and self.object_of(i) == embedding:
                return True
            i = parent[i]
        return False

    def first_path_of(self, i: int) -> int:
        """The first module path of the module object at path ``i`` (its primary path)."""
        if self.__dict__.get("_m_object") is None and self.objects_distinct:
            return i
        objects = self.m_object
        return objects.index(objects[i])

    def run_starts(self) -> list[int]:
        """The first slot of every run of ``d_number`` (and the slot count last), summed once."""
        starts = self._d_start
        if starts is None:
            starts = self._d_start = list(accumulate(self.d_size, initial=0))
        return starts

    def owner_of(self, s: int) -> int:
        """Module path owning slot ``s`` (without expanding every slot's owner)."""
        known: list[int] | None = self.__dict__.get("_s_owner")
        if known is not None:
            return known[s]
        return self.d_number[bisect_right(self.run_starts(), s) - 1] >> 1

    def slot_start(self, i: int) -> int:
        """The first slot owned by module path ``i`` or a later one (the slot count if none)."""
        known = self.__dict__.get("_s_owner")
        if known is not None:
            return bisect_left(known, i)
        run = bisect_left(self.d_number, 2 * i)
        if self._d_start is None and run < 4096:  # (near the top, as an input embedding is: no running sums)
            return sum(self.d_size[:run])
        return self.run_starts()[run]

    def meta_of(self, s: int) -> SlotMeta:
        """dtype, shape, device and requires_grad of slot ``s``'s tensor.

        Slots on a storage read by two or more slots (every tie group member) were read at build, so a
        graph answers for them even after the model changed; the others are read on first use.
        """
        first = self.same_as.get(s, s)
        known = self.known.get(first)
        if known is not None:
            if type(known) is not SlotMeta:
                dtype, shape, device, grad = known
                known = self.known[first] = SlotMeta(
                    str(dtype).removeprefix("torch."), shape, str(device), grad
                )
            return known
        t = self.s_tensor[s]
        return SlotMeta(self.t_dtype[t], self.t_shape[t], self.t_device[t], self.t_grad[t])

    def _fill_names(self) -> None:
        parent, name = self.m_parent, self.m_name
        paths: list[str] = []
        add = paths.append
        for i, p in enumerate(parent):
            if p < 0:
                add("")
            else:
                above = paths[p]
                add(f"{above}.{name[i]}" if above else name[i])
        self.m_path = paths
        types = self.m_type or []
        self.m_cls = [kind.__name__ for kind in types]
        owners = self.s_owner
        self.s_name = [f"{paths[o]}.{a}" if paths[o] else a for o, a in zip(owners, self.s_attr, strict=True)]

    def _fill_numbers(self) -> None:
        count = len(self.s_attr)
        first = list(range(count))
        for s, f in self.same_as.items():
            first[s] = f
        # tensor number of a slot: how many first slots come before (and at) its first slot, minus one
        running = list(accumulate(map(eq, first, range(count))))
        s_tensor = list(map(sub, map(running.__getitem__, first), repeat(1)))
        s_root = self.s_root
        self.s_tensor = s_tensor
        t_root = [0] * (running[-1] if running else 0)
        for s in range(count):  # the first slot of every tensor names its component
            if first[s] == s:
                t_root[s_tensor[s]] = s_tensor[s_root[s]]
        self.t_root = t_root

    def _fill_roots(self) -> None:
        s_root = list(range(len(self.s_attr)))
        for s, root in self.root_of.items():
            s_root[s] = root
        self.s_root = s_root

    def groups(self) -> dict[int, list[int]]:
        """The tie-group map: slots per share component with two or more slots, keyed by the component.

        The one order every reader sees: groups in order of their first slot, each group's slots in slot
        order (a built index's component is its smallest slot, so ordering by it is the same order).
        Computed once; :class:`tiegraph._view.GraphView` and the queries read it.
        """
        if self._groups is None:
            members: dict[int, list[int]] = {}
            if self._built:
                for s, root in self.root_of.items():
                    members.setdefault(root, []).append(s)
                members = {root: sorted(members[root]) for root in sorted(members)}
            else:
                for s, root in enumerate(self.s_root):
                    members.setdefault(root, []).append(s)
                members = {root: slots for root, slots in members.items() if len(slots) > 1}
            self._groups = members
        return self._groups

    def root_of_slot(self, s: int) -> int:
        """The share component of slot ``s`` (its group's root, or its own number when alone)."""
        if self._built:
            return self.root_of.get(s, s)
        return self.s_root[s]

    def _fill_meta(self) -> None:
        if self.meta_filler is None:
            for name in _LAZY_META:
                setattr(self, name, [])
            return
        self.meta_filler(self)

    def _fill_declared(self) -> None:
        self.declared = []
        if self.declared_filler is not None:
            filler, self.declared_filler = self.declared_filler, None
            filler(self)

    def fill_slot_roots(self) -> None:
        """Set ``s_root`` from ``t_root``: the slot's tensor's component, or its own for an empty tensor."""
        t_root, t_stop, t_shape = self.t_root, self.t_stop, self.t_shape
        offset = len(t_root)
        self.s_root = [  # (an unknown shape, None: the build's share relation stands)
            t_root[t] if t_stop[t] or 0 not in (t_shape[t] or (1,)) else offset + s
            for s, t in enumerate(self.s_tensor)
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
            for i in range(len(self.m_parent)):
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
            for s in range(len(self.s_attr)):
                self.slot_canon_of(s)
            self._s_named = True
        return self._s_canon  # type: ignore[return-value]

    def name_with(
        self, namer: Callable[[Index, int], tuple[str, str]], slot_namer: Callable[[Index, int], str]
    ) -> None:
        """Name modules and slots on demand through ``namer`` (canonical, belongs) and ``slot_namer``."""
        self._m_canon = [None] * len(self.m_parent)
        self._m_belongs = [None] * len(self.m_parent)
        self._s_canon = [None] * self.num_slots
        self.namer, self.slot_namer = namer, slot_namer

    def set_canonical(self, m_canon: list[str], m_belongs: list[str], s_canon: list[str]) -> None:
        """Give every canonical name at once (used when rebuilding from a graph)."""
        self._m_canon, self._m_belongs, self._s_canon = list(m_canon), list(m_belongs), list(s_canon)
        self.namer = self.slot_namer = None

    # ------------------------------------------------------------------ subtrees
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
        return range(self.slot_start(i), self.slot_start(self.subtree_end(i)))
