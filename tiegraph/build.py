"""The one builder: walk the module tree once and record the index.

Data flows one way: module tree -> slots -> share relation -> index. The networkx graph and every query
are derived from the index (:mod:`tiegraph.graph`); nothing here reads tensor data or modifies the model.

Design: what a build does, and what it leaves for later
-------------------------------------------------------
The cost of a build is Python work per module and per slot, and on large models memory traffic (each pass
over 100k cold tensors costs milliseconds), not the C calls. So the builder does as little per-slot Python
as it can, lets C loops (``map``, ``itertools``, ``Counter``) do the rest, and touches each object while it
is in cache. The rooms:

1. **Walk modules only** (:func:`tiegraph._walk.walk`): a stack of ``iter(module._modules.items())``
   iterators, one Python iteration per module path, recording parent, segment name, module object and class,
   the non-empty ``_parameters``/``_buffers`` dicts (numbered ``2 * path`` and ``2 * path + 1``; most dicts
   are empty) and the modules carrying an accelerate ``_hf_hook`` or their own ``_tied_weights_keys``. No
   path strings are built. Module aliases are looked for with one ``set`` of the modules (numbered only when
   there are any).
2. **Slots in C-level passes over chunks** (:func:`tiegraph._walk.slots_of`): per
   :data:`~tiegraph._walk.CHUNK` dicts, sizes, names and values each in one pass; the chunk's set of types
   finds ``None`` entries (``bias=False``: dropped, their dicts' sizes lowered by a running count) and routes
   subclasses to the slow path. The storage keys are taken in the same chunk while its tensors are in cache
   (:class:`tiegraph._walk.Keys`). Owners and parameter flags are not expanded per slot: the index keeps one
   run per dict and expands them on first read (``owner_of``/``slot_start`` answer by bisection meanwhile).
   Served tensors replace slots of hooked modules in one place, :func:`tiegraph._served.annotate` (only
   when such a module or a quantized layer class is present).
3. **The storage object is the key**: in torch 2.13 ``untyped_storage()`` returns one Python object per
   storage (views, ``detach``, ``set_``, ``Parameter(t)``, dtype views; CPU and meta), checked once at import
   (``STORAGE_IDENTITY``, else the key is ``_cdata``). Tensors that are not plain strided go to the slow
   path (:func:`tiegraph.storage.slow_parts`, in bulk per class). A ``Counter`` finds storages read twice or
   more. Separate storage objects whose address ranges overlap on one device (``torch.from_numpy`` views of
   one array, ``frombuffer`` twice over one buffer, ``set_`` onto a slice of a storage) are merged, looked
   for only when some tensor has a non-zero data pointer (a tensor's pointer is its storage's plus its
   offset: all zero on meta) and some storage was not allocated by torch itself (not resizable).
4. **Metadata only where it decides something** (:func:`_share`): only the slots on a storage read twice
   or more are candidates (6,120 of 99,962 on the 100k tree; 2 on 70B). Plain candidates (the common case)
   take :func:`_plain_groups`: same-object slots, then byte extents only when a storage holds two distinct
   tensors, and the groups read off :func:`~tiegraph.storage.share_components`' components; slow-path
   components, FSDP1 flat views and nested tensors take the general :func:`_groups`. The candidates'
   dtype/shape/device/requires_grad are read at build (so a graph answers for its tie groups after the model
   changed), and every slot's dtype, requires_grad and storage witness are captured in three C-level passes;
   shape, device and extents are read on first use by re-walking the model through a weak reference, slot
   by slot where the witness still holds, unknown elsewhere (:mod:`tiegraph._metadata`). Declarations are
   captured raw and expanded on first use; the input embedding is found without a pass over every path
   (:mod:`tiegraph._embedding`).

What this costs against accelerate's ``find_tied_parameters`` and a bare ``named_parameters`` walk, and
against the read floor (the reads an exact answer cannot skip), is measured by ``benchmarks/bench.py``; the
latest run is in ``benchmarks/RESULTS.md``.

Alternatives measured and dropped: eager metadata at build (~1.5x the bare walk on 100k),
``named_modules()`` as the walk (twice the iterator stack), per-slot owner and flag lists (~15 ms of a 170 ms
build on 100k), asking every storage for its data pointer on meta (~13 ms), a Python union-find over the
candidate slots (~25 ms), ``torch._C._storage_id`` as the key (slower than ``untyped_storage``), and
``data_ptr()``, ``_base`` or ``id(tensor)`` as storage keys (offsets, meta zeros, ``detach``/``from_numpy``
aliasing make them wrong).
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Iterable
from itertools import compress, count, repeat
from operator import add, attrgetter, is_not, lt, mul, ne, not_
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import torch
from torch import nn

from ._caller import outside_stacklevel
from ._compare import verdicts
from ._dispatch import record as record_pointer_aliases
from ._embedding import InputEmbedding, find_input_embedding
from ._index import Index
from ._memory import Extents, merge_overlapping, read_once, rebase
from ._metadata import byte_extent, capture, parts_of, shape_of, slot_meta, watch
from ._sources import as_module
from ._tensors import leaves
from ._walk import (
    STORAGE_IDENTITY,
    Keys,
    Tree,
    aliased,
    declaring,
    flat_views,
    hooked_paths,
    instances,
    object_numbers,
    serve_hooked,
    slots_of,
    storages,
    walk,
)
from .declared import capture_declarations
from .graph import TieGraph
from .naming import Namer
from .sharding.after import record_cut
from .storage import (
    NO_FLAT_VIEWS,
    PLAIN_TYPES,
    Components,
    Extent,
    FlatViews,
    share_components,
    slow_components,
    slow_parts,
    strided_extent,
)

if TYPE_CHECKING:
    from torch.export import ExportedProgram

__all__ = ["InputEmbedding", "build_graph"]

_DATA_PTR = torch.UntypedStorage.data_ptr
_DTYPE, _DEVICE, _SHAPE = attrgetter("dtype"), attrgetter("device"), attrgetter("shape")
_GRAD, _NBYTES = attrgetter("requires_grad"), attrgetter("nbytes")
_NESTED, _TENSOR_OF = attrgetter("is_nested"), attrgetter("tensor")
_OFFSET, _ITEMSIZE = torch.Tensor.storage_offset, torch.Tensor.element_size
_CONTIGUOUS = torch.Tensor.is_contiguous


def build_graph(
    model: nn.Module | ExportedProgram, *, input_embedding: InputEmbedding = None, check_values: bool = False
) -> TieGraph:
    """Build the parameter-sharing graph of a model, wrapped or not.

    Parameters
    ----------
    model
        Any ``nn.Module``: a transformers model, a PEFT model, ``torch.compile``/DDP/FSDP-wrapped models, a
        TorchScript module (``torch.jit.script``/``trace``), or a user's own module tree. Or a
        ``torch.export.ExportedProgram``: its parameters and buffers under their original names, as
        ``ep.module()`` holds them.
    input_embedding
        The input embedding, if the model's own ``get_input_embeddings()`` should not be asked: a module of
        the model, its full or canonical path, or (for models whose embedding is a bare tensor) a tensor.
        Needed when the model holds several model roots side by side (a DPO policy and reference).
    check_values
        After the build, compare the values of every declared tie that does not share memory (reading only
        those tensors) and give each :class:`DeclaredTie` its ``values`` verdict (see
        :mod:`tiegraph.values`). Off by default: the build itself never reads tensor data.

    Returns
    -------
    TieGraph
        The queries (:meth:`TieGraph.tied_to_input_embedding`, :meth:`TieGraph.tie_groups`, ...) and the
        networkx graph (:attr:`TieGraph.graph`).

    Raises
    ------
    TypeError
        If ``model`` is neither an ``nn.Module`` nor an ``ExportedProgram``.
    PathNotFoundError
        If ``input_embedding`` names no module of the model.
    CycleError
        If a module is registered under one of its own descendants.

    Notes
    -----
    One pass over the module tree, O(modules + slots) mostly C-level work plus a sort per shared storage; no
    tensor data is read. The graph is a record of the model at build: dtype and requires_grad of every slot
    are captured then; shape, device and byte extents of slots outside tie groups are read on first use
    (exports, the audit) from slots that still hold what they held at build, and are unknown for the others
    (see the concepts page, "A graph is a record").

    Examples
    --------
    >>> import torch
    >>> import tiegraph
    >>> class Tiny(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.embed = torch.nn.Embedding(10, 4)
    ...         self.head = torch.nn.Linear(4, 10, bias=False)
    ...         self.head.weight = self.embed.weight
    >>> tg = tiegraph.build_graph(Tiny(), input_embedding="embed")
    >>> tg.tied_to_input_embedding()
    ['head']
    >>> tg.tie_groups()
    [['embed.weight', 'head.weight']]
    """
    model = as_module(model, "build_graph")
    index, tree, tensors, namer = shared_slots(model, record=True)
    types, modules, kinds = tree.types, tree.modules, set(tree.types)
    record_cut(index, modules, tensors, kinds)  # which FSDP2 call holds each slot (a class check when none)
    find_input_embedding(index, modules, tensors, namer, input_embedding)
    capture_declarations(index, modules, declaring(tree, types, kinds), namer.root, instances(types))
    watch(index, model)
    if check_values:  # the one step that reads tensor data, and only when asked
        index.declared = verdicts(index, model)
    return TieGraph(index)


class Shared(NamedTuple):
    """What :func:`shared_slots` returns: the index with its share relation, and what the walk read."""

    idx: Index
    tree: Tree
    tensors: list[Any]  # the tensor of every slot (a served tensor where a hook serves one)
    namer: Namer


def shared_slots(model: nn.Module, *, serve: bool = True, record: bool = False) -> Shared:
    """The first half of a build: walk, slots and the share relation, no input embedding or declarations.

    :func:`build_graph` continues from here; :mod:`tiegraph.compat` stops here (its drop-ins need only the
    tie groups). With ``serve=False`` the slots of modules carrying accelerate hooks keep the tensors the
    module tree holds (what accelerate's own helpers see) instead of the tensors the hooks serve. With
    ``record`` (a graph that outlives this call) every slot's dtype, requires_grad and storage witness are
    captured (:func:`tiegraph._metadata.capture`).
    """
    tree = walk(model)
    index = Index(lazy=True)
    index.m_parent, index.m_name = tree.parents, tree.names
    index.m_type = types = tree.types
    if aliased(tree.modules):
        index.objects_distinct = False
        index.m_object = object_numbers(tree.modules)
    kinds = set(types)
    hooked = hooked_paths(tree) if serve else []
    slots = slots_of(tree)
    index.d_number, index.d_size, index.s_attr = tree.numbers, slots.sizes, slots.attrs
    found = slots.keys
    if serve_hooked(index, tree.modules, slots.tensors, hooked, kinds, record=True) or found is None:
        found = storages(slots.tensors)
    namer = Namer(index)
    namer.attach()
    flat = flat_views(tree.modules, kinds)
    with torch._C.DisableTorchFunctionSubclass():  # subclass metadata reads skip __torch_function__
        _share(index, slots.tensors, flat, found)
        if record:  # what the graph must still answer for after the model changes
            capture(index, slots.tensors, found, hooked, flat)
    if record and index.same_as:  # (one object under several names: what accelerate's hooks key ties by)
        record_pointer_aliases(index, tree.modules, slots.tensors)
    return Shared(index, tree, slots.tensors, namer)


# ------------------------------------------------------------------------------------------------ share


class _Piece(NamedTuple):
    slot: int
    tensor: torch.Tensor  # a plain tensor whose bytes the slot reads
    storage: Any  # its storage key (merged)


def _share(index: Index, tensors: list[Any], flat: FlatViews, stored: Keys) -> None:
    """Shares and tie groups: only slots on a storage read twice or more (or on the slow path) are looked at.

    ``flat`` (FSDP1): a parameter viewing into a ``FlatParameter`` keeps its unsharded shape, so its slice
    being empty on this rank does not make it share nothing; the FlatParameter itself holds every parameter
    of its unit and is left out of the share relation (it would merge them all into one group).
    """
    if flat.containers:
        _flat_warning(index, tensors, flat)
    keys, slow = stored.keys, stored.slow
    counts = Counter(keys)
    counts.pop(None, None)
    # the slow path's slots: their components (slot, tensor, storage key) as flat columns
    part_slots: list[int] = []
    part_tensors: list[torch.Tensor] = []
    part_keys: list[Any] = []
    unknown: list[int] = []
    apart = False  # no component storage can be read twice (nothing for merge_overlapping)
    if slow:
        labels = index.deployed.slot_quantization
        labelled = set(compress(count(), map(labels.__contains__, slow))) if labels else ()
        found = slow_parts(list(map(tensors.__getitem__, slow)), labelled)
        named = cast(
            "Iterable[tuple[int, str]]", compress(zip(slow, found.labels, strict=True), found.labels)
        )
        if labels:  # (labels of quantized layer classes, recorded first, stand)
            for s, label in named:
                labels.setdefault(s, label)
        else:
            labels.update(named)
        unknown = list(map(slow.__getitem__, found.unknown))
        read = found.read
        apart = bool(read) and read_once(read, counts)
        if read and not apart:
            part_slots = list(map(slow.__getitem__, found.owners))
            part_tensors, part_keys = found.tensors, found.storages
            readable = list(map(is_not, part_keys, repeat(None)))
            if not all(readable):  # a component whose storage cannot be read reads nothing
                part_slots = list(compress(part_slots, readable))
                part_tensors = list(compress(part_tensors, readable))
                part_keys = list(compress(part_keys, readable))
            if not STORAGE_IDENTITY:
                part_keys = [storage._cdata for storage in part_keys]
            counts.update(part_keys)
    if unknown:
        _unknown_warning(index, tensors, unknown)
    merged = merge_overlapping(counts) if not apart and _on_real_memory(stored, part_keys) else {}
    if merged:
        keys = list(map(merged.get, keys, keys))
        part_keys = list(map(merged.get, part_keys, part_keys))
    repeated = set(compress(counts, map(lt, repeat(1), counts.values())))
    plain = list(compress(range(len(keys)), map(repeated.__contains__, keys)))
    if not (part_keys or unknown or flat.containers or flat.shapes):
        chosen = list(map(tensors.__getitem__, plain))
        if not any(map(_NESTED, chosen)):  # (the common case: plain strided tensors only)
            if plain:
                _plain_groups(index, keys, plain, chosen, bool(merged))
            return
    pieces = [_Piece(s, tensors[s], keys[s]) for s in plain]
    if part_keys:
        chosen = list(map(repeated.__contains__, part_keys))
        if any(chosen):
            pieces.extend(
                map(
                    _Piece,
                    compress(part_slots, chosen),
                    compress(part_tensors, chosen),
                    compress(part_keys, chosen),
                )
            )
    if any(map(_NESTED, map(_TENSOR_OF, pieces))):  # strided nested: its constituents' byte ranges decide
        pieces = [q for p in pieces for q in _unnest(p)]
    # a slow slot whose components read no repeated storage shares with nothing (one object under two
    # names counts its components twice); only unknown ones are compared by identity
    candidates = sorted({p.slot for p in pieces}.union(unknown))
    if not candidates:
        return
    _groups(index, tensors, candidates, pieces, flat, bool(merged))


def _extents(chosen: list[torch.Tensor], homes: list[Any] | None = None) -> Extents:
    """Byte extents (start, stop) of plain tensors in bulk, and the full Extent of the non-contiguous ones.

    ``homes``: each tensor's storage key after :func:`~tiegraph._memory.merge_overlapping` merged some
    (else None); the extents of tensors whose storage was merged into one at a lower pointer are made
    relative to that one.
    """
    found = _bulk_extents(chosen)
    if homes is not None:
        rebase(chosen, homes, found)
    return found


def _layouts(
    index: Index,
    slots: list[int],
    starts: list[int],
    stops: list[int],
    strided: dict[int, Extent],
    own: list[bool] | None = None,
) -> None:
    """Record each tensor object's bytes and strides (``own``: the piece is the slot's own tensor)."""
    for n, slot in enumerate(slots):
        if own is None or own[n]:
            extent = strided.get(n)
            index.layouts[slot] = (starts[n], stops[n], None if extent is None else extent.strides)


def _bulk_extents(chosen: list[torch.Tensor]) -> Extents:
    try:
        itemsizes = list(map(_ITEMSIZE, chosen))
        starts = list(map(mul, map(_OFFSET, chosen), itemsizes))
        nbytes = list(map(_NBYTES, chosen))
        contiguous = list(map(_CONTIGUOUS, chosen))
    except (RuntimeError, NotImplementedError, TypeError, AttributeError):
        rows = list(map(byte_extent, chosen))
        return [r[0] for r in rows], [r[1] for r in rows], {n: r[2] for n, r in enumerate(rows) if r[2]}
    stops = list(map(add, starts, nbytes))
    strided: dict[int, Extent] = {}
    for n in compress(range(len(chosen)), map(not_, contiguous)):
        if nbytes[n]:
            extent = strided[n] = strided_extent(chosen[n], starts[n], itemsizes[n])
            stops[n] = extent.stop
    for n in compress(range(len(chosen)), map(not_, nbytes)):
        starts[n] = stops[n] = 0
    return starts, stops, strided


def _unnest(piece: _Piece) -> list[_Piece]:
    if not piece.tensor.is_nested:
        return [piece]
    found = slow_components(piece.tensor) or []
    return [_Piece(piece.slot, c, piece.storage) for c in found]


def _unknown_warning(index: Index, tensors: list[Any], unknown: list[int]) -> None:
    described = []
    for s in unknown:
        reason = leaves(tensors[s]).unknown or "it holds no tensor"
        described.append(f"{index.slot_name_of(s)} ({type(tensors[s]).__name__}: {reason})")
    warnings.warn(
        f"storage unknown for {', '.join(described)}; ties through these slots are not seen (only the same "
        "object under two names counts)",
        RuntimeWarning,
        stacklevel=outside_stacklevel(),
    )


def _on_real_memory(found: Keys, components: list[Any]) -> bool:
    """Whether any storage can have a data pointer (else, on meta, storages never overlap).

    The plain tensors were asked while their keys were taken (:class:`Keys`: asking a tensor costs a third
    of asking its storage on meta, and stops at the first one on real memory); here the slow path's
    components are asked.
    """
    if not STORAGE_IDENTITY:
        return False
    if found.real:
        return True
    try:
        return any(map(_DATA_PTR, components))
    except (RuntimeError, NotImplementedError, TypeError):
        return True


def _groups(
    index: Index,
    tensors: list[Any],
    candidates: list[int],
    pieces: list[_Piece],
    flat: FlatViews,
    merged: bool = False,
) -> None:
    """Union the candidate slots by object identity and byte overlap; record shares and tie groups.

    Metadata and byte extents of the candidates are read in C-level passes (``map`` over unbound tensor
    methods); a pass that raises (a tensor that cannot answer) is redone slot by slot.
    """
    same_as = index.same_as
    empty = index.empty
    _, distinct, held = _same_objects(index, candidates, list(map(tensors.__getitem__, candidates)))
    _known(index, held, distinct, flat)
    joined = Components[int]()
    find, union = joined.find, joined.union
    shares = index.shares
    for s, f in same_as.items():
        if f not in empty:
            shares.append((f, s, "same"))
            union(f, s)
        else:
            empty.add(s)
    # distinct piece tensors, their extents, and buckets per storage
    number: dict[int, int] = {}
    owner: list[int] = []
    parts: list[torch.Tensor] = []
    homes: list[Any] = []
    for piece in pieces:
        key = id(piece.tensor)
        n = number.get(key)
        if n is None:
            number[key] = len(owner)
            owner.append(piece.slot)
            parts.append(piece.tensor)
            homes.append(piece.storage)
        elif (
            tensors[piece.slot] is not piece.tensor  # (the same object: the "same" rule decided)
            and find(owner[n]) != find(piece.slot)
            and piece.slot not in empty
            and owner[n] not in empty
        ):  # a component that is another slot's tensor object
            shares.append((min(owner[n], piece.slot), max(owner[n], piece.slot), "view"))
            union(owner[n], piece.slot)
    starts, stops, strided = _extents(parts, homes if merged else None)
    _layouts(
        index, owner, starts, stops, strided, [parts[n] is tensors[slot] for n, slot in enumerate(owner)]
    )
    buckets: dict[Any, list[int]] = {}
    containers = flat.containers
    for n, (stop, home) in enumerate(zip(stops, homes, strict=True)):
        if stop and (not containers or id(parts[n]) not in containers):
            buckets.setdefault(home, []).append(n)
    _, edges = share_components(len(owner), buckets, starts, stops, strided)
    for i, j, how in edges:
        a, b = owner[i], owner[j]
        if a != b:
            shares.append((min(a, b), max(a, b), how))
            union(a, b)
    members: dict[int, list[int]] = {}
    for s in candidates:
        members.setdefault(find(s), []).append(s)
    root_of = index.root_of
    for root, group in members.items():
        if len(group) > 1:
            root_of.update(zip(group, repeat(root)))


def _same_objects(
    index: Index, candidates: list[int], chosen: list[Any]
) -> tuple[list[int], list[int], list[Any]]:
    """Record in ``index.same_as`` the slots holding a tensor object an earlier slot holds.

    Returns every candidate's first slot with its object, and the distinct first slots with their tensors.
    """
    ids = list(map(id, chosen))
    first_of = dict(zip(reversed(ids), reversed(candidates), strict=True))  # first slot per tensor object
    firsts = list(map(first_of.__getitem__, ids))
    repeats = list(map(ne, firsts, candidates))
    if not any(repeats):
        return firsts, candidates, chosen
    index.same_as.update(compress(zip(candidates, firsts, strict=True), repeats))
    return firsts, list(compress(candidates, map(not_, repeats))), list(compress(chosen, map(not_, repeats)))


def _plain_groups(
    index: Index, keys: list[Any], candidates: list[int], chosen: list[torch.Tensor], merged: bool = False
) -> None:
    """:func:`_groups` for plain strided tensors only, in C-level passes over the candidates.

    Slots holding one tensor object share ``same``; the distinct tensors are grouped by storage and their
    byte extents decide the rest (:func:`~tiegraph.storage.share_components`, whose components give the
    groups directly: a group's root is the first slot of its first tensor). Empty tensors share nothing.
    """
    same_as, empty, shares = index.same_as, index.empty, index.shares
    firsts, distinct, parts = _same_objects(index, candidates, chosen)
    _known(index, parts, distinct, NO_FLAT_VIEWS)
    for s, f in same_as.items():
        if f in empty:
            empty.add(s)
        else:
            shares.append((f, s, "same"))
    homes = list(map(keys.__getitem__, distinct))
    if len(set(homes)) == len(homes):  # one tensor object per storage (most ties): its slots are the group
        group = firsts
    else:
        starts, stops, strided = _extents(parts, homes if merged else None)
        _layouts(index, distinct, starts, stops, strided)
        buckets: dict[Any, list[int]] = {}
        for n in compress(range(len(parts)), stops):  # (empty tensors read no byte: in no bucket)
            buckets.setdefault(homes[n], []).append(n)
        roots, edges = share_components(len(parts), buckets, starts, stops, strided)
        shares.extend([(distinct[i], distinct[j], how) for i, j, how in edges])
        number = dict(zip(distinct, count()))
        group = list(map(distinct.__getitem__, map(roots.__getitem__, map(number.__getitem__, firsts))))
    if empty:
        group = [s if f in empty else g for s, f, g in zip(candidates, firsts, group, strict=True)]
    sizes = Counter(group)
    if len(sizes) < len(group):
        grouped = map(lt, repeat(1), map(sizes.__getitem__, group))
        index.root_of.update(compress(zip(candidates, group, strict=True), grouped))


def _known(index: Index, chosen: list[Any], slots: list[int], flat: FlatViews) -> None:
    """Metadata of the candidate slots (one per tensor object) at build, and which of them read no byte."""
    known, empty = index.known, index.empty
    strings: dict[object, str] = {}
    if set(map(type, chosen)) <= PLAIN_TYPES:
        try:
            dtypes = list(map(_DTYPE, chosen))
            devices = list(map(_DEVICE, chosen))
            shapes = list(map(_SHAPE, chosen))
            grads = list(map(_GRAD, chosen))
            nbytes = list(map(_NBYTES, chosen))
        except (RuntimeError, NotImplementedError, TypeError, AttributeError):
            pass  # (a nested tensor has no shape): slot by slot below
        else:
            known.update(zip(slots, zip(dtypes, shapes, devices, grads, strict=True), strict=True))
            if flat.shapes:
                for s, tensor in zip(slots, chosen, strict=True):
                    shape = flat.shapes.get(id(tensor))
                    if shape is not None:
                        dtype, _, device, grad = known[s]
                        known[s] = (dtype, torch.Size(shape), device, grad)
            for s in compress(slots, map(not_, nbytes)):
                if 0 in (known[s][1] or (1,)):
                    empty.add(s)
            return
    for s, tensor in zip(slots, chosen, strict=True):
        known[s] = slot_meta(tensor, parts_of(tensor), flat, strings)
        if not _reads_bytes(tensor, flat):
            empty.add(s)


def _reads_bytes(tensor: Any, flat: FlatViews) -> bool:
    """False for an empty tensor (no byte, a 0 in its shape): it shares with nothing, even itself."""
    if id(tensor) in flat.shapes:
        return 0 not in shape_of(tensor, flat)
    if type(tensor) in PLAIN_TYPES:
        try:
            if int(tensor.nbytes):
                return True
        except (RuntimeError, NotImplementedError, TypeError):
            return True
    return 0 not in shape_of(tensor, flat)


def _flat_warning(index: Index, tensors: list[Any], flat: FlatViews) -> None:
    found = compress(range(len(tensors)), map(flat.containers.__contains__, map(id, tensors)))
    containers = [index.slot_name_of(s) for s in found]
    if containers:
        warnings.warn(
            f"{', '.join(containers)}: FSDP1 FlatParameter(s), counted as containers of the parameters of "
            "their units; ties are seen only among parameters registered as their own slots, which FSDP1 "
            "does with use_orig_params=True (or use FSDP2 fully_shard)",
            stacklevel=outside_stacklevel(),
        )
