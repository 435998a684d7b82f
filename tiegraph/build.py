"""The one builder: walk the module tree once and record the index.

Data flows one way: module tree -> slots -> share relation -> index. The networkx graph and every query
are derived from the index (:mod:`tiegraph.graph`, :mod:`tiegraph.queries`); nothing here reads tensor data
or modifies the model.
"""

from __future__ import annotations

import difflib
import sys
import warnings
from itertools import compress
from operator import itemgetter
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ._index import Index
from .errors import CycleError, PathNotFoundError
from .naming import Resolver, is_model_root_type, join
from .storage import (
    _NO_FLAT_VIEWS,
    Extent,
    FlatViews,
    _local,
    flat_param_views,
    share_components,
    strided_extent,
)

if TYPE_CHECKING:
    from .graph import TieGraph

__all__ = ["build_graph"]

InputEmbedding = nn.Module | torch.Tensor | str | None


def build_graph(model: nn.Module, *, input_embedding: InputEmbedding = None) -> TieGraph:
    """Build the parameter-sharing graph of a model, wrapped or not.

    Parameters
    ----------
    model
        Any ``nn.Module``: a transformers model, a PEFT model, ``torch.compile``/DDP/FSDP-wrapped models, or
        a user's own module tree.
    input_embedding
        The input embedding, if the model's own ``get_input_embeddings()`` should not be asked: a module of
        the model, its full or canonical path, or (for models whose embedding is a bare tensor) a tensor.

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
    One pass over the module tree, O(slots) Python work plus a sort per storage; no tensor data is read.

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
    from .graph import TieGraph

    if not isinstance(model, nn.Module):
        kind = type(model)
        raise TypeError(f"build_graph expects a torch.nn.Module, got {kind.__module__}.{kind.__qualname__}")
    index, objects, object_number, tensors = _walk(model)
    from .deployed import annotate

    annotate(index, objects, tensors)  # accelerate hooks: served tensors and placement; quantized layers
    root = index.m_path.index(index.extra["model_root"]) if index.extra["model_root"] is not None else -1
    _share(index, tensors, flat_param_views(objects))
    _find_input_embedding(index, objects, object_number, tensors, root, input_embedding)
    from .declared import read_declarations

    read_declarations(index, objects, root)
    return TieGraph(index)


def _walk(model: nn.Module) -> tuple[Index, list[nn.Module], dict[int, int], list[torch.Tensor]]:
    """Visit every module path (aliases included) in ``named_modules(remove_duplicate=False)`` order.

    Records paths, parents, module objects and slots only, one tuple each (transposed at the end: one
    append per module and per slot is what keeps this close to a bare ``named_parameters`` walk);
    canonical names are left to :class:`_Namer`.
    """
    index = Index()
    module_rows: list[tuple[str, int, str, int, int]] = []  # path, parent, name, object, first slot
    slot_rows: list[tuple[str, int, str, bool, int]] = []  # name, owner, attr, is parameter, tensor
    add_module, add_slot = module_rows.append, slot_rows.append
    types: list[type] = []
    objects: list[nn.Module] = []
    object_number: dict[int, int] = {}
    tensors: list[torch.Tensor] = []
    tensor_number: dict[int, int] = {}

    stack: list[tuple[Any, str, int, str, int]] = [(model, "", -1, "", 0)]
    pop, push = stack.pop, stack.append
    while stack:
        module, path, parent, name, depth = pop()
        key = id(module)
        number = object_number.get(key)
        if number is None:
            number = object_number[key] = len(objects)
            objects.append(module)
            types.append(type(module))
        i = len(module_rows)
        add_module((path, parent, name, number, len(slot_rows)))
        dot = path + "." if path else ""
        params = module._parameters
        if params:
            for attr, tensor in params.items():
                if tensor is not None:
                    t = tensor_number.get(id(tensor))
                    if t is None:
                        t = tensor_number[id(tensor)] = len(tensors)
                        tensors.append(tensor)
                    add_slot((dot + attr, i, attr, True, t))
        buffers = module._buffers
        if buffers:
            for attr, tensor in buffers.items():
                if tensor is not None:
                    t = tensor_number.get(id(tensor))
                    if t is None:
                        t = tensor_number[id(tensor)] = len(tensors)
                        tensors.append(tensor)
                    add_slot((dot + attr, i, attr, False, t))
        children = module._modules
        if children:
            # a path longer than the number of distinct modules seen must repeat one: a cycle
            if depth >= len(objects):
                _raise_cycle(module_rows, objects, i)
            depth += 1
            for child_name, child in reversed(children.items()):
                if child is not None:
                    push((child, dot + child_name, i, child_name, depth))
    index.m_path, index.m_parent, index.m_name, index.m_object, index.m_slot0 = _columns(module_rows, 5)
    index.s_name, index.s_owner, index.s_attr, index.s_param, index.s_tensor = _columns(slot_rows, 5)
    index.m_cls = [types[n].__name__ for n in index.m_object]
    _Namer(index, types).attach()
    return index, objects, object_number, tensors


def _columns(rows: list[Any], count: int) -> list[list[Any]]:
    """Transpose rows of ``count`` fields into lists (C-level; ``zip(*rows)`` is twice as slow on 100k)."""
    return [list(map(itemgetter(k), rows)) for k in range(count)]


def _raise_cycle(rows: list[tuple[str, int, str, int, int]], objects: list[nn.Module], i: int) -> None:
    """Find the module that is its own ancestor on the path to row ``i`` and name it."""
    seen: dict[int, str] = {}
    chain = []
    while i >= 0:
        chain.append(i)
        i = rows[i][1]
    for row in reversed(chain):  # from the root down: the first repeat is the cycle's entry
        path, _, _, number, _ = rows[row]
        if number in seen:
            raise CycleError(
                f"the module tree has a cycle: {path!r} is the same {type(objects[number]).__name__} object "
                f"as its ancestor {seen[number] or '<root>'!r}; remove the cycle (torch's own "
                "named_modules would recurse forever on it)"
            )
        seen[number] = path


class _Namer:
    """Canonical names by wrapper type, computed on demand for the places a query asks about."""

    def __init__(self, index: Index, types: list[type]) -> None:
        self.index = index
        self.types = types  # per distinct module object
        self.resolver = Resolver()
        n = len(index.m_path)
        self.raw: list[tuple[str, str, bool, bool] | None] = [None] * n  # canon, belongs, chained, drop-next
        self.prefix = ""
        plist = sys.modules.get("torch.nn.utils.parametrize")
        self.parametrization_list = getattr(plist, "ParametrizationList", None)

    def attach(self) -> None:
        index = self.index
        index._m_canon = [None] * len(index.m_path)
        index._m_belongs = [None] * len(index.m_path)
        index._s_canon = [None] * len(index.s_name)
        index.namer = self.module_names
        index.slot_namer = self.slot_name
        root = self.model_root()
        index.extra["model_root"] = index.m_path[root] if root >= 0 else None
        self.root = root
        if root >= 0:
            self.prefix = self.raw_names(root)[0]

    def model_root(self) -> int:
        """The outermost non-wrapper module that is a transformers model or has ``get_input_embeddings``."""
        index, rule_for = self.index, self.resolver.rule_for
        verdict: dict[type, bool] = {}
        best, best_depth = -1, 1 << 30
        for number, kind in enumerate(self.types):
            ok = verdict.get(kind)
            if ok is None:
                ok = verdict[kind] = not rule_for(kind).is_wrapper and is_model_root_type(kind)
            if ok:
                i = index.m_object.index(number)  # its first path
                canon = self.raw_names(i)[0]
                depth = canon.count(".") + 1 if canon else 0
                if depth < best_depth or (depth == best_depth and i < best):
                    best, best_depth = i, depth
        return best

    def raw_names(self, i: int) -> tuple[str, str, bool, bool]:
        """Names with wrapper segments removed, before dropping the prefix above the model root."""
        raw = self.raw
        found = raw[i]
        if found is not None:
            return found
        index = self.index
        chain = []
        j = i
        while j >= 0 and raw[j] is None:
            chain.append(j)
            j = index.m_parent[j]
        for j in reversed(chain):
            parent = index.m_parent[j]
            if parent < 0:
                raw[j] = ("", "", False, False)
                continue
            pcanon, pbelongs, chained, pdrop = raw[parent]  # type: ignore[misc]
            name = index.m_name[j]
            rule = self.resolver.rule_for(self.types[index.m_object[parent]])
            action = rule.actions.get(name)
            if pdrop or action == "drop":
                raw[j] = (pcanon, pbelongs, chained, False)
            elif action == "drop-next":
                raw[j] = (pcanon, pbelongs, chained, True)
            elif (
                chained
                or rule.adapters
                or (name == "parametrizations" and issubclass(self.types[index.m_object[j]], nn.ModuleDict))
            ):
                raw[j] = (join(pcanon, name), pbelongs, True, False)
            else:
                canon = join(pcanon, name)
                raw[j] = (canon, canon, False, False)
        return raw[i]  # type: ignore[return-value]

    def strip(self, name: str) -> str:
        prefix = self.prefix
        if not prefix:
            return name
        if name == prefix:
            return ""
        if name.startswith(prefix) and name[len(prefix)] == ".":
            return name[len(prefix) + 1 :]
        return name

    def module_names(self, index: Index, i: int) -> tuple[str, str]:
        canon, belongs, _, _ = self.raw_names(i)
        return self.strip(canon), self.strip(belongs)

    def slot_name(self, index: Index, s: int) -> str:
        owner = index.s_owner[s]
        attr = index.s_attr[s]
        plist = self.parametrization_list
        if (
            attr == "original"
            and plist is not None
            and issubclass(self.types[index.m_object[owner]], plist)
            and index.m_parent[owner] >= 0
            and index.m_parent[index.m_parent[owner]] >= 0
        ):
            # torch.nn.utils.parametrize keeps the real tensor at <module>.parametrizations.<name>.original
            return join(index.canon_of(index.m_parent[index.m_parent[owner]]), index.m_name[owner])
        return join(index.canon_of(owner), attr)


def _share(index: Index, tensors: list[torch.Tensor], flat: FlatViews = _NO_FLAT_VIEWS) -> None:
    """Storage ids, byte extents and the share components of every distinct tensor.

    ``flat`` (FSDP1): a parameter viewing into a ``FlatParameter`` keeps its unsharded shape, so its slice
    being empty on this rank does not make it share nothing; the FlatParameter itself holds every parameter
    of its unit and is left out of the share relation (it would merge them all into one group).
    """
    storage_number: dict[object, int] = {}
    dtypes: dict[torch.dtype, tuple[str, int]] = {}  # name, itemsize
    device_names: dict[torch.device, str] = {}
    st_pointer, st_device, st_nbytes = index.st_pointer, index.st_device, index.st_nbytes
    extents: dict[int, Extent] = {}  # only the strided (non-contiguous) ones
    repeated: set[int] = set()  # storages read by two or more tensors
    rows: list[tuple[str, str, torch.Size, bool, int, int, int]] = []
    add = rows.append
    plain = (torch.Tensor, nn.Parameter)
    slow: list[int] = []  # not plain tensors: wrapper subclasses, sparse, nested (see tiegraph._tensors)
    for number, tensor in enumerate(tensors):
        local = tensor if type(tensor) in plain else _local(tensor)
        device = local.device
        name = device_names.get(device)
        if name is None:
            name = device_names[device] = str(device)
        dtype = local.dtype
        known = dtypes.get(dtype)
        if known is None:
            known = dtypes[dtype] = (str(dtype).removeprefix("torch."), local.element_size())
        dname, itemsize = known
        try:
            storage = local.untyped_storage()
            pointer = storage.data_ptr()  # wrapper subclasses may have a storage that cannot be read
            shape = tensor.shape  # nested tensors raise here
        except (RuntimeError, NotImplementedError, TypeError, AttributeError):
            slow.append(number)
            add((name, dname, torch.Size(), tensor.requires_grad, -1, 0, 0))
            continue
        if type(tensor) not in plain:
            slow.append(number)
        key: object = (name, pointer) if pointer else storage._cdata
        st = storage_number.get(key)
        if st is None:
            st = storage_number[key] = len(st_pointer)
            st_pointer.append(pointer)
            st_device.append(name)
            st_nbytes.append(storage.nbytes())
        else:
            repeated.add(st)
        nbytes = int(local.nbytes)
        if not nbytes:  # empty: reads no byte
            add((name, dname, shape, tensor.requires_grad, st, 0, 0))
        elif local.is_contiguous():
            offset = int(local.storage_offset()) * itemsize
            add((name, dname, shape, tensor.requires_grad, st, offset, offset + nbytes))
        else:
            offset = int(local.storage_offset()) * itemsize
            extent = extents[number] = strided_extent(local, offset, itemsize)
            add((name, dname, shape, tensor.requires_grad, st, offset, extent.stop))
    columns = _columns(rows, 7)
    index.t_device, index.t_dtype, index.t_shape, index.t_grad = columns[:4]
    index.t_storage, index.t_start, index.t_stop = columns[4:]
    t_storage, t_start, t_stop = index.t_storage, index.t_start, index.t_stop
    # only storages read by two or more (non-empty) tensors can hold a share; the others cost nothing more
    buckets: dict[int, list[int]] = {st: [] for st in sorted(repeated)}
    for number in compress(range(len(tensors)), map(repeated.__contains__, t_storage)):
        if t_stop[number]:
            buckets[t_storage[number]].append(number)
    if flat.shapes or flat.containers:
        _flat_params(index, tensors, flat, buckets)
    if slow:
        from ._tensors import slow_path

        roots, edges = slow_path(index, tensors, slow, buckets, extents, storage_number, dtypes)
    else:
        roots, edges = share_components(len(tensors), buckets, t_start, t_stop, extents)
    index.t_root = roots
    first: list[int] = [-1] * len(tensors)
    shares = index.shares
    for s, t in enumerate(index.s_tensor):
        if first[t] < 0:
            first[t] = s
        elif t_stop[t] or 0 not in index.t_shape[t]:  # (FSDP1 gives an empty local slice its full shape)
            shares.append((first[t], s, "same"))
        # else: an empty tensor shares with nothing, not even itself under another name
    for i, j, how in edges:
        shares.append((first[i], first[j], how))
    index.fill_slot_roots()


def _flat_params(
    index: Index, tensors: list[torch.Tensor], flat: FlatViews, buckets: dict[int, list[int]]
) -> None:
    """Give FSDP1's sharded views their unsharded shapes; take FlatParameters out of the share relation."""
    containers = []
    for number, tensor in enumerate(tensors):
        key = id(tensor)
        shape = flat.shapes.get(key)
        if shape is not None:
            index.t_shape[number] = torch.Size(shape)
        if key in flat.containers:
            members = buckets.get(index.t_storage[number], [])
            if number in members:
                members.remove(number)
            containers.append(index.s_name[index.s_tensor.index(number)])
    if containers:
        warnings.warn(
            f"{', '.join(containers)}: FSDP1 FlatParameter(s), counted as containers of the parameters of "
            "their units; ties are seen only among parameters registered as their own slots, which FSDP1 "
            "does with use_orig_params=True (or use FSDP2 fully_shard)",
            stacklevel=4,
        )


