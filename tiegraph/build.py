"""The one builder: walk the module tree once and record the index.

Data flows one way: module tree -> slots -> share relation -> index. The networkx graph and every query
are derived from the index (:mod:`tiegraph.graph`); nothing here reads tensor data or modifies the model.

Design (issue 15): what a build does, and what it leaves for later
-------------------------------------------------------------------
The cost of a build is Python work per module and per slot, not the C calls, so the builder does as
little per-slot Python as it can and lets C loops (``map``, ``itertools``, ``Counter``) do the rest:

1. **Walk modules only** (:func:`_walk`): a stack of ``iter(module._modules.items())`` iterators, one Python
   iteration per module path, recording parent, segment name and module object. No path strings are built.
   Object numbers, classes, the "declares ``_tied_weights_keys``" flag and the "carries an accelerate
   ``_hf_hook``" flag come from C-level passes over the recorded modules.
2. **Slots in C-level passes** (:func:`_slots`): over chunks of :data:`CHUNK` modules (the chunk keeps the
   data in cache), the ``_parameters``/``_buffers`` dicts give owners, attribute names, flags and tensors
   with ``chain.from_iterable``/``map``; ``None`` entries are dropped when the chunk's set of types has
   ``NoneType``. Served tensors replace slots of modules carrying an accelerate ``_hf_hook`` in one place,
   :func:`tiegraph.deployed.annotate` (called only when such a module or a quantized layer class is in
   the tree, so a plain model pays one ``__dict__`` lookup per module and one check per class).
3. **The storage object is the key** (:func:`_storages`): in torch 2.13 ``untyped_storage()`` returns one
   Python object per storage (views, ``detach``, ``set_``, ``Parameter(t)``, dtype views; CPU and meta),
   checked once at import (:data:`_STORAGE_IDENTITY`, else the key is ``_cdata``). A chunk whose types are
   not all :data:`~tiegraph.storage.PLAIN_TYPES`, or where ``untyped_storage()`` raises, goes slot by slot,
   and every tensor that is not a plain strided tensor goes to the one slow path,
   :func:`tiegraph.storage.slow_components`. A ``Counter`` finds storages read twice or more; on real devices
   separate storage objects with the same (device, data pointer) are merged first.
4. **Metadata only where it decides something** (:func:`_share`): byte extents only for the tensors on a
   storage read by two or more slots (6,120 of 99,962 slots on the 100k tree; 2 on 70B), then one
   :func:`~tiegraph.storage.share_components` call. dtype/shape/device/requires_grad, extents of the other
   slots and the storage table are left to the index, which fills them on first use by re-walking the model
   through a weak reference (:func:`_fill_metadata`, checked against the recorded (owner, attribute) lists).
   Declarations are captured raw (declaring modules found by the walk's flag) and expanded on first use.

Measured (median ratios in one run of ``benchmarks/bench.py``; see ``benchmarks/RESULTS.md``): the 70B-shaped
meta Llama, ``build_graph`` + ``tied_to_input_embedding()`` against accelerate's ``find_tied_parameters``,
and the 100k-slot tree's build against a bare ``named_parameters`` walk. Run of 2026-11-29 16:11 UTC (CPU
medians, loaded 2-core machine): 70B 0.71x accelerate (was 1.44x), DeepSeek-V3 0.72x, T5 0.91x, 400-layer
Llama 0.63x, PEFT LoRA 0.87x; 100k tree 1.54x the bare walk (was 4.7x; target 1.3x not met); index peak
278-735 B/slot on plain models (was 786-1,697). Alternatives
measured and dropped (issue 15): eager metadata at build (~1.5x the bare walk on 100k), ``named_modules()``
as the walk (twice the iterator stack), and ``data_ptr()``, ``_base`` or ``id(tensor)`` as storage keys
(offsets, meta zeros, ``detach``/``from_numpy`` aliasing make them wrong).
"""

from __future__ import annotations

import functools
import warnings
import weakref
from collections import Counter
from collections.abc import Callable
from itertools import accumulate, chain, compress, count, repeat
from operator import add, attrgetter, is_, is_not, lt, methodcaller, mul, ne, not_, sub
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch import nn

from ._index import Index, SlotMeta
from ._text import not_found
from .errors import CycleError, PathNotFoundError, TiegraphError
from .naming import Namer
from .storage import (
    _NO_FLAT_VIEWS,
    PLAIN_TYPES,
    Extent,
    FlatViews,
    flat_param_views,
    share_components,
    slow_components,
    strided_extent,
)

if TYPE_CHECKING:
    from .graph import TieGraph

__all__ = ["build_graph"]

InputEmbedding = nn.Module | torch.Tensor | str | None

#: Modules per chunk of the C-level slot passes (about 1,000 keeps a chunk's dicts and tensors in cache).
CHUNK = 1024

