"""The slow path in bulk: every slow slot's leaves at once, torchao classes read in C-level passes.

:func:`expand` gives, for all the builder's slow slots in one call, what :func:`tiegraph._tensors.leaves`
gives for one (see :mod:`tiegraph._tensors` for the rule and why the bulk reading pays off).
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Container, Sequence
from itertools import chain, compress, repeat
from operator import attrgetter, gt, is_, is_not, not_
from types import GetSetDescriptorType
from typing import Any, NamedTuple

import torch

from ._quantization import quantization
from ._tensors import PLAIN, PLAIN_SET, SPARSE, leaves

__all__ = ["Expanded", "expand"]

_Block = tuple[list[int], list[Sequence[Any]], list[Any]]  # positions, a column per data name, storages
_Columns = tuple[list[int], list[Any], list[Any]]  # owners, leaves, storages


class Expanded:
    """The leaves of many tensors at once (:func:`expand`), as flat columns.

    ``owners[i]`` is the input position leaf ``i`` belongs to (ascending; each input's leaves in the order
    :func:`leaves` gives them), ``storages[i]`` its untyped storage (None when it cannot be read),
    ``unknown`` the input positions that cannot be followed (no leaves, or a reason :func:`leaves` would
    give) and whose leaves are left out, ``labels[n]`` the :func:`quantization` of input ``n`` (None for
    the positions the caller said it has labelled, unless the class alone decides the label).

    ``read`` holds the same storages as ``storages`` in no particular order, ready at once; ``owners``,
    ``tensors`` and ``storages`` are put in input order on first access (the builder asks for them only
    when some storage may be read twice, which on a quantized model is rare).
    """

    def __init__(
        self,
        blocks: list[_Block],
        columns: list[_Columns],
        unknown: list[int],
        labels: list[str | None],
    ) -> None:
        self._blocks, self._columns = blocks, columns
        self.unknown, self.labels = unknown, labels
        self._ordered: _Columns | None = None

    @property
    def read(self) -> list[Any]:
        """Every leaf's storage (None when it cannot be read), in no particular order."""
        parts = [block[2] for block in self._blocks] + [column[2] for column in self._columns]
        return parts[0] if len(parts) == 1 else list(chain.from_iterable(parts))

    @property
    def owners(self) -> list[int]:
        return self._order()[0]

    @property
    def tensors(self) -> list[torch.Tensor]:
        return self._order()[1]

    @property
    def storages(self) -> list[Any]:
        return self._order()[2]

    def _order(self) -> _Columns:
        if self._ordered is None:
            columns = [*map(_interleave, self._blocks), *self._columns]
            self._ordered = _merge(columns)
        return self._ordered


def _interleave(block: _Block) -> _Columns:
    """A torchao block as flat columns in input order (each tensor's leaves in the order of its names).

    The block's storages are its columns' one column after the other.
    """
    positions, columns, storages = block
    n = len(positions)
    split = [storages[k * n : (k + 1) * n] for k in range(len(columns))]
    return (
        list(chain.from_iterable(zip(*repeat(positions, len(columns)), strict=True))),
        list(chain.from_iterable(zip(*columns, strict=True))),
        list(chain.from_iterable(zip(*split, strict=True))),
    )


def _merge(columns: list[_Columns]) -> _Columns:
    """Flat columns of several groups as one, back in input order (stable: each input's leaf order kept)."""
    if not columns:
        return [], [], []
    if len(columns) == 1:
        return columns[0]
    owners = list(chain.from_iterable(c[0] for c in columns))
    found = list(chain.from_iterable(c[1] for c in columns))
    storages = list(chain.from_iterable(c[2] for c in columns))
    if any(map(gt, owners, owners[1:])):
        order = sorted(range(len(owners)), key=owners.__getitem__)
        owners = list(map(owners.__getitem__, order))
        found = list(map(found.__getitem__, order))
        storages = list(map(storages.__getitem__, order))
    return owners, found, storages


