"""The share relation: storage ids, and the overlap sweep over exact byte extents.

Two tensors share when some byte of storage belongs to both. A tensor's bytes are
``(storage_offset + sum(i_k * stride_k)) * itemsize + [0, itemsize)`` over its index box (read from
metadata by :func:`tiegraph._extent.extents`, the one rule for every kind of tensor). Dense tensors
(contiguous, transposed, any permutation without gaps) cover their whole extent, so two dense tensors on one
storage share exactly when their extents overlap. Otherwise an exact bounded integer search decides (the same
problem ``numpy.shares_memory`` solves). Only tensor metadata is read, never data.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Container, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Generic, NamedTuple, TypeVar

import torch

from ._caller import outside_stacklevel
from ._expand import Expanded, expand
from ._extent import Extent
from ._tensors import leaves

__all__ = [
    "PLAIN_TYPES",
    "Components",
    "FlatViews",
    "flat_param_views",
    "share_components",
    "shares",
    "slow_components",
    "slow_parts",
]

#: Tensor types the builder handles in bulk (C-level passes); other types go to :func:`slow_components`.
PLAIN_TYPES = frozenset((torch.Tensor, torch.nn.Parameter))

Share = tuple[int, int, str]

K = TypeVar("K", int, str)


class Components(Generic[K]):
    """Union-find over ordered keys: each component's root is its smallest member (the one union-find).

    Only merged keys are stored (a key never merged is its own root and costs nothing); ``find`` halves
    the path it walks.

    Examples
    --------
    >>> parts = Components[int]()
    >>> parts.union(4, 2), parts.union(2, 7), parts.union(7, 4)
    (True, True, False)
    >>> [parts.find(k) for k in (7, 4, 2, 5)]
    [2, 2, 2, 5]
    """

    __slots__ = ("parent",)

    def __init__(self) -> None:
        self.parent: dict[K, K] = {}

    def find(self, key: K) -> K:
        """The root (smallest member) of ``key``'s component."""
        parent = self.parent
        up = parent.get(key, key)
        while up != key:
            above = parent.get(up, up)
            if above != up:
                parent[key] = above
            key, up = up, above
        return key

    def union(self, a: K, b: K) -> bool:
        """Join the components of ``a`` and ``b``; False when they were one already."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return False
        if rb < ra:
            ra, rb = rb, ra
        self.parent[rb] = ra
        return True


def slow_components(tensor: torch.Tensor) -> list[torch.Tensor] | None:
    """The plain tensors holding the bytes of a tensor the builder's bulk path does not handle.

    This is the rule of the builder's one slow path; the builder asks it for many tensors at once through
    :func:`slow_parts` (the same answers, read in bulk per class). The builder reads every slot's storage
    in C-level passes over chunks of slots; a chunk goes slot by slot only when its set of tensor types is
    not a subset of :data:`PLAIN_TYPES` or when ``untyped_storage()`` raises for one of its tensors (sparse,
    mkldnn and other non-strided layouts do). In that chunk a slot whose tensor is a plain type with a
    strided layout and a readable storage still takes the plain rule; every other slot's tensor comes
    here. A strided nested tensor (a plain type) comes here too when its storage is read by another slot
    (only then do its constituents' byte ranges decide anything).

    Notes
    -----
    The contract:

    - Return a list of *plain* tensors (strided, ``untyped_storage()`` readable) whose bytes the slot reads.
      The slot shares with another slot when a byte range of one of its components overlaps a byte range
      of the other's (or the other's own tensor); storage identity and byte extents of the components are
      computed exactly as for plain slots. A component that is another slot's tensor object shares with it.
    - Return ``None`` when the storage cannot be followed: the slot is recorded with unknown storage
      (compared by object identity only, never a guessed tie) and a ``RuntimeWarning`` names it.
    - Never raise, never read tensor data, never modify the tensor.
    - The slot keeps its own tensor for dtype/shape/device/requires_grad (read on demand, with the first
      component as fallback when the tensor itself cannot answer).

    The components are :func:`tiegraph._tensors.leaves`: wrapper subclasses through ``__tensor_flatten__``
    (recursively), DTensor, functional tensors, sparse and nested layouts, subclasses with ordinary storage.

    Examples
    --------
    >>> import torch
    >>> w = torch.zeros(3)
    >>> [c is w for c in slow_components(w)]
    [True]
    >>> [tuple(c.shape) for c in slow_components(torch.eye(2).to_sparse())]
    [(2, 2), (2,)]
    """
    found = leaves(tensor)
    return found.tensors if found.tensors and not found.unknown else None


def slow_parts(tensors: Sequence[torch.Tensor], labelled: Container[int] = ()) -> Expanded:
    """:func:`slow_components` of many tensors at once, with their storages and quantization labels.

    The builder calls this once per build with every slot tensor its bulk path did not take. The answer per
    tensor is :func:`slow_components`'s (``unknown`` lists the positions it answers None for; their
    components are left out) and :func:`tiegraph._quantization.quantization`'s (``labels``); columns are flat
    (``owners[i]`` is the position of the tensor component ``i`` belongs to, ascending) so that the builder
    counts storages in C-level passes. ``storages[i]`` is component ``i``'s ``untyped_storage()``, None when
    that raises (the component then reads nothing); ``labelled`` lists the positions whose label the
    builder has already (quantized layer classes: bitsandbytes, hqq). The work is decided per class
    (:func:`tiegraph._expand.expand`): torchao tensors are read in C-level passes, others one by one.

    Examples
    --------
    >>> import torch
    >>> w = torch.zeros(3)
    >>> found = slow_parts([torch.eye(2).to_sparse(), w])
    >>> found.owners, found.storages[2] is w.untyped_storage(), found.unknown
    ([0, 0, 1], True, [])
    """
    return expand(tensors, labelled)


class FlatViews(NamedTuple):
    """What FSDP1's ``FlatParameter`` containers and DeepSpeed ZeRO-3's placeholders hide of a parameter."""

    shapes: dict[int, torch.Size]  # id(parameter) -> its unsharded (logical) shape
    containers: set[int]  # id(FlatParameter): a container of parameters, never a tie of its own
    devices: Mapping[int, torch.device] = MappingProxyType({})  # id(ZeRO-3 parameter) -> its partition's


NO_FLAT_VIEWS = FlatViews({}, set())


def flat_param_views(modules: Iterable[object]) -> FlatViews:
    """The ``FlatParameter`` of every FSDP1 unit among ``modules``, and the shapes of the parameters in it.

    FSDP1 flattens the parameters of a unit into one ``FlatParameter``. With ``use_orig_params=True`` every
    original parameter is a 1-D view of this rank's slice of it, empty on the ranks that do not hold its
    bytes; the logical shape lives in the FlatParameter's metadata. Shared (tied) parameters are stored once
    and stay one object at every name. Only metadata is read; FSDP1 not imported means no FSDP1 module.
    """
    fsdp = sys.modules.get("torch.distributed.fsdp.fully_sharded_data_parallel")
    cls = getattr(fsdp, "FullyShardedDataParallel", None)
    if not isinstance(cls, type):
        return NO_FLAT_VIEWS
    views = FlatViews({}, set())
    for module in modules:
        if not isinstance(module, cls):
            continue
        flat = getattr(getattr(module, "_handle", None), "flat_param", None)
        if not isinstance(flat, torch.Tensor):
            continue
        views.containers.add(id(flat))
        params = getattr(flat, "_params", None) or ()  # None unless use_orig_params=True
        shapes = list(getattr(flat, "_shapes", ()))
        infos = list(getattr(flat, "_param_infos", ()))
        for param, shape in zip(params, shapes, strict=False):
            views.shapes[id(param)] = shape
        for param, info in zip(
            getattr(flat, "_shared_params", None) or (),
            getattr(flat, "_shared_param_infos", ()),
            strict=False,
        ):
            for (name, owner, _), shape in zip(infos, shapes, strict=False):
                if owner is info.prim_module and name == info.prim_param_name:
                    views.shapes.setdefault(id(param), shape)
    return views


class _Undecided(Exception):
    pass


_BUDGET = 200_000


def _terms(extent: Extent) -> list[tuple[int, int]]:
    """(byte coefficient, count) per dimension of a strided extent; a dense one is one flat run."""
    if extent.dense:
        count = (extent.stop - extent.start) // extent.itemsize
        return [(extent.itemsize, count)] if count > 1 else []
    return [
        (stride * extent.itemsize, size)
        for size, stride in zip(extent.sizes, extent.strides, strict=True)
        if size > 1 and stride != 0
    ]


def _merge(terms: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Fold terms whose sums cover a contiguous run of multiples: (c, n) + (m*c, k) with m <= n."""
    terms = sorted(terms)
    changed = True
    while changed:
        changed = False
        for i in range(len(terms)):
            c1, n1 = terms[i]
            for j in range(i + 1, len(terms)):
                c2, n2 = terms[j]
                if c2 % c1 == 0 and c2 // c1 <= n1:
                    terms[i] = (c1, n1 + (c2 // c1) * (n2 - 1))
                    del terms[j]
                    terms.sort()
                    changed = True
                    break
            if changed:
                break
    return terms


def _reachable(terms: list[tuple[int, int]], low: int, high: int) -> bool:
    """Is there x_t in [0, n_t) with low <= sum(c_t * x_t) <= high? Exact, with a work budget."""
    terms = sorted(terms, reverse=True)
    rest = [0] * (len(terms) + 1)
    for i in range(len(terms) - 1, -1, -1):
        rest[i] = rest[i + 1] + terms[i][0] * (terms[i][1] - 1)
    budget = [_BUDGET]

    def search(i: int, lo: int, hi: int) -> bool:
        if hi < 0 or lo > rest[i]:
            return False
        if i == len(terms):
            return lo <= 0 <= hi
        c, n = terms[i]
        first = max(0, -((rest[i + 1] - lo) // c))  # ceil((lo - rest[i+1]) / c)
        last = min(n - 1, hi // c)
        if i == len(terms) - 1:
            return first <= last
        for x in range(first, last + 1):
            budget[0] -= 1
            if budget[0] < 0:
                raise _Undecided
            if search(i + 1, lo - c * x, hi - c * x):
                return True
        return False

    return search(0, low, high)


def shares(a: Extent, b: Extent) -> bool:
    """Whether two extents on one storage have a byte in common (exact).

    Examples
    --------
    >>> import torch
    >>> from tiegraph._extent import strided_extent
    >>> x = torch.zeros(10)
    >>> def ext(t):
    ...     return strided_extent(t, t.storage_offset() * t.element_size(), t.element_size())
    >>> shares(ext(x[0::2]), ext(x[1::2])), shares(ext(x[:4]), ext(x[4:])), shares(ext(x), ext(x[3:5]))
    (False, False, True)
    """
    if a.stop <= b.start or b.stop <= a.start:
        return False
    if a.dense and b.dense:
        return True
    # a_byte - b_byte in [-(a.itemsize - 1), b.itemsize - 1], with a_byte = a.offset + sum(ca * i), ...
    terms = _terms(a)
    shift = 0
    for c, n in _terms(b):
        terms.append((c, n))
        shift += c * (n - 1)
    low = -(a.itemsize - 1) - (a.offset - b.offset) + shift
    high = (b.itemsize - 1) - (a.offset - b.offset) + shift
    try:
        return _reachable(_merge(terms), low, high)
    except _Undecided:
        warnings.warn(
            "tiegraph could not decide exactly whether two strided views overlap within its work budget; "
            "counting them as shared",
            RuntimeWarning,
            stacklevel=outside_stacklevel(),
        )
        return True


def _dense_how(a_start: int, a_stop: int, b_start: int, b_stop: int) -> str:
    """:func:`_how` for two dense extents: ``view`` when one range contains the other, else ``overlap``."""
    inside = (a_start <= b_start and b_stop <= a_stop) or (b_start <= a_start and a_stop <= b_stop)
    return "view" if inside else "overlap"


def _how(a: Extent, b: Extent) -> str:
    """``view`` when one tensor's bytes contain the other's, else ``overlap``."""
    if a.dense and b.dense:
        return _dense_how(a.start, a.stop, b.start, b.stop)
    if a.start == b.start and a.stop == b.stop and _terms(a) == _terms(b):
        return "view"
    if (a.dense and a.start <= b.start and b.stop <= a.stop) or (
        b.dense and b.start <= a.start and a.stop <= b.stop
    ):
        return "view"
    return "overlap"


def share_components(
    count: int,
    buckets: dict[int, list[int]],
    starts: Sequence[int],
    stops: Sequence[int],
    strided: dict[int, Extent],
) -> tuple[list[int], list[Share]]:
    """Connected components of the share relation over distinct tensors.

    Parameters
    ----------
    count
        Number of distinct tensors.
    buckets
        Tensor numbers per storage (empty tensors left out).
    starts, stops
        Byte extent of every tensor within its storage.
    strided
        The full :class:`Extent` of every non-contiguous tensor; the others cover their extent densely.

    Returns
    -------
    roots, edges
        ``roots[i]`` is the smallest tensor number in tensor ``i``'s component; ``edges`` lists the sharing
        pairs found ``(i, j, how)`` with ``how`` in ``view``/``overlap`` (enough to connect every component).

    Notes
    -----
    Within a storage an interval sweep keeps every still-open extent (not just the last one, which is
    safetensors' bug), so ``A``, ``A[10:20]``, ``A[50:60]`` form one component. Cost is O(n log n) per
    storage plus the pairs whose extents overlap; a storage read by one tensor costs nothing.
    """
    parts = Components[int]()
    edges: list[Share] = []
    for members in buckets.values():
        if len(members) < 2:
            continue
        if len(members) == 2 and members[0] not in strided and members[1] not in strided:
            i, j = sorted(members)  # (two dense extents: the sweep's answer without building Extents)
            if starts[i] < stops[j] and starts[j] < stops[i]:
                pairs = [(i, j, _dense_how(starts[i], stops[i], starts[j], stops[j]))]
            else:
                continue
        else:
            pairs = list(_sweep(members, starts, stops, strided))
        for i, j, how in pairs:
            edges.append((i, j, how))
            parts.union(i, j)
    if not edges:  # nothing merged: every tensor is its own root (most models: ties are one object)
        return list(range(count)), edges
    return list(map(parts.find, range(count))), edges


def _extent(i: int, starts: Sequence[int], stops: Sequence[int], strided: dict[int, Extent]) -> Extent:
    found = strided.get(i)
    if found is not None:
        return found
    # a dense tensor covers every byte of its extent: model it as one run of 1-byte items
    return Extent(starts[i], stops[i], True, starts[i], (), (), 1)


def _sweep(
    members: list[int], starts: Sequence[int], stops: Sequence[int], strided: dict[int, Extent]
) -> Iterable[Share]:
    ordered = sorted(members, key=starts.__getitem__)
    active: list[int] = []
    for j in ordered:
        start = starts[j]
        active = [i for i in active if stops[i] > start]
        for i in active:
            a, b = _extent(i, starts, stops, strided), _extent(j, starts, stops, strided)
            if (a.dense and b.dense) or shares(a, b):
                yield (min(i, j), max(i, j), _how(a, b))
        active.append(j)
