"""The builder's walk: module paths, slots and storage keys, in C-level passes (see :mod:`tiegraph._build`).

Also used by the lazy metadata (:mod:`tiegraph._metadata`), which re-walks the model the same way and
checks that it finds the same module paths and slots.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from itertools import accumulate, chain, compress, count, repeat
from operator import attrgetter, is_, is_not, not_, sub
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch import nn

from ._quantization import is_packed_layer_type, is_quantized_layer_type
from ._served import HOOK, annotate
from ._sharded import is_fsdp2_type
from ._storage import NO_FLAT_VIEWS, PLAIN_TYPES, FlatViews, flat_param_views
from .errors import CycleError, TiegraphError

if TYPE_CHECKING:
    from ._index import Index

_STORAGE = torch.Tensor.untyped_storage
_TENSOR_DATA_PTR = torch.Tensor.data_ptr
_LAYOUT, _CDATA = attrgetter("layout"), attrgetter("_cdata")


#: Slot dicts per chunk of the C-level slot passes (about 1,000 keeps a chunk's dicts and tensors in cache).
CHUNK = 1024


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
STORAGE_IDENTITY = _storage_identity()


class Tree(NamedTuple):
    """Module paths in ``named_modules(remove_duplicate=False)`` order, and what the walk read of each."""

    parents: list[int]
    names: list[str]
    modules: list[nn.Module]
    types: list[type]  # each path's module class
    numbers: list[int]  # of every non-empty slot dict: 2 * path for ``_parameters``, 2 * path + 1 buffers
    dicts: list[dict[str, Any]]  # those dicts, in slot order
    special: list[int]  # paths whose instance ``__dict__`` holds ``_hf_hook`` or ``_tied_weights_keys``


_TIED = "_tied_weights_keys"


_NONE = type(None)


def walk(model: nn.Module) -> Tree:
    """Visit every module path (aliases included) with a stack of child iterators.

    Each module's instance ``__dict__`` is read once, while it is in cache: its children, its non-empty
    parameter and buffer dicts (kept, not iterated) and whether it carries a hook or its own declaration.
    A module whose state is not in its ``__dict__`` (a traced TorchScript module) makes the walk start over
    through ``named_modules`` (:func:`_walk_named`).
    """
    try:
        return _walk(model)
    except KeyError:
        return _walk_named(model)


def _walk(model: nn.Module) -> Tree:
    parents: list[int] = [-1]
    names: list[str] = [""]
    modules: list[nn.Module] = [model]
    types: list[type] = [type(model)]
    numbers: list[int] = []
    dicts: list[dict[str, Any]] = []
    state = model.__dict__
    if state["_parameters"]:
        numbers.append(0)
        dicts.append(state["_parameters"])
    if state["_buffers"]:
        numbers.append(1)
        dicts.append(state["_buffers"])
    special: list[int] = [0] if HOOK in state or _TIED in state else []
    tree = Tree(parents, names, modules, types, numbers, dicts, special)
    children = state["_modules"]
    if not children:
        return tree
    add_parent, add_name, add_module, add_type = parents.append, names.append, modules.append, types.append
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
            add_type(type(child))
            state = child.__dict__  # (faster than child._modules: nn.Module has a __getattr__)
            found = state["_parameters"]
            if found:
                add_number(i + i)
                add_dict(found)
            found = state["_buffers"]
            if found:
                add_number(i + i + 1)
                add_dict(found)
            if HOOK in state or _TIED in state:
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


def _walk_named(model: nn.Module) -> Tree:
    """:func:`walk` through ``named_modules(remove_duplicate=False)`` and each module's attributes.

    For modules that keep their parameters, buffers and children behind ``__getattr__`` (a traced
    TorchScript module forwards them to its script module; a scripted one wraps them in its own mappings),
    read as plain dicts. A module that has none (its ``__init__`` never ran) is a clear error.
    """
    parents: list[int] = []
    names: list[str] = []
    modules: list[nn.Module] = []
    numbers: list[int] = []
    dicts: list[dict[str, Any]] = []
    special: list[int] = []
    number: dict[str, int] = {}
    for i, (path, module) in enumerate(model.named_modules(remove_duplicate=False)):
        number[path] = i
        above, _, name = path.rpartition(".")
        parents.append(number[above] if path else -1)
        names.append(name)
        modules.append(module)
        for n, attr in ((i + i, "_parameters"), (i + i + 1, "_buffers")):
            found = _state(module, path, attr)
            if found:
                numbers.append(n)
                dicts.append(found)
        if HOOK in module.__dict__ or _TIED in module.__dict__:
            special.append(i)
    return Tree(parents, names, modules, list(map(type, modules)), numbers, dicts, special)


def _state(module: nn.Module, path: str, attr: str) -> dict[str, Any]:
    try:
        found = getattr(module, attr)
    except AttributeError:
        raise TiegraphError(
            f"module {path or '<root>'!r} ({type(module).__name__}) has no {attr}: was nn.Module.__init__ "
            "called in its __init__?"
        ) from None
    return dict(found.items())


def aliased(modules: list[nn.Module]) -> bool:
    """Whether a module object sits under two paths (a set of the modules themselves: no int per path)."""
    try:
        return len(set(modules)) < len(modules)
    except TypeError:  # a module class that defines __eq__ without __hash__
        return len(set(map(id, modules))) < len(modules)


def object_numbers(modules: list[nn.Module]) -> list[int]:
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


def declaring(tree: Tree, kinds: set[type], marks: int) -> list[int]:
    """Module paths whose instance (the walk's flag) or class holds ``_tied_weights_keys``.

    ``marks`` are the tree's :func:`class_marks`: without :data:`DECLARES` no class is asked again.
    """
    special = tree.special
    found = [i for i in special if _TIED in tree.modules[i].__dict__] if special else []
    if not marks & DECLARES:
        return found
    for kind in kinds:
        if _class_declares(kind):
            found.extend(_positions(tree.types, kind))
    return sorted(set(found))


def _positions(items: list[Any], value: object) -> list[int]:
    """Where ``value`` sits in ``items`` (``list.index`` scans in C: a few hits in a long list are cheap)."""
    out: list[int] = []
    i = -1
    try:
        while True:
            i = items.index(value, i + 1)
            out.append(i)
    except ValueError:
        return out


@functools.lru_cache(maxsize=4096)
def _class_declares(kind: type) -> bool:
    return any("_tied_weights_keys" in k.__dict__ for k in kind.__mro__)


def instances(types: list[type]) -> Callable[[type], list[int]]:
    """``instances(cls)``: the module paths whose module is a ``cls`` (decided once per class)."""

    def instances(cls: type) -> list[int]:
        found = [kind for kind in set(types) if issubclass(kind, cls)]
        if len(found) < 2:
            return _positions(types, found[0]) if found else []
        return sorted(chain.from_iterable(_positions(types, kind) for kind in found))

    return instances


#: A module class's marks (:func:`class_marks`): what the build steps after the slots look for in a tree.
QUANTIZED_LAYER, PACKED_LAYER, FSDP1, FSDP2, DECLARES = 1, 2, 4, 8, 16

_UNMARKED: set[type] = set()  # classes found to carry no mark (a plain model's, after its first build)


def class_marks(kinds: set[type]) -> int:
    """The marks of a tree's module classes, or'ed: one subset test when every class is known unmarked.

    Each class is decided once (:func:`_class_mark`): a class's bases do not change, and a subclass of an
    FSDP class exists only once FSDP is imported. Quantized and packed layers call for
    :func:`tiegraph._served.annotate`, FSDP1 for :func:`flat_views`, FSDP2 for
    :func:`tiegraph._sharded.record_cut`, a declaring class for :func:`declaring`.
    """
    if kinds <= _UNMARKED:
        return 0
    marks = 0
    for kind in kinds:
        mark = _class_mark(kind)
        marks |= mark
        if not mark and len(_UNMARKED) < 4096:
            _UNMARKED.add(kind)
    return marks


@functools.lru_cache(maxsize=4096)
def _class_mark(kind: type) -> int:
    fsdp = sys.modules.get("torch.distributed.fsdp.fully_sharded_data_parallel")
    fsdp1 = getattr(fsdp, "FullyShardedDataParallel", None)
    return (
        (QUANTIZED_LAYER if is_quantized_layer_type(kind) else 0)
        | (PACKED_LAYER if is_packed_layer_type(kind) else 0)
        | (FSDP1 if isinstance(fsdp1, type) and issubclass(kind, fsdp1) else 0)
        | (FSDP2 if is_fsdp2_type(kind) else 0)
        | (DECLARES if _class_declares(kind) else 0)
    )


class Slots(NamedTuple):
    sizes: list[int]  # slots per non-empty dict of the walk (after dropping None entries)
    attrs: list[str]
    tensors: list[Any]  # the tensor in each slot (served tensors replace hooked modules' own)
    keys: Keys | None  # their storage keys (None: not asked for)


def slots_of(tree: Tree, keys: bool = True) -> Slots:
    """Every slot in module order, parameters before buffers, from C-level passes over chunks of dicts.

    Per chunk of the walk's non-empty dicts: sizes, names and values each in one C-level pass; ``None``
    entries (``bias=False``) are dropped (and their dicts' sizes lowered) when the values include one.
    Owners and flags are not expanded per slot: the index derives them from the dicts' numbers and sizes.
    With ``keys``, the storage keys of the chunk's tensors are taken while they are in cache (:class:`Keys`).
    """
    sizes: list[int] = []
    attrs: list[str] = []
    tensors: list[Any] = []
    found = Keys() if keys else None
    dicts = tree.dicts
    for lo in range(0, len(dicts), CHUNK):
        full = dicts[lo : lo + CHUNK]
        size = list(map(len, full))
        try:
            values = list(chain.from_iterable(map(dict.values, full)))
        except TypeError:  # a mapping that is not a dict (a scripted module's wrappers): read as dicts
            full = [dict(found.items()) for found in full]
            values = list(chain.from_iterable(map(dict.values, full)))
        kinds = set(map(type, values))
        if _NONE in kinds:  # a dict's size becomes its count of kept values (a running count's steps)
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
    return Slots(sizes, attrs, tensors, found)


def slot_tensor(module: nn.Module, attr: str) -> Any:
    """The tensor in ``module``'s slot ``attr`` (its parameter, else its buffer)."""
    found = module._parameters.get(attr)
    return module._buffers.get(attr) if found is None else found


def hooked_paths(tree: Tree) -> list[int]:
    """The module paths whose instance ``__dict__`` holds an accelerate hook (``_hf_hook``)."""
    return [i for i in tree.special if HOOK in tree.modules[i].__dict__]


def serve_hooked(
    index: Index,
    modules: list[nn.Module],
    tensors: list[Any],
    hooked: list[int],
    kinds: set[type],
    record: bool,
) -> bool:
    """Served tensors and quantized layers (:func:`tiegraph._served.annotate`), when the tree has any.

    Returns whether it ran (served tensors may then have replaced some of ``tensors``).
    """
    if hooked or any(is_quantized_layer_type(k) or is_packed_layer_type(k) for k in kinds):
        annotate(index, modules, tensors, hooked, kinds, record=record)
        return True
    return False


class Keys:
    """Storage keys of slots, added chunk by chunk (see :func:`slots_of`); the slow path's slots get None."""

    def __init__(self) -> None:
        self.keys: list[Any] = []
        self.slow: list[int] = []  # the slow path's slots (build._share reads them all at once)
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
                keys.extend(found if STORAGE_IDENTITY else [key._cdata for key in found])
                return
        self.real = True  # (conservative: the pointer merge then looks at every storage)
        base = len(keys)
        plain = list(map(PLAIN_TYPES.__contains__, map(type, part)))
        chosen = list(compress(part, plain))
        if all(map(is_, map(_LAYOUT, chosen), repeat(torch.strided))):
            try:  # the plain tensors in C-level passes, the others to the slow path
                found = list(map(_STORAGE, chosen))
            except (RuntimeError, NotImplementedError, TypeError):
                pass
            else:
                chunk: list[Any] = [None] * len(part)
                places = compress(range(len(part)), plain)
                list(map(chunk.__setitem__, places, found if STORAGE_IDENTITY else map(_CDATA, found)))
                keys.extend(chunk)
                self.slow.extend(compress(count(base), map(not_, plain)))
                return
        for s, tensor in enumerate(part, base):
            if type(tensor) in PLAIN_TYPES and tensor.layout is torch.strided:
                try:
                    keys.append(key_of(tensor.untyped_storage()))
                    continue
                except (RuntimeError, NotImplementedError, TypeError):
                    pass
            self.slow.append(s)
            keys.append(None)


def storages(tensors: list[Any]) -> Keys:
    """Storage keys of every slot, by chunks (when the tensors changed after :func:`slots_of`)."""
    found = Keys()
    for lo in range(0, len(tensors), CHUNK):
        part = tensors[lo : lo + CHUNK]
        found.add(part, set(map(type, part)))
    return found


def key_of(storage: torch.UntypedStorage) -> Any:
    return storage if STORAGE_IDENTITY else storage._cdata


def flat_views(modules: list[nn.Module], kinds: set[type]) -> FlatViews:
    """FSDP1's FlatParameter views, looked for only when an FSDP1 module type is in the tree."""
    fsdp = sys.modules.get("torch.distributed.fsdp.fully_sharded_data_parallel")
    cls = getattr(fsdp, "FullyShardedDataParallel", None)
    if not isinstance(cls, type) or not any(issubclass(kind, cls) for kind in kinds):
        return NO_FLAT_VIEWS
    return flat_param_views(modules)