def expand(tensors: Sequence[torch.Tensor], labelled: Container[int] = ()) -> Expanded:
    """:func:`leaves`, their storages and :func:`quantization` of many tensors, decided per class.

    The answers are those of :func:`leaves` and :func:`quantization` tensor by tensor; what is cheaper is how
    they are found. The tensors are grouped by class. A torchao class whose ``__tensor_flatten__`` is
    torchao's own (``TorchAOBaseTensor``: names from ``tensor_data_names`` plus the
    ``optional_tensor_data_names`` that are not None) is read in C-level passes over its group
    (:func:`_torchao_group`): how each name resolves is decided once per class, the values come from the
    instance dicts (or the class, or the attribute itself when a descriptor decides it), and one real
    ``__tensor_flatten__`` call on the group's first tensor checks that torchao's rule still is the one
    read here. A tensor whose values are not all plain, strided, non-nested tensors with a readable storage
    goes tensor by tensor. Nothing is kept between calls: a class that changes its names or its
    ``__tensor_flatten__`` is read as it is now. A class without ``__tensor_flatten__`` (bitsandbytes'
    ``Params4bit``, ``Int8Params``) is its own leaf when, in C-level passes over its group, no tensor is
    functional, sparse or nested and every storage's data pointer can be read. Every other class goes
    tensor by tensor through :func:`leaves`.

    Examples
    --------
    >>> import torch
    >>> base = torch.zeros(4)
    >>> found = expand([torch.sparse_coo_tensor(torch.tensor([[0, 1]]), base[:2], (4,)), base])
    >>> found.owners, [t is base for t in found.tensors], found.unknown, found.labels
    ([0, 0, 1], [False, False, True], [], [None, None])
    """
    kinds = list(map(type, tensors))
    distinct = dict.fromkeys(kinds)
    if len(distinct) == 1:
        groups = {kinds[0]: list(range(len(kinds)))} if kinds else {}
    else:
        groups = {kind: [] for kind in distinct}
        for n, kind in enumerate(kinds):
            groups[kind].append(n)
    stock = _torchao_flatten()
    labels: list[str | None] = [None] * len(kinds)
    blocks: list[_Block] = []
    columns: list[_Columns] = []
    rest: list[int] = []
    for kind, positions in groups.items():
        group = list(map(tensors.__getitem__, positions)) if len(groups) > 1 else list(tensors)
        label = _class_label(kind)
        if label is not None:  # one string per class, shared by its slots
            if len(groups) == 1:
                labels = [label] * len(kinds)
            else:
                deque(map(labels.__setitem__, positions, repeat(label)), maxlen=0)
        else:
            for n, tensor in zip(positions, group, strict=True):
                if n not in labelled:  # (a label the caller has already: not asked again)
                    labels[n] = quantization(tensor)
        if kind in PLAIN or not _read_group(kind, group, positions, stock, (blocks, columns, rest)):
            rest.extend(positions)
    unknown: list[int] = []
    if rest:
        columns.append(_one_by_one(tensors, sorted(rest), unknown))
    return Expanded(blocks, columns, unknown, labels)


def _read_group(
    kind: type,
    group: list[torch.Tensor],
    positions: list[int],
    stock: Any,
    into: tuple[list[_Block], list[_Columns], list[int]],
) -> bool:
    """Read one class's group in C-level passes into (blocks, columns, rest); False: tensor by tensor."""
    blocks, columns, rest = into
    flatten = getattr(kind, "__tensor_flatten__", None)
    if flatten is None:  # a subclass with ordinary storage (bitsandbytes' Params4bit, ...)
        held = _storage_group(group)
        if held is not None:
            columns.append((positions, group, held))
            return True
    elif flatten is stock:
        done = _torchao_group(kind, group, positions)
        if isinstance(done, _Partial):
            columns.append(done.found)
            rest.extend(done.left)
            return True
        if done is not None:
            blocks.append(done)
            return True
    return False


