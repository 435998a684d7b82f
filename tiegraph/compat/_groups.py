"""Tie groups of slots straight from the build's index, split by object or by layout; accelerate's drop-in.

This is the cheap accessor the drop-ins stand on: :func:`tiegraph._build.shared_slots` (walk, slots, share
relation: the first half of a build, no input embedding, no declarations, no networkx graph), then only the
grouped slots are looked at again.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter
from itertools import accumulate, chain, compress, repeat
from typing import TYPE_CHECKING, Any, Literal

import torch

from .._build import shared_slots
from .._walk import Tree, slots_of, walk
from ..errors import ConfigurationError

if TYPE_CHECKING:
    from torch import nn

    from .._index import Index

__all__ = ["Split", "find_tied_parameters", "tie_groups"]

#: How :func:`tie_groups` splits a share component: ``None`` keeps it whole, ``"object"`` by tensor object
#: (Python identity, accelerate's notion), ``"layout"`` by (storage, offset, shape, stride, dtype).
Split = Literal["object", "layout"] | None
_SPLITS = (None, "object", "layout")


def tie_groups(
    model: nn.Module, *, parameters_only: bool = True, split: Split = None, served: bool = True
) -> list[list[str]]:
    """Groups of two or more slots that share memory, by full name, from the build's index alone.

    Parameters
    ----------
    model
        Any ``nn.Module``.
    parameters_only
        Leave buffers out (accelerate's and PEFT's helpers look at parameters only).
    split
        ``None``: every share component (the truth: views, transposes and overlaps count). ``"object"``:
        each component split into groups of one tensor object under several names. ``"layout"``: split into
        groups of identical layout (storage, storage offset, shape, stride, dtype): the ties a caller can
        re-tie by assigning one Parameter to every name without changing what any name reads.
    served
        On a model dispatched by accelerate (offload hooks), judge the tensors the hooks serve (True) or the
        tensors the module tree holds (False, what accelerate's own helpers see).

    Returns
    -------
    list of list of str
        Full names (as ``named_parameters(remove_duplicate=False)`` names them), each group in slot order,
        groups in the order of their first slot.

    Notes
    -----
    One walk of the model (the first half of :func:`tiegraph.build_graph`: no input embedding, no
    declarations, no networkx graph) plus one look at each grouped slot; measured against accelerate's
    ``find_tied_parameters`` in ``benchmarks/bench.py``.

    Examples
    --------
    >>> import torch
    >>> from tiegraph.compat import tie_groups
    >>> m = torch.nn.Module()
    >>> m.embed = torch.nn.Embedding(8, 4)
    >>> m.head = torch.nn.Linear(4, 8, bias=False)
    >>> m.proj = torch.nn.Linear(8, 4, bias=False)
    >>> m.head.weight = m.embed.weight
    >>> m.proj.weight = torch.nn.Parameter(m.embed.weight.t())
    >>> tie_groups(m)
    [['embed.weight', 'head.weight', 'proj.weight']]
    >>> tie_groups(m, split="object")
    [['embed.weight', 'head.weight']]
    """
    if split not in _SPLITS:
        raise ConfigurationError(f"split must be one of {_SPLITS}, got {split!r}")
    if split is not None and not served:
        return _split_groups(model, split, parameters_only)
    idx, _tree, tensors, _namer = shared_slots(model, serve=served)
    groups: list[list[int]] = list(idx.groups().values())
    if parameters_only:
        is_param = parameter_test(idx)
        groups = [[s for s in slots if is_param(s)] for slots in groups]
    found: list[list[int]] = []
    for slots in groups:
        if split is None:
            found.append(slots)
            continue
        parts: dict[Any, list[int]] = {}
        for s in slots:
            key = id(tensors[s]) if split == "object" else _layout(tensors[s])
            parts.setdefault(key, []).append(s)
        found.extend(part for part in parts.values())
    found = sorted((part for part in found if len(part) >= 2), key=lambda part: part[0])
    name = idx.slot_name_of
    return [[name(s) for s in part] for part in found]


def _split_groups(model: nn.Module, split: str, parameters_only: bool) -> list[list[str]]:
    """:func:`tie_groups` split by object or layout on the module tree: no share relation is needed.

    Tensors of one object or one layout read one storage, so only slots whose storage is read twice are
    looked at (a ``Counter`` over the walk's storage keys); a wrapper tensor (no storage key) groups by
    identity only, so its components are never read.
    """
    tree = walk(model)
    slots = slots_of(tree)
    tensors = slots.tensors
    keys: list[Any] = slots.keys.keys if split == "layout" and slots.keys is not None else []
    if len(keys) != len(tensors):
        keys = list(map(id, tensors))
    elif None in keys:
        keys = [key if key is not None else id(t) for key, t in zip(keys, tensors, strict=True)]
    chosen: range | list[int] = range(len(keys))
    if parameters_only:
        flags = map(_IS_PARAM.__getitem__, map((1).__and__, tree.numbers))
        chosen = list(compress(chosen, chain.from_iterable(map(repeat, flags, slots.sizes))))
    picked = list(map(keys.__getitem__, chosen))
    counts = Counter(picked)
    repeated = {key for key, n in counts.items() if n > 1}
    parts: dict[Any, list[int]] = {}
    for s in compress(chosen, map(repeated.__contains__, picked)):
        key = id(tensors[s]) if split == "object" else _layout(tensors[s])
        parts.setdefault(key, []).append(s)
    starts = list(accumulate(slots.sizes))
    return [
        [_slot_name(tree, starts, s, slots.attrs) for s in part] for part in parts.values() if len(part) > 1
    ]


_IS_PARAM = (True, False)


def _slot_name(tree: Tree, ends: list[int], s: int, attrs: list[str]) -> str:
    """Full name of slot ``s`` from the walk alone (``ends``: running sums of the slot dicts' sizes)."""
    run = bisect_right(ends, s)
    i = tree.numbers[run] >> 1
    parts = [attrs[s]]
    while tree.parents[i] >= 0:
        parts.append(tree.names[i])
        i = tree.parents[i]
    return ".".join(reversed(parts))


def parameter_test(idx: Index) -> Any:
    """``is_param(slot)`` without expanding every slot's flag (bisection over the slot runs)."""
    starts, numbers = idx.run_starts(), idx.d_number

    def is_param(s: int) -> bool:
        return not numbers[bisect_right(starts, s) - 1] & 1

    return is_param


def _layout(tensor: torch.Tensor) -> Any:
    """What a re-tie keeps: (storage, offset, shape, stride, dtype); a tensor without them: its identity."""
    try:
        storage = tensor.untyped_storage()
        pointer = storage.data_ptr()
        where = (tensor.device, pointer) if pointer else storage._cdata
        return (where, tensor.storage_offset(), tuple(tensor.shape), tuple(tensor.stride()), tensor.dtype)
    except (RuntimeError, NotImplementedError, TypeError, AttributeError):
        return id(tensor)


def find_tied_parameters(
    model: nn.Module, *, split: Split = "layout", served: bool = False, **kwargs: Any
) -> list[list[str]]:
    """accelerate's ``find_tied_parameters``, answered from memory.

    Same call shape (``model`` and ignored ``**kwargs``, which accelerate keeps for its old recursion) and
    return type: a list of groups of parameter names (as ``named_parameters(remove_duplicate=False)`` names
    them), each group sorted. accelerate's callers (``infer_auto_device_map``, ``dispatch_model``,
    ``load_checkpoint_in_model``, ``get_balanced_memory``) keep each group on one device and re-tie it by
    assigning one Parameter to every name, so by default only groups of identical layout are returned: a
    re-tie then changes nothing any name reads.

    Parameters
    ----------
    model
        The model to inspect.
    split
        ``"layout"`` (default): groups of one storage, offset, shape, stride and dtype. ``"object"``:
        groups of one Parameter object (accelerate's own answer). ``None``: every group of parameters that
        share memory, for callers that only read (a transposed or sliced tie must not be re-tied).
    served
        On a model carrying accelerate hooks, answer for the module tree as accelerate does (False) or
        for the tensors the hooks serve (True).
    **kwargs
        Ignored, as accelerate ignores them.

    Returns
    -------
    list of list of str
        Groups in the order of their first parameter; accelerate's order follows a ``set`` and varies from
        run to run.

    Notes
    -----
    Where this and accelerate differ (tests in ``tests/test_compat_peers.py``):

    - Parameters over one storage with one layout but not one object are a group here, not in accelerate:
      ``init_empty_weights()`` gives every registration of a tied weight its own meta Parameter over the
      same storage, so accelerate finds no tie and ``infer_auto_device_map`` may split the embedding and
      the head across devices.
    - With ``split=None``, transposed and sliced ties are groups too; accelerate misses them, and handing
      them to ``dispatch_model`` would make its re-tie corrupt the output, hence not the default.
    - An empty Parameter under two names is not a group (it shares no byte); accelerate groups it.

    Examples
    --------
    >>> import torch
    >>> from tiegraph.compat import find_tied_parameters
    >>> m = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4), torch.nn.Linear(4, 4))
    >>> m[1].weight = m[0].weight
    >>> m[2].weight = torch.nn.Parameter(m[0].weight.detach())  # a new Parameter over the same bytes
    >>> find_tied_parameters(m)
    [['0.weight', '1.weight', '2.weight']]
    >>> find_tied_parameters(m, split="object")
    [['0.weight', '1.weight']]
    """
    return [sorted(group) for group in tie_groups(model, split=split, served=served)]
