"""The one builder: walk the module tree once and record the index.

Data flows one way: module tree -> slots -> share relation -> index. The networkx graph and every query
are derived from the index (:mod:`tiegraph.graph`, :mod:`tiegraph.queries`); nothing here reads tensor data
or modifies the model.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING

import torch
from torch import nn

from ._index import Index
from .errors import CycleError, PathNotFoundError
from .naming import Resolver, is_model_root_type, join
from .storage import StorageInfo, share_components, tensor_storage

if TYPE_CHECKING:
    from .graph import TieGraph

__all__ = ["build_graph"]

InputEmbedding = nn.Module | torch.Tensor | str | None

_EXIT = object()


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
        raise TypeError(f"build_graph expects a torch.nn.Module, got {type(model).__module__}.{type(model).__qualname__}")
    index, objects, tensors, root = _walk(model)
    _share(index, tensors)
    _find_input_embedding(index, objects, tensors, root, input_embedding)
    from .declared import read_declarations

    read_declarations(index, objects, root)
    return TieGraph(index)


def _walk(model: nn.Module) -> tuple[Index, list[nn.Module], list[torch.Tensor], int]:
    """Visit every module path (aliases included) in ``named_modules(remove_duplicate=False)`` order."""
    index = Index()
    m_path, m_canon, m_belongs, m_cls = index.m_path, index.m_canon, index.m_belongs, index.m_cls
    m_parent, m_name, m_object = index.m_parent, index.m_name, index.m_object
    s_name, s_owner, s_attr, s_param, s_tensor = (
        index.s_name,
        index.s_owner,
        index.s_attr,
        index.s_param,
        index.s_tensor,
    )
    objects: list[nn.Module] = []
    object_number: dict[int, int] = {}
    tensors: list[torch.Tensor] = []
    tensor_number: dict[int, int] = {}
    chained: list[bool] = []  # belongs to an ancestor (adapter/parametrization chain)
    drop_next: list[bool] = []
    resolver = Resolver()
    root_type_cache: dict[type, bool] = {}
    root = -1
    root_depth = 1 << 30
    on_path: dict[int, str] = {}
    parametrization_lists: list[int] = []
    parametrize_list = _parametrization_list_type()

    stack: list[tuple[object, str, int, str]] = [(model, "", -1, "")]
    while stack:
        module, path, parent, name = stack.pop()
        if module is _EXIT:
            del on_path[parent]
            continue
        assert isinstance(module, nn.Module)
        key = id(module)
        if key in on_path:
            ancestor = on_path[key]
            raise CycleError(
                f"the module tree has a cycle: {path!r} is the same {type(module).__name__} object as its "
                f"ancestor {ancestor or '<root>'!r}; remove the cycle (torch's own named_modules would "
                "recurse forever on it)"
            )
        i = len(m_path)
        kind = type(module)
        if parent < 0:
            canon, belongs, chain, dropn = "", "", False, False
        else:
            pcanon, pbelongs = m_canon[parent], m_belongs[parent]
            prule = resolver.rule_for(type(objects[m_object[parent]]))
            action = prule.actions.get(name)
            chain = chained[parent]
            dropn = False
            if drop_next[parent] or action == "drop":
                canon, belongs = pcanon, pbelongs
            elif action == "drop-next":
                canon, belongs, dropn = pcanon, pbelongs, True
            elif chain or prule.adapters or (name == "parametrizations" and isinstance(module, nn.ModuleDict)):
                canon, belongs, chain = join(pcanon, name), pbelongs, True
            else:
                canon = belongs = join(pcanon, name)
        m_path.append(path)
        m_canon.append(canon)
        m_belongs.append(belongs)
        m_cls.append(kind.__name__)
        m_parent.append(parent)
        m_name.append(name)
        chained.append(chain)
        drop_next.append(dropn)
        number = object_number.get(key)
        if number is None:
            number = object_number[key] = len(objects)
            objects.append(module)
        m_object.append(number)
        if parametrize_list is not None and isinstance(module, parametrize_list):
            parametrization_lists.append(i)

        is_root = root_type_cache.get(kind)
        if is_root is None:
            is_root = root_type_cache[kind] = not resolver.rule_for(kind).is_wrapper and is_model_root_type(kind)
        if is_root:
            depth = canon.count(".") + 1 if canon else 0
            if depth < root_depth:
                root, root_depth = i, depth

        for attr, tensor in module._parameters.items():
            if tensor is not None:
                _add_slot(path, attr, tensor, True, i, s_name, s_owner, s_attr, s_param, s_tensor, tensors, tensor_number)
        for attr, tensor in module._buffers.items():
            if tensor is not None:
                _add_slot(path, attr, tensor, False, i, s_name, s_owner, s_attr, s_param, s_tensor, tensors, tensor_number)

        children = module._modules
        if children:
            on_path[key] = path
            stack.append((_EXIT, "", key, ""))  # type: ignore[arg-type]
            for child_name, child in reversed(children.items()):
                if child is not None:
                    stack.append((child, join(path, child_name) if path else child_name, i, child_name))

    _canonical_names(index, root, parametrization_lists)
    return index, objects, tensors, root


def _add_slot(
    path: str,
    attr: str,
    tensor: torch.Tensor,
    is_param: bool,
    owner: int,
    s_name: list[str],
    s_owner: list[int],
    s_attr: list[str],
    s_param: list[bool],
    s_tensor: list[int],
    tensors: list[torch.Tensor],
    tensor_number: dict[int, int],
) -> None:
    key = id(tensor)
    number = tensor_number.get(key)
    if number is None:
        number = tensor_number[key] = len(tensors)
        tensors.append(tensor)
    s_name.append(f"{path}.{attr}" if path else attr)
    s_owner.append(owner)
    s_attr.append(attr)
    s_param.append(is_param)
    s_tensor.append(number)


def _parametrization_list_type() -> type | None:
    import sys

    parametrize = sys.modules.get("torch.nn.utils.parametrize")
    found = getattr(parametrize, "ParametrizationList", None)
    return found if isinstance(found, type) else None


def _canonical_names(index: Index, root: int, parametrization_lists: list[int]) -> None:
    """Drop the prefix above the model root, then name every slot canonically."""
    if root >= 0 and index.m_canon[root]:
        prefix = index.m_canon[root]
        dotted = prefix + "."
        cut = len(dotted)
        for names in (index.m_canon, index.m_belongs):
            for i, name in enumerate(names):
                if name == prefix:
                    names[i] = ""
                elif name.startswith(dotted):
                    names[i] = name[cut:]
    m_canon = index.m_canon
    index.s_canon = [join(m_canon[owner], attr) for owner, attr in zip(index.s_owner, index.s_attr)]
    if parametrization_lists:
        # torch.nn.utils.parametrize keeps the real tensor at <module>.parametrizations.<name>.original
        lists = set(parametrization_lists)
        for s, owner in enumerate(index.s_owner):
            if owner in lists and index.s_attr[s] == "original":
                holder = index.m_parent[index.m_parent[owner]]
                if holder >= 0:
                    index.s_canon[s] = join(m_canon[holder], index.m_name[owner])


def _share(index: Index, tensors: list[torch.Tensor]) -> None:
    """Storage ids, byte extents and the share components of every distinct tensor."""
    infos: list[StorageInfo] = []
    storage_number: dict[object, int] = {}
    dtype_names: dict[torch.dtype, str] = {}
    for tensor in tensors:
        info = tensor_storage(tensor)
        infos.append(info)
        if info.key[0] == "object":  # type: ignore[index]
            index.t_storage.append(-1)
        else:
            number = storage_number.get(info.key)
            if number is None:
                number = storage_number[info.key] = len(index.st_id)
                index.st_id.append(_storage_label(info.key))
                index.st_device.append(info.device)
                index.st_nbytes.append(info.nbytes)
            index.t_storage.append(number)
        extent = info.extent
        index.t_start.append(extent.start if extent is not None else 0)
        index.t_stop.append(extent.stop if extent is not None else 0)
        dtype = tensor.dtype
        name = dtype_names.get(dtype)
        if name is None:
            name = dtype_names[dtype] = str(dtype).removeprefix("torch.")
        index.t_dtype.append(name)
        index.t_shape.append(tuple(tensor.shape))
        index.t_device.append(info.device)
        index.t_grad.append(bool(tensor.requires_grad))
    roots, edges = share_components(infos)
    index.t_root = roots
    first: list[int] = [-1] * len(tensors)
    shares = index.shares
    for s, t in enumerate(index.s_tensor):
        if first[t] < 0:
            first[t] = s
        else:
            shares.append((first[t], s, "same"))
    for i, j, how in edges:
        shares.append((first[i], first[j], how))


def _storage_label(key: object) -> str:
    assert isinstance(key, tuple)
    if key[0] == "storage":
        return f"meta:{key[1]:#x}"
    return f"{key[0]}:{key[1]:#x}"


def _find_input_embedding(
    index: Index,
    objects: list[nn.Module],
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
                f"{type(holder).__name__}.get_input_embeddings() returned None; pass input_embedding= to name it"
            )
            return
    if isinstance(found, str):
        _select_module(index, _module_by_name(index, found))
    elif isinstance(found, nn.Module):
        target = id(found)
        for i, number in enumerate(index.m_object):
            if id(objects[number]) == target:
                _select_module(index, i)
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
    index.ie_module = module
    prefix = index.m_path[module]
    dotted = prefix + "."
    index.ie_slots = [
        s for s, owner in enumerate(index.s_owner) if not prefix or (p := index.m_path[owner]) == prefix or p.startswith(dotted)
    ]


def _module_by_name(index: Index, name: str) -> int:
    """A module path index from a full path, else a canonical path (the outermost match)."""
    for names in (index.m_path, index.m_canon, index.m_belongs):
        for i, candidate in enumerate(names):
            if candidate == name:
                return i
    raise PathNotFoundError(_not_found(f"input_embedding={name!r} names no module of the model", name, index.m_path, index.m_canon))


def _not_found(message: str, name: str, *choices: list[str]) -> str:
    pool = sorted({c for names in choices for c in names if c})
    close = difflib.get_close_matches(name, pool, n=3, cutoff=0.5)
    if not close:
        tail = name.rsplit(".", 1)[-1]
        close = [c for c in pool if c.rsplit(".", 1)[-1] == tail][:3]
    if close:
        return f"{message}; nearest: {', '.join(repr(c) for c in close)}"
    return f"{message}; it has {len(pool)} named modules"