def _find_input_embedding(
    index: Index,
    objects: list[nn.Module],
    object_number: dict[int, int],
    tensors: list[torch.Tensor],
    root: int,
    given: InputEmbedding,
) -> None:
    found: object = given
    if given is None:
        holder = objects[index.m_object[root]] if root >= 0 else objects[0]
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
        number = object_number.get(id(found))
        if number is not None:
            _select_module(index, index.m_object.index(number))
            return
        raise PathNotFoundError(
            f"the input embedding {type(found).__name__} is not a submodule of the model; pass a module that "
            "the model holds, or its path"
        )
    elif isinstance(found, torch.Tensor):
        target = id(found)
        numbers = {i for i, t in enumerate(tensors) if id(t) == target}
        slots = [s for s, t in enumerate(index.s_tensor) if t in numbers]
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
    module = index.m_object.index(index.m_object[module])
    index.ie_module = module
    index.ie_slots = list(index.slots_under(module))


def _module_by_name(index: Index, name: str) -> int:
    """A module path index from a full path, else a canonical path (the outermost match)."""
    for names in (index.m_path, index.m_canon, index.m_belongs):
        for i, candidate in enumerate(names):
            if candidate == name:
                return i
    message = f"input_embedding={name!r} names no module of the model"
    raise PathNotFoundError(_not_found(message, name, index.m_path, index.m_canon))


def _not_found(message: str, name: str, *choices: list[str]) -> str:
    """The message, followed by the names nearest to ``name`` (always some, when there are names)."""
    pool = sorted({c for names in choices for c in names if c})
    close = difflib.get_close_matches(name, pool, n=3, cutoff=0.6)
    tail = name.rsplit(".", 1)[-1]
    close += [c for c in pool if c.rsplit(".", 1)[-1] == tail and c not in close][: 3 - len(close)]
    if not close:
        close = difflib.get_close_matches(name, pool, n=3, cutoff=0.0)
    if close:
        return f"{message}; nearest: {', '.join(repr(c) for c in close)}"
    return f"{message}; the model has no named modules or slots"