def _one_by_one(tensors: Sequence[torch.Tensor], rest: list[int], unknown: list[int]) -> _Columns:
    """:func:`leaves` of the tensors at ``rest``, as columns; those it cannot read go to ``unknown``."""
    owners: list[int] = []
    found: list[torch.Tensor] = []
    storages: list[Any] = []
    for n in rest:
        got = leaves(tensors[n])
        if not got.tensors or got.unknown:
            unknown.append(n)
            continue
        owners.extend(repeat(n, len(got.tensors)))
        found.extend(got.tensors)
        storages.extend(map(_storage_or_none, got.tensors))
    return owners, found, storages


_STORAGE = torch.Tensor.untyped_storage
_IS_NESTED = attrgetter("is_nested")
_LAYOUT = attrgetter("layout")
_DATA_PTR = torch.UntypedStorage.data_ptr
_AO_NAMES = (
    "tensor_data_names",
    "tensor_attribute_names",
    "optional_tensor_data_names",
    "optional_tensor_attribute_names",
)


def _torchao_flatten() -> Any:
    """torchao's own ``TorchAOBaseTensor.__tensor_flatten__`` (None when torchao is not imported)."""
    module = sys.modules.get("torchao.utils")
    base = getattr(module, "TorchAOBaseTensor", None)
    return base.__dict__.get("__tensor_flatten__") if isinstance(base, type) else None


def _class_label(kind: type) -> str | None:
    """:func:`quantization` of every tensor of class ``kind`` when the class alone decides it (torchao)."""
    if kind in PLAIN or kind.__module__.partition(".")[0] != "torchao":
        return None
    return f"torchao.{kind.__name__}"


def _storage_or_none(tensor: torch.Tensor) -> Any:
    try:
        return tensor.untyped_storage()
    except (RuntimeError, NotImplementedError, TypeError):
        return None


def _storage_group(group: list[torch.Tensor]) -> list[Any] | None:
    """Storages of tensors of one subclass without ``__tensor_flatten__``, each its own one leaf; or None.

    :func:`_collect`'s rule for such a tensor, in C-level passes over the group: not functional (no
    ``elem``), a layout that is neither sparse nor nested, a storage whose data pointer can be read. When a
    tensor of the group fails one of these, the whole group goes tensor by tensor (None).
    """
    try:
        if any(map(hasattr, group, repeat("elem"))) or any(map(torch._is_functional_tensor, group)):
            return None
        if not set(map(_LAYOUT, group)).isdisjoint(SPARSE) or any(map(_IS_NESTED, group)):
            return None
        storages = list(map(_STORAGE, group))
        deque(map(_DATA_PTR, storages), maxlen=0)
    except (RuntimeError, NotImplementedError, TypeError, AttributeError):
        return None
    return storages


class _Partial(NamedTuple):
    """A torchao group read in part: flat columns of the tensors read, and the positions left for leaves()."""

    found: _Columns
    left: list[int]


# how ``getattr(tensor, name)`` resolves for a class (decided once per class, per call of _torchao_group)
_INSTANCE, _DEFAULT, _BASE, _DESCRIPTOR = range(4)
_TENSOR_BASE = torch._C.TensorBase
_GETATTRIBUTE: Any = object.__getattribute__  # (torch.Tensor's: attribute lookup as instance dicts see it)