_STORAGE = torch.Tensor.untyped_storage
_DATA_PTR, _TENSOR_DATA_PTR = torch.UntypedStorage.data_ptr, torch.Tensor.data_ptr
_PARAMS, _BUFFERS = attrgetter("_parameters"), attrgetter("_buffers")
_VALUES = methodcaller("values")
_DTYPE, _DEVICE, _SHAPE = attrgetter("dtype"), attrgetter("device"), attrgetter("shape")
_GRAD, _NBYTES = attrgetter("requires_grad"), attrgetter("nbytes")
_NESTED, _TENSOR_OF = attrgetter("is_nested"), attrgetter("tensor")
_OFFSET, _ITEMSIZE = torch.Tensor.storage_offset, torch.Tensor.element_size
_CONTIGUOUS = torch.Tensor.is_contiguous


def _storage_identity() -> bool:
    """Whether ``untyped_storage()`` returns one Python object per storage (so identity is the key)."""
    base = torch.zeros(4, 4)
    views = (base, base.t(), base[1:], base.detach(), nn.Parameter(base), base.view(torch.int32))
    with torch.device("meta"):
        meta = torch.empty(4, 4)
    first = base.untyped_storage()
    return all(v.untyped_storage() is first for v in views) and meta[1:].untyped_storage() is (
        meta.untyped_storage()
    )


#: Checked once at import; when false (another torch), storages are keyed by their ``_cdata`` pointer.
_STORAGE_IDENTITY = _storage_identity()


def build_graph(
    model: nn.Module, *, input_embedding: InputEmbedding = None, check_values: bool = False
) -> TieGraph:
    """Build the parameter-sharing graph of a model, wrapped or not.

    Parameters
    ----------
    model
        Any ``nn.Module``: a transformers model, a PEFT model, ``torch.compile``/DDP/FSDP-wrapped models, or
        a user's own module tree.
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
        If ``model`` is not an ``nn.Module``.
    PathNotFoundError
        If ``input_embedding`` names no module of the model.
    CycleError
        If a module is registered under one of its own descendants.

    Notes
    -----
    One pass over the module tree, O(modules + slots) mostly C-level work plus a sort per shared storage; no
    tensor data is read. dtype, shape, device and requires_grad are read on first use (exports, the audit),
    by a second walk of the model, which must then still be alive and unchanged.

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
    from .declared import capture_declarations
    from .graph import TieGraph

    if not isinstance(model, nn.Module):
        kind = type(model)
        raise TypeError(f"build_graph expects a torch.nn.Module, got {kind.__module__}.{kind.__qualname__}")
    tree = _walk(model)
    index = Index()
    index.make_lazy()
    index.m_parent, index.m_name = tree.parents, tree.names
    index.m_type = types = list(map(type, tree.modules))
    if _aliased(tree.modules):
        index.objects_distinct = False
        index.m_object = _object_numbers(tree.modules)
    kinds = set(types)
    hooked = [i for i in tree.special if _HOOK in tree.modules[i].__dict__]
    slots = _slots(tree)
    index.d_number, index.d_size, index.s_attr = tree.numbers, slots.sizes, slots.attrs
    found = slots.keys
    if _annotate(index, tree.modules, slots.tensors, hooked, kinds, record=True) or found is None:
        found = _storages(slots.tensors)
    namer = Namer(index)
    namer.attach()
    flat = _flat_views(tree.modules, kinds)
    with torch._C.DisableTorchFunctionSubclass():  # subclass metadata reads skip __torch_function__
        _share(index, slots.tensors, flat, found)
    _find_input_embedding(index, tree.modules, slots.tensors, namer, input_embedding)
    capture_declarations(index, tree.modules, _declaring(tree, types, kinds), namer.root, _instances(types))
    _watch(index, model)
    tg = TieGraph(index)
    if check_values:  # a separate step after the build: it reads tensor data, the build never does
        from .values import record_values

        record_values(tg, model)
    return tg


# ------------------------------------------------------------------------------------------------ walk


class _Tree(NamedTuple):
    """Module paths in ``named_modules(remove_duplicate=False)`` order, and what the walk read of each."""

    parents: list[int]
    names: list[str]
    modules: list[nn.Module]
    numbers: list[int]  # of every non-empty slot dict: 2 * path for ``_parameters``, 2 * path + 1 buffers
    dicts: list[dict[str, Any]]  # those dicts, in slot order
    special: list[int]  # paths whose instance ``__dict__`` holds ``_hf_hook`` or ``_tied_weights_keys``


_HOOK, _TIED = "_hf_hook", "_tied_weights_keys"
_NONE = type(None)


def _walk(model: nn.Module) -> _Tree:
    """Visit every module path (aliases included) with a stack of child iterators.

    Each module's instance ``__dict__`` is read once, while it is in cache: its children, its non-empty
    parameter and buffer dicts (kept, not iterated) and whether it carries a hook or its own declaration.
    """
    parents: list[int] = [-1]
    names: list[str] = [""]
    modules: list[nn.Module] = [model]
    numbers: list[int] = []
    dicts: list[dict[str, Any]] = []
    state = model.__dict__
    if state["_parameters"]:
        numbers.append(0)
        dicts.append(state["_parameters"])
    if state["_buffers"]:
        numbers.append(1)
        dicts.append(state["_buffers"])
    special: list[int] = [0] if _HOOK in state or _TIED in state else []
    tree = _Tree(parents, names, modules, numbers, dicts, special)
    children = state["_modules"]
    if not children:
        return tree
    add_parent, add_name, add_module = parents.append, names.append, modules.append
    add_number, add_dict = numbers.append, dicts.append
    stack = [(0, iter(children.items()))]
    push, pop = stack.append, stack.pop
    limit = 64  # a path deeper than this is checked for a cycle (then the limit doubles)
    i = 0
    while stack:
        owner, items = stack[-1]
        for name, child in items:
            if child is None:
                continue
            i += 1
            add_parent(owner)
            add_name(name)
            add_module(child)
            state = child.__dict__  # (faster than child._modules: nn.Module has a __getattr__)
            found = state["_parameters"]
            if found:
                add_number(i + i)
                add_dict(found)
            found = state["_buffers"]
            if found:
                add_number(i + i + 1)
                add_dict(found)
            if _HOOK in state or _TIED in state:
                special.append(i)
            below = state["_modules"]
            if below:
                push((i, iter(below.items())))
                if len(stack) > limit:
                    limit = _check_cycle(parents, names, modules, i, limit)
                break
        else:
            pop()
    return tree


def _aliased(modules: list[nn.Module]) -> bool:
    """Whether a module object sits under two paths (a set of the modules themselves: no int per path)."""
    try:
        return len(set(modules)) < len(modules)
    except TypeError:  # a module class that defines __eq__ without __hash__
        return len(set(map(id, modules))) < len(modules)


def _object_numbers(modules: list[nn.Module]) -> list[int]:
    """Distinct object number of every module path (aliases share theirs), in order of first path."""
    ids = list(map(id, modules))
    numbers = dict(zip(dict.fromkeys(ids), count()))
    return list(map(numbers.__getitem__, ids))


def _check_cycle(parents: list[int], names: list[str], modules: list[nn.Module], i: int, limit: int) -> int:
    """Raise :class:`CycleError` if a module is its own ancestor on the path to ``i``; else a deeper limit."""
    chain_ = []
    while i >= 0:
        chain_.append(i)
        i = parents[i]
    chain_.reverse()
    seen: dict[int, int] = {}
    for row in chain_:  # from the root down: the first repeat is the cycle's entry
        key = id(modules[row])
        if key in seen:
            path = _path(parents, names, row)
            above = _path(parents, names, seen[key])
            raise CycleError(
                f"the module tree has a cycle: {path!r} is the same {type(modules[row]).__name__} object "
                f"as its ancestor {above or '<root>'!r}; remove the cycle (torch's own named_modules would "
                "recurse forever on it)"
            )
        seen[key] = row
    return limit * 2


def _path(parents: list[int], names: list[str], i: int) -> str:
    parts = []
    while parents[i] >= 0:
        parts.append(names[i])
        i = parents[i]
    return ".".join(reversed(parts))


def _declaring(tree: _Tree, types: list[type], kinds: set[type]) -> list[int]:
    """Module paths whose instance (the walk's flag) or class holds ``_tied_weights_keys``."""
    by_class = {kind for kind in kinds if _class_declares(kind)}
    found = {i for i in tree.special if _TIED in tree.modules[i].__dict__}
    if by_class:
        found.update(compress(range(len(types)), map(by_class.__contains__, types)))
    return sorted(found)


@functools.lru_cache(maxsize=4096)
def _class_declares(kind: type) -> bool:
    return any("_tied_weights_keys" in k.__dict__ for k in kind.__mro__)


def _instances(types: list[type]) -> Callable[[type], list[int]]:
    """``instances(cls)``: the module paths whose module is a ``cls`` (decided once per class)."""

    def instances(cls: type) -> list[int]:
        verdict = {kind: issubclass(kind, cls) for kind in set(types)}
        if not any(verdict.values()):
            return []
        return list(compress(range(len(types)), map(verdict.__getitem__, types)))

    return instances


# ------------------------------------------------------------------------------------------------ slots


class _Slots(NamedTuple):
    sizes: list[int]  # slots per non-empty dict of the walk (after dropping None entries)
    attrs: list[str]
    tensors: list[Any]  # the tensor in each slot (served tensors replace hooked modules' own)
    keys: _Keys | None  # their storage keys (None: not asked for)


def _slots(tree: _Tree, keys: bool = True) -> _Slots:
    """Every slot in module order, parameters before buffers, from C-level passes over chunks of dicts.

    Per chunk of the walk's non-empty dicts: sizes, names and values each in one C-level pass; ``None``
    entries (``bias=False``) are dropped (and their dicts' sizes lowered) when the values include one.
    Owners and flags are not expanded per slot: the index derives them from the dicts' numbers and sizes.
    With ``keys``, the storage keys of the chunk's tensors are taken while they are in cache (:class:`_Keys`).
    """
    sizes: list[int] = []
    attrs: list[str] = []
    tensors: list[Any] = []
    found = _Keys() if keys else None
    dicts = tree.dicts
    for lo in range(0, len(dicts), CHUNK):
        full = dicts[lo : lo + CHUNK]
        size = list(map(len, full))
        try:
            values = list(chain.from_iterable(map(dict.values, full)))
        except TypeError:  # a mapping that is not a dict (TorchScript's wrappers)
            values = list(chain.from_iterable(map(_VALUES, full)))
        kinds = set(map(type, values))
        if (
            _NONE in kinds
        ):  # each dict's size becomes its count of kept values: differences of a running count
            kinds.discard(_NONE)
            keep = list(map(is_not, values, repeat(None)))
            kept = list(accumulate(keep, initial=0))
            ends = list(map(kept.__getitem__, accumulate(size)))
            size = list(map(sub, ends, chain((0,), ends)))
            attrs.extend(compress(chain.from_iterable(full), keep))
            values = list(compress(values, keep))
        else:
            attrs.extend(chain.from_iterable(full))
        if found is not None:
            found.add(values, kinds)
        tensors.extend(values)
        sizes.extend(size)
    return _Slots(sizes, attrs, tensors, found)


def _annotate(
    index: Index,
    modules: list[nn.Module],
    tensors: list[Any],
    hooked: list[int],
    kinds: set[type],
    record: bool,
) -> bool:
    """Served tensors and quantized layers (:func:`tiegraph.deployed.annotate`), when the tree has any.

    Returns whether it ran (served tensors may then have replaced some of ``tensors``).
    """
    from ._tensors import is_quantized_layer_type

    if hooked or any(map(is_quantized_layer_type, kinds)):
        from .deployed import annotate

        annotate(index, modules, tensors, hooked, kinds, record=record)
        return True
    return False


class _Keys:
    """Storage keys of slots, added chunk by chunk (see :func:`_slots`); the slow path's slots get None."""

    def __init__(self) -> None:
        self.keys: list[Any] = []
        self.slow: dict[int, list[torch.Tensor] | None] = {}  # the slow path's components by slot
        self.real = False  # some plain tensor may sit on real memory (a non-zero data pointer)

    def add(self, part: list[Any], kinds: set[type]) -> None:
        """Keys of the next slots; ``kinds`` is the set of their types."""
        keys = self.keys
        if kinds <= PLAIN_TYPES:
            try:
                found = list(map(_STORAGE, part))
                if not self.real:  # (a tensor's data pointer is its storage's plus its offset)
                    self.real = any(map(_TENSOR_DATA_PTR, part))
            except (RuntimeError, NotImplementedError, TypeError):
                pass  # a sparse or other non-strided tensor: this chunk goes slot by slot
            else:
                keys.extend(found if _STORAGE_IDENTITY else [key._cdata for key in found])
                return
        self.real = True  # (conservative: the pointer merge then looks at every storage)
        for s, tensor in enumerate(part, len(keys)):
            if type(tensor) in PLAIN_TYPES and tensor.layout is torch.strided:
                try:
                    keys.append(_key(tensor.untyped_storage()))
                    continue
                except (RuntimeError, NotImplementedError, TypeError):
                    pass
            self.slow[s] = slow_components(tensor)
            keys.append(None)


def _storages(tensors: list[Any]) -> _Keys:
    """Storage keys of every slot, by chunks (when the tensors changed after :func:`_slots`)."""
    found = _Keys()
    for lo in range(0, len(tensors), CHUNK):
        part = tensors[lo : lo + CHUNK]
        found.add(part, set(map(type, part)))
    return found


def _key(storage: torch.UntypedStorage) -> Any:
    return storage if _STORAGE_IDENTITY else storage._cdata


# ------------------------------------------------------------------------------------------------ share


class _Piece(NamedTuple):
    slot: int
    tensor: torch.Tensor  # a plain tensor whose bytes the slot reads
    storage: Any  # its storage key (merged)


def _share(index: Index, tensors: list[Any], flat: FlatViews, stored: _Keys) -> None:
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
    components: dict[int, list[tuple[torch.Tensor, Any]]] = {}
    unknown = []
    if slow:
        from ._tensors import quantization

        labels = index.deployed.slot_quantization
        for s in slow:
            label = quantization(tensors[s])
            if label:
                labels.setdefault(s, label)
    for s, found in slow.items():
        if found is None:
            unknown.append(s)
            continue
        pairs = components[s] = []
        for component in found:
            try:
                key = _key(component.untyped_storage())
            except (RuntimeError, NotImplementedError, TypeError):
                continue
            pairs.append((component, key))
            counts[key] += 1
    if unknown:
        _unknown_warning(index, tensors, unknown)
    merged = _merge_pointers(counts) if _on_real_memory(stored, components) else {}
    if merged:
        keys = list(map(merged.get, keys, keys))
        components = {s: [(c, merged.get(k, k)) for c, k in pairs] for s, pairs in components.items()}
    repeated = set(compress(counts, map(lt, repeat(1), counts.values())))
    plain = list(compress(range(len(keys)), map(repeated.__contains__, keys)))
    if not (components or unknown or flat.containers or flat.shapes):
        chosen = list(map(tensors.__getitem__, plain))
        if not any(map(_NESTED, chosen)):  # (the common case: plain strided tensors only)
            if plain:
                _plain_groups(index, keys, plain, chosen)
            return
    pieces = [_Piece(s, tensors[s], keys[s]) for s in plain]
    for s, pairs in components.items():
        pieces.extend(_Piece(s, c, k) for c, k in pairs if k in repeated)
    if any(map(_NESTED, map(_TENSOR_OF, pieces))):  # strided nested: its constituents' byte ranges decide
        pieces = [q for p in pieces for q in _unnest(p)]
    # a slow slot whose components read no repeated storage shares with nothing (one object under two
    # names counts its components twice); only unknown ones are compared by identity
    candidates = sorted({p.slot for p in pieces}.union(unknown))
    if not candidates:
        return
    _groups(index, tensors, candidates, pieces, flat)


def _extents(chosen: list[torch.Tensor]) -> tuple[list[int], list[int], dict[int, Extent]]:
    """Byte extents (start, stop) of plain tensors in bulk, and the full Extent of the non-contiguous ones."""
    try:
        itemsizes = list(map(_ITEMSIZE, chosen))
        starts = list(map(mul, map(_OFFSET, chosen), itemsizes))
        nbytes = list(map(_NBYTES, chosen))
        contiguous = list(map(_CONTIGUOUS, chosen))
    except (RuntimeError, NotImplementedError, TypeError, AttributeError):
        rows = list(map(_extent, chosen))
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
    from ._tensors import leaves

    described = []
    for s in unknown:
        reason = leaves(tensors[s]).unknown or "it holds no tensor"
        described.append(f"{index.slot_name_of(s)} ({type(tensors[s]).__name__}: {reason})")
    warnings.warn(
        f"storage unknown for {', '.join(described)}; ties through these slots are not seen (only the same "
        "object under two names counts)",
        RuntimeWarning,
        stacklevel=4,
    )


def _on_real_memory(found: _Keys, components: dict[int, list[tuple[Any, Any]]]) -> bool:
    """Whether any storage can have a data pointer (else, on meta, :func:`_merge_pointers` has nothing to do).

    The plain tensors were asked while their keys were taken (:class:`_Keys`: asking a tensor costs a third
    of asking its storage on meta, and stops at the first one on real memory); here the slow path's
    components are asked.
    """
    if not _STORAGE_IDENTITY:
        return False
    if found.real:
        return True
    try:
        return any(_DATA_PTR(key) for pairs in components.values() for _, key in pairs)
    except (RuntimeError, NotImplementedError, TypeError):
        return True


def _merge_pointers(counts: Counter[Any]) -> dict[Any, Any]:
    """Storage objects on real devices that report the same (device, data pointer): key -> first key."""
    if not _STORAGE_IDENTITY:
        return {}
    distinct = list(counts)
    pointers = list(map(_DATA_PTR, distinct))
    if len(set(pointers)) == len(pointers):  # (the common case: no pointer twice, not even 0)
        return {}
    seen = Counter(pointers)
    seen.pop(0, None)
    clashes = set(compress(seen, map(lt, repeat(1), seen.values())))
    if not clashes:
        return {}
    first: dict[tuple[str, int], Any] = {}
    merged: dict[Any, Any] = {}
    for storage, pointer in zip(distinct, pointers, strict=True):
        if pointer in clashes:
            home = first.setdefault((str(storage.device), pointer), storage)
            if home is not storage:
                merged[storage] = home
                counts[home] += counts.pop(storage)
    return merged


def _shape(tensor: Any, flat: FlatViews) -> tuple[int, ...]:
    shape = flat.shapes.get(id(tensor))
    if shape is not None:
        return tuple(shape)
    try:
        return tuple(tensor.shape)
    except (RuntimeError, NotImplementedError, TypeError, AttributeError):
        from ._tensors import _shape as ragged

        return ragged(tensor)  # nested: -1 for ragged dimensions


def _extent(tensor: torch.Tensor) -> tuple[int, int, Extent | None]:
    """Byte extent (start, stop) of a plain tensor in its storage, and its full Extent when not contiguous."""
    try:
        if tensor.is_nested:  # (strided nested: its buffer; the slow path may say better)
            raise NotImplementedError
        nbytes = int(tensor.nbytes)
        if not nbytes:
            return 0, 0, None
        itemsize = tensor.element_size()
        offset = int(tensor.storage_offset()) * itemsize
        if tensor.is_contiguous():
            return offset, offset + nbytes, None
        extent = strided_extent(tensor, offset, itemsize)
        return offset, extent.stop, extent
    except (RuntimeError, NotImplementedError, TypeError):
        return 0, int(tensor.untyped_storage().nbytes()), None


def _groups(
    index: Index, tensors: list[Any], candidates: list[int], pieces: list[_Piece], flat: FlatViews
) -> None:
    """Union the candidate slots by object identity and byte overlap; record shares and tie groups.

    Metadata and byte extents of the candidates are read in C-level passes (``map`` over unbound tensor
    methods); a pass that raises (a tensor that cannot answer) is redone slot by slot.
    """
    same_as = index.same_as
    empty = index.empty
    chosen = list(map(tensors.__getitem__, candidates))
    ids = list(map(id, chosen))
    first_of = dict(zip(reversed(ids), reversed(candidates), strict=True))  # first slot per tensor object
    firsts = list(map(first_of.__getitem__, ids))
    repeats = list(map(ne, firsts, candidates))
    if any(repeats):
        same_as.update(compress(zip(candidates, firsts, strict=True), repeats))
        distinct = list(compress(candidates, map(not_, repeats)))
    else:
        distinct = candidates
    _known(index, list(map(tensors.__getitem__, distinct)), distinct, flat)
    parent: dict[int, int] = {}

    def find(i: int) -> int:
        root = parent.get(i, i)
        if root == i:
            return i
        root = find(root)
        parent[i] = root
        return root

    def union(a: int, b: int) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

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
    starts, stops, strided = _extents(parts)
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


def _plain_groups(index: Index, keys: list[Any], candidates: list[int], chosen: list[torch.Tensor]) -> None:
    """:func:`_groups` for plain strided tensors only, in C-level passes over the candidates.

    Slots holding one tensor object share ``same``; the distinct tensors are grouped by storage and their
    byte extents decide the rest (:func:`~tiegraph.storage.share_components`, whose components give the
    groups directly: a group's root is the first slot of its first tensor). Empty tensors share nothing.
    """
    same_as, empty, shares = index.same_as, index.empty, index.shares
    ids = list(map(id, chosen))
    first_of = dict(zip(reversed(ids), reversed(candidates), strict=True))  # first slot per tensor object
    firsts = list(map(first_of.__getitem__, ids))
    repeats = list(map(ne, firsts, candidates))
    if any(repeats):
        same_as.update(compress(zip(candidates, firsts, strict=True), repeats))
        distinct = list(compress(candidates, map(not_, repeats)))
        parts = list(compress(chosen, map(not_, repeats)))
    else:
        distinct, parts = candidates, chosen
    _known(index, parts, distinct, _NO_FLAT_VIEWS)
    for s, f in same_as.items():
        if f in empty:
            empty.add(s)
        else:
            shares.append((f, s, "same"))
    homes = list(map(keys.__getitem__, distinct))
    if len(set(homes)) == len(homes):  # one tensor object per storage (most ties): its slots are the group
        group = firsts
    else:
        starts, stops, strided = _extents(parts)
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
                if 0 in known[s][1]:
                    empty.add(s)
            return
    for s, tensor in zip(slots, chosen, strict=True):
        known[s] = _slot_meta(tensor, _parts(tensor), flat, strings)
        if not _reads_bytes(tensor, flat):
            empty.add(s)


def _reads_bytes(tensor: Any, flat: FlatViews) -> bool:
    """False for an empty tensor (no byte, a 0 in its shape): it shares with nothing, even itself."""
    if id(tensor) in flat.shapes:
        return 0 not in _shape(tensor, flat)
    if type(tensor) in PLAIN_TYPES:
        try:
            if int(tensor.nbytes):
                return True
        except (RuntimeError, NotImplementedError, TypeError):
            return True
    return 0 not in _shape(tensor, flat)


def _flat_warning(index: Index, tensors: list[Any], flat: FlatViews) -> None:
    found = compress(range(len(tensors)), map(flat.containers.__contains__, map(id, tensors)))
    containers = [index.slot_name_of(s) for s in found]
    if containers:
        warnings.warn(
            f"{', '.join(containers)}: FSDP1 FlatParameter(s), counted as containers of the parameters of "
            "their units; ties are seen only among parameters registered as their own slots, which FSDP1 "
            "does with use_orig_params=True (or use FSDP2 fully_shard)",
            stacklevel=4,
        )


def _flat_views(modules: list[nn.Module], kinds: set[type]) -> FlatViews:
    """FSDP1's FlatParameter views, looked for only when an FSDP1 module type is in the tree."""
    import sys

    fsdp = sys.modules.get("torch.distributed.fsdp.fully_sharded_data_parallel")
    cls = getattr(fsdp, "FullyShardedDataParallel", None)
    if not isinstance(cls, type) or not any(issubclass(kind, cls) for kind in kinds):
        return _NO_FLAT_VIEWS
    return flat_param_views(modules)


# ------------------------------------------------------------------------------------------------ metadata


def _watch(index: Index, model: nn.Module) -> None:
    """Let the index read metadata from the model on first use, and at the latest when the model dies.

    The index keeps a weak reference to the model. So that ``build_graph(make_model()).to_json()`` still
    works, a finalizer holds the model's instance ``__dict__`` (not the model): while the model lives, that
    costs nothing (the model holds it anyway); when the model is collected, the finalizer fills the index's
    metadata from the dict (one re-walk) and lets it go. It is detached as soon as the metadata is filled or
    the index dies, so no model outlives its own lifetime because of a graph.
    """
    index.model_ref = weakref.ref(model)
    index.meta_filler = _fill_metadata
    watch = weakref.finalize(model, _on_model_death, weakref.ref(index), type(model), model.__dict__)
    watch.atexit = False
    index.watch = watch
    weakref.finalize(index, watch.detach).atexit = False


class _Shell:
    """Stands in for a collected model whose instance ``__dict__`` is still held (see :func:`_watch`)."""


def _on_model_death(index_ref: weakref.ref[Index], kind: type, state: dict[str, Any]) -> None:
    index = index_ref()
    if index is None or index.meta_filler is None:
        return
    shell: Any
    try:
        shell = object.__new__(kind)
    except TypeError:
        shell = _Shell()
    shell.__dict__ = state
    index.model_ref = lambda: shell
    try:
        _fill_metadata(index)
    except TiegraphError as error:
        index.meta_error = str(error)
    finally:
        index.model_ref = None


def _fill_metadata(index: Index) -> None:
    """dtype, shape, device, requires_grad, byte extents and the storage table, by re-walking the model.

    The re-walk must find the same module paths and slots (owner, attribute) as the build; otherwise the
    model changed since the build and the answers would mix two models.
    """
    model = index.model_ref() if index.model_ref is not None else None
    if model is None:
        if index.meta_error:
            raise TiegraphError(index.meta_error)
        raise TiegraphError(
            "the model this graph was built from no longer exists; tiegraph keeps no reference to it and "
            "reads "
            "dtype, shape, device and storage details on first use: keep the model alive until then, or call "
            "build_graph again"
        )
    tree = _walk(model)
    modules = tree.modules
    hooked = [i for i in tree.special if _HOOK in modules[i].__dict__]
    slots = _slots(tree, keys=False)
    if tree.parents != index.m_parent or tree.names != index.m_name:
        raise TiegraphError(
            "the model's module tree changed since build_graph (a module was added, removed or replaced); "
            "call build_graph again for details of the model as it is now"
        )
    if tree.numbers != index.d_number or slots.sizes != index.d_size or slots.attrs != index.s_attr:
        now = Index()
        now.d_number, now.d_size, now.s_attr = tree.numbers, slots.sizes, slots.attrs
        now.make_lazy()
        then = list(zip(index.s_owner, index.s_attr, index.s_param, strict=True))
        pairs = zip(zip(now.s_owner, now.s_attr, now.s_param, strict=True), then, strict=False)
        changed = next((s for s, (a, b) in enumerate(pairs) if a != b), min(now.num_slots, len(then)))
        where = index.slot_name_of(changed) if changed < index.num_slots else "the end"
        raise TiegraphError(
            f"the model's parameters or buffers changed since build_graph (first difference at {where!r}); "
            "call build_graph again for details of the model as it is now"
        )
    kinds = set(map(type, modules))
    _annotate(index, modules, slots.tensors, hooked, kinds, record=False)
    flat = _flat_views(modules, kinds)
    with torch._C.DisableTorchFunctionSubclass():
        _metadata(index, slots.tensors, flat)
    index.meta_filler = None
    if index.watch is not None:
        index.watch.detach()
        index.watch = None


def _parts(tensor: Any) -> list[torch.Tensor] | None:
    """The plain tensors holding a slot's bytes: itself, or what the slow path says."""
    if type(tensor) in PLAIN_TYPES and tensor.layout is torch.strided:
        return [tensor]
    return slow_components(tensor)


def _slot_meta(
    tensor: Any, parts: list[torch.Tensor] | None, flat: FlatViews, strings: dict[object, str]
) -> SlotMeta:
    """dtype, shape (FSDP1: unsharded), device and requires_grad; strings interned per build."""
    try:
        device, dtype = tensor.device, tensor.dtype
    except (RuntimeError, NotImplementedError, TypeError, AttributeError):
        local = parts[0] if parts else tensor
        device, dtype = local.device, local.dtype
    dname = strings.get(dtype)
    if dname is None:
        dname = strings[dtype] = str(dtype).removeprefix("torch.")
    name = strings.get(device)
    if name is None:
        name = strings[device] = str(device)
    # (a torch.Size, as before: JSON writes it as a list)
    shape = torch.Size(_shape(tensor, flat))
    return SlotMeta(dname, shape, name, bool(getattr(tensor, "requires_grad", False)))


def _metadata(index: Index, tensors: list[Any], flat: FlatViews) -> None:
    """Per distinct tensor object (``index.s_tensor``): metadata, storage and byte extent."""
    s_tensor = index.s_tensor
    count = (max(s_tensor) + 1) if s_tensor else 0
    firsts = [0] * count
    for s in range(len(s_tensor) - 1, -1, -1):
        firsts[s_tensor[s]] = s
    storage_number: dict[Any, int] = {}
    st_pointer: list[int] = []
    st_device: list[str] = []
    st_nbytes: list[int] = []
    t_storage: list[int] = []
    t_start: list[int] = []
    t_stop: list[int] = []
    t_dtype: list[str] = []
    t_shape: list[tuple[int, ...]] = []
    t_device: list[str] = []
    t_grad: list[bool] = []
    strings: dict[object, str] = {}
    known = index.known
    for s in firsts:
        tensor = tensors[s]
        parts = _parts(tensor)
        meta = index.meta_of(s) if s in known else _slot_meta(tensor, parts, flat, strings)
        t_device.append(meta.device)
        t_dtype.append(meta.dtype)
        t_shape.append(meta.shape)
        t_grad.append(meta.requires_grad)
        local = parts[0] if parts else tensor
        if not parts:
            t_storage.append(-1)
            t_start.append(0)
            t_stop.append(0)
            continue
        try:
            storage = local.untyped_storage()
            pointer = storage.data_ptr()
        except (RuntimeError, NotImplementedError, TypeError, AttributeError):
            t_storage.append(-1)
            t_start.append(0)
            t_stop.append(0)
            continue
        sname = str(local.device)
        key: object = (sname, pointer) if pointer else _key(storage)
        st = storage_number.get(key)
        if st is None:
            st = storage_number[key] = len(st_pointer)
            st_pointer.append(pointer)
            st_device.append(sname)
            st_nbytes.append(storage.nbytes())
        start, stop, _ = _extent(local)
        t_storage.append(st)
        t_start.append(start)
        t_stop.append(stop)
    index.t_storage, index.t_start, index.t_stop = t_storage, t_start, t_stop
    index.t_dtype, index.t_shape, index.t_device, index.t_grad = t_dtype, t_shape, t_device, t_grad
    index.st_pointer, index.st_device, index.st_nbytes = st_pointer, st_device, st_nbytes
    index.st_id = [
        f"{device}:{pointer:#x}" if pointer else f"{device}:storage-{n}"
        for n, (device, pointer) in enumerate(zip(st_device, st_pointer, strict=True))
    ]


# ---------------------------------------------------------------------------------------- input embedding


def _find_input_embedding(
    index: Index,
    modules: list[nn.Module],
    tensors: list[Any],
    namer: Namer,
    given: InputEmbedding,
) -> None:
    found: object = given
    if given is None:
        if len(namer.roots) > 1:
            names = ", ".join(f"{index.path_of(i)!r} ({type(modules[i]).__name__})" for i in namer.roots)
            index.ie_note = (
                f"the model holds {len(namer.roots)} model roots side by side: {names}; pass "
                "input_embedding= (a module, its path, or a tensor) to name the input embedding"
            )
            return
        holder = modules[namer.root] if namer.root >= 0 else modules[0]
        method = getattr(type(holder), "get_input_embeddings", None)
        if method is None:
            index.ie_note = (
                f"{type(holder).__name__} has no get_input_embeddings(); pass input_embedding= "
                "(a module, its path, or a tensor) to name the input embedding"
            )
            return
        try:
            found = method(holder)
        except Exception as error:  # the model's own code may raise anything (NotImplementedError, ...)
            index.ie_note = (
                f"{type(holder).__name__}.get_input_embeddings() raised {type(error).__name__}: {error}; "
                "pass input_embedding= to name the input embedding"
            )
            return
        if found is None:
            index.ie_note = (
                f"{type(holder).__name__}.get_input_embeddings() returned None; "
                "pass input_embedding= to name it"
            )
            return
    if isinstance(found, str):
        _select_module(index, _module_by_name(index, found))
    elif isinstance(found, nn.Module):
        try:
            _select_module(index, list(map(is_, modules, repeat(found))).index(True))
        except ValueError:
            raise PathNotFoundError(
                f"the input embedding {type(found).__name__} is not a submodule of the model; pass a module "
                "that the model holds, or its path"
            ) from None
    elif isinstance(found, torch.Tensor):
        slots = list(compress(range(len(tensors)), map(is_, tensors, repeat(found))))
        if not slots:
            raise PathNotFoundError("the input embedding tensor is not a parameter or buffer of the model")
        index.ie_slots = slots[:1]
    else:
        raise TypeError(
            "input_embedding must be an nn.Module of the model, its path (str), a tensor or None, got "
            f"{type(found).__name__}"
        )


def _select_module(index: Index, module: int) -> None:
    """Make the module at path ``module`` the input embedding; its primary path is its first path."""
    module = index.first_path_of(module)
    index.ie_module = module
    index.ie_slots = list(index.slots_under(module))


def _module_by_name(index: Index, name: str) -> int:
    """A module path index from a full path, else a canonical path (the outermost match)."""
    for names in (index.m_path, index.m_canon, index.m_belongs):
        for i, candidate in enumerate(names):
            if candidate == name:
                return i
    message = f"input_embedding={name!r} names no module of the model"
    raise PathNotFoundError(not_found(message, name, index.m_path, index.m_canon))