def _resolve(kind: type, name: str) -> tuple[int, Any]:
    """How ``getattr(t, name)`` is answered for a ``kind`` instance ``t`` (ordinary attribute lookup).

    ``_INSTANCE``: from ``t.__dict__`` only (no class in the MRO defines it: missing there means
    AttributeError); ``_DEFAULT``: the instance dict, else this class value (a plain value, no descriptor);
    ``_BASE``: a C-level getter of ``torch._C.TensorBase`` (``dtype``, ``shape``, ...) that reads the tensor
    itself and cannot fail; ``_DESCRIPTOR``: anything else (a property, a method), which only calling
    ``getattr`` answers.
    """
    for klass in kind.__mro__:
        if name in klass.__dict__:
            found = klass.__dict__[name]
            break
    else:
        return _INSTANCE, None
    getter = type(found)
    if hasattr(getter, "__set__") or hasattr(getter, "__delete__"):
        base = klass is _TENSOR_BASE and isinstance(found, GetSetDescriptorType)
        return (_BASE if base else _DESCRIPTOR), found
    return (_DESCRIPTOR if hasattr(getter, "__get__") else _DEFAULT), found


def _column(
    name: str, resolved: tuple[int, Any], dicts: list[dict[str, Any]], group: list[torch.Tensor]
) -> list[Any]:
    """``getattr(t, name)`` for every ``t`` of ``group`` in one C-level pass (raises as ``getattr`` would).

    ``resolved`` is :func:`_resolve`'s answer for the group's class.
    """
    how, found = resolved
    if how == _INSTANCE:
        try:
            return list(map(dict.__getitem__, dicts, repeat(name)))
        except KeyError:
            raise AttributeError(name) from None
    if how == _DEFAULT:
        return list(map(dict.get, dicts, repeat(name), repeat(found)))
    return list(map(attrgetter(name), group))


def _torchao_group(kind: type, group: list[torch.Tensor], positions: list[int]) -> _Block | _Partial | None:
    """Leaves of torchao tensors of one class with torchao's own ``__tensor_flatten__``, in C-level passes.

    The rule read here is ``TorchAOBaseTensor.__tensor_flatten__``'s: the names are ``tensor_data_names``
    and the ``optional_tensor_data_names`` whose value is not None; it raises when the class lacks
    ``tensor_data_names`` or ``tensor_attribute_names`` or an optional or attribute value is missing;
    :func:`_collect` then follows each name's value that is a tensor. How each name resolves is decided once
    (:func:`_resolve`); the name lists must be plain class values that no instance overrides. Values are
    read one C-level pass per name, from the instance dicts (``vars``; torchao's own classes) where they
    live there, else as ``getattr`` answers. (One ``itemgetter`` pass over the dicts for every name is
    about as fast but holds a row tuple per tensor at once: half the slow path's peak memory.)

    Returns, in the common case (every value a plain, strided, non-nested tensor with a readable storage),
    a block: the positions, one tensor column per data name that is set, and their storages column after
    column (:class:`Expanded` puts them in input order only when asked). A group some of whose tensors must
    be read tensor by tensor gives a :class:`_Partial`; None sends the whole group tensor by tensor.
    """
    named = _name_lists(kind, group)
    if named is None:
        return None
    lists, dicts = named
    required = list(lists["tensor_data_names"])
    optional = list(lists.get("optional_tensor_data_names", ()))
    attributes = [*lists["tensor_attribute_names"], *lists.get("optional_tensor_attribute_names", ())]
    try:
        columns = _data_columns(kind, group, dicts, (*required, *optional), attributes)
        if columns is None:
            return None
        names, _ = kind.__tensor_flatten__(group[0])  # type: ignore[attr-defined]
    except Exception:  # (then torchao's __tensor_flatten__ or leaves() fails the same way on some tensor)
        return None
    firsts = [column[0] for column in columns[len(required) :]]
    if list(names) != [
        *required,
        *(name for name, value in zip(optional, firsts, strict=True) if value is not None),
    ]:
        return None  # torchao's rule is not the one read here (another version): tensor by tensor
    # one column per data name, in the order of the names; a column of None (an unset optional) is dropped
    columns = [column for column in columns if any(map(is_not, column, repeat(None)))]
    if not columns:
        return None  # no tensor holds a byte: leaves() says so tensor by tensor
    found = list(chain.from_iterable(columns))
    if set(map(type, found)) <= PLAIN_SET:
        try:
            storages = list(map(_STORAGE, found))
        except (RuntimeError, NotImplementedError, TypeError, AttributeError):
            pass
        else:
            if not any(map(_IS_NESTED, found)):
                return positions, columns, storages
    return _mixed(_interleave((positions, columns, [None] * len(found))), positions)


def _name_lists(kind: type, group: list[torch.Tensor]) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """A torchao class's name lists and its tensors' instance dicts, or None: read tensor by tensor.

    The name lists must be plain class values that no instance overrides, and the instance attributes must
    live in the ordinary instance dict.
    """
    if getattr(kind, "__getattr__", None) is not None or kind.__getattribute__ is not _GETATTRIBUTE:
        return None  # names an instance answers for itself: ask __tensor_flatten__ tensor by tensor
    lists: dict[str, Any] = {}
    for name in _AO_NAMES:
        how, found = _resolve(kind, name)
        if how == _DEFAULT:
            lists[name] = found
        elif how != _INSTANCE:
            return None  # a name list a descriptor answers: it may differ per tensor
    if "tensor_data_names" not in lists or "tensor_attribute_names" not in lists:
        return None
    if not isinstance(_resolve(kind, "__dict__")[1], GetSetDescriptorType):
        return None  # instance attributes that do not live in the ordinary instance dict
    dicts = list(map(vars, group))
    for name in _AO_NAMES:
        if any(map(dict.__contains__, dicts, repeat(name))):
            return None  # an instance carries a name list of its own: tensor by tensor
    return lists, dicts


def _data_columns(
    kind: type,
    group: list[torch.Tensor],
    dicts: list[dict[str, Any]],
    data: tuple[str, ...],
    attributes: list[str],
) -> list[Sequence[Any]] | None:
    """One column of values per data name (None: an attribute is missing, as torchao's flatten would raise).

    Attribute values are read, and dropped, only because torchao's flatten reads them.
    """
    resolved = [_resolve(kind, name) for name in (*data, *attributes)]
    hows = [how for how, _ in resolved]
    for name, how in zip(attributes, hows[len(data) :], strict=True):
        if how == _INSTANCE and not all(map(dict.__contains__, dicts, repeat(name))):
            return None  # missing: torchao's __tensor_flatten__ raises, leaves() says so
        if how == _DESCRIPTOR:
            deque(map(attrgetter(name), group), maxlen=0)
    return [_column(name, got, dicts, group) for name, got in zip(data, resolved, strict=False)]


def _mixed(read: _Columns, positions: list[int]) -> _Partial:
    """A torchao group whose values are not all plain tensors with a readable storage, read in part.

    The tensors whose values all are such tensors are read here; the others (a wrapper inside, a nested
    tensor, an unreadable storage, no tensor at all) are left for leaves().
    """
    owners, found, _ = read
    bad: set[int] = set()
    is_tensor = list(map(isinstance, found, repeat(torch.Tensor)))  # other values are not followed
    if not all(is_tensor):
        found = list(compress(found, is_tensor))
        owners = list(compress(owners, is_tensor))
    if not set(map(type, found)) <= PLAIN_SET:  # a wrapper inside a wrapper: leaves() follows it
        bad.update(compress(owners, map(not_, map(PLAIN_SET.__contains__, map(type, found)))))
    bad.update(set(positions).difference(owners))  # no tensor value at all: leaves() says why
    storages = list(map(_storage_or_none, found))
    bad.update(compress(owners, map(is_, storages, repeat(None))))
    if any(map(_IS_NESTED, found)):
        bad.update(compress(owners, map(_IS_NESTED, found)))
    good = list(map(not_, map(bad.__contains__, owners)))
    kept = (list(compress(owners, good)), list(compress(found, good)), list(compress(storages, good)))
    return _Partial(kept, sorted(bad))
