"""The one builder: walk the module tree once and record the index.

Data flows one way: module tree -> slots -> share relation -> index. The networkx graph and every query
are derived from the index (:mod:`tiegraph._graph`); nothing here reads tensor data or modifies the model.

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
   path (:func:`tiegraph._storage.slow_parts`, in bulk per class). A ``Counter`` finds storages read twice or
   more. Separate storage objects whose address ranges overlap on one device (``torch.from_numpy`` views of
   one array, ``frombuffer`` twice over one buffer, ``set_`` onto a slice of a storage) are merged, looked
   for only when some tensor has a non-zero data pointer (a tensor's pointer is its storage's plus its
   offset: all zero on meta) and some storage was not allocated by torch itself (not resizable).
4. **Metadata only where it decides something** (:func:`tiegraph._share.share`): only the slots on a storage
   read twice or more are candidates (6,120 of 99,962 on the 100k tree; 2 on 70B). Plain candidates (the
   common case) take ``_plain_groups``: same-object slots, then byte extents only when a storage holds two
   distinct tensors, and the groups read off :func:`~tiegraph._storage.share_components`' components;
   slow-path components, FSDP1 flat views and nested tensors take the general ``_groups``. The candidates'
   dtype/shape/device/requires_grad are read at build (so a graph answers for its tie groups after the model
   changed), and every slot's requires_grad and storage witness are captured in two C-level passes; dtype,
   shape, device and extents are read on first use by re-walking the model through a weak reference, slot by
   slot where the witness still holds, unknown elsewhere (:mod:`tiegraph._metadata`). Declarations are
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

import sys
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch import nn

from ._canonical import Namer
from ._compare import verdicts
from ._declaring import capture_declarations
from ._dispatch import record as record_pointer_aliases
from ._embedding import InputEmbedding, find_input_embedding
from ._engine_marks import record_kept, record_zero3, with_partitions
from ._graph import TieGraph
from ._index import Index
from ._metadata import capture, watch
from ._served import annotate
from ._sharded import record_cut
from ._share import share
from ._sources import as_module
from ._storage import NO_FLAT_VIEWS
from ._walk import (
    FSDP1,
    FSDP2,
    PACKED_LAYER,
    QUANTIZED_LAYER,
    Tree,
    aliased,
    class_marks,
    declaring,
    flat_views,
    hooked_paths,
    instances,
    object_numbers,
    slots_of,
    storages,
    walk,
)

if TYPE_CHECKING:
    from torch.export import ExportedProgram

__all__ = ["InputEmbedding", "build_graph"]


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
        :mod:`tiegraph._values`). Off by default: the build itself never reads tensor data.

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
    tensor data is read. The graph is a record of the model at build: requires_grad and a storage witness of
    every slot are captured then; dtype, shape, device and byte extents of slots outside tie groups are read
    on first use (exports, the audit) from slots that still hold what they held at build, and are unknown for
    the others (see the concepts page, "A graph is a record").

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
    (index, tree, tensors, namer), kinds, marks = _shared(model, True, True)
    modules = tree.modules
    if marks & FSDP2:
        record_cut(index, modules, tensors)  # which FSDP2 call holds each slot
    if "deepspeed" in sys.modules or "megatron.core" in sys.modules:
        record_zero3(index, tensors)  # each ZeRO-3 parameter's ds_id
        record_kept(index, modules, tensors)  # ties DeepSpeed pipelines and Megatron-core keep themselves
    find_input_embedding(index, modules, tensors, namer, input_embedding)
    capture_declarations(index, modules, declaring(tree, kinds, marks), namer.root, instances(tree.types))
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
    ``record`` (a graph that outlives this call) every slot's requires_grad and storage witness are
    captured (:func:`tiegraph._metadata.capture`).
    """
    return _shared(model, serve, record)[0]


def _shared(model: nn.Module, serve: bool, record: bool) -> tuple[Shared, set[type], int]:
    """:func:`shared_slots`, with the tree's set of module classes and their :func:`class_marks`.

    A plain model's checks for what the steps past the slots look for (hooked modules, quantized and
    packed layer classes, FSDP1 flat views, ZeRO-3 partitions; FSDP2 cuts and declaring classes in
    :func:`build_graph`) come down to one subset test of its classes and the walk's empty ``special``.
    """
    tree = walk(model)
    index = Index(lazy=True)
    index.m_parent, index.m_name = tree.parents, tree.names
    index.m_type = types = tree.types
    if aliased(tree.modules):
        index.objects_distinct = False
        index.m_object = object_numbers(tree.modules)
    kinds = set(types)
    marks = class_marks(kinds)
    hooked = hooked_paths(tree) if serve and tree.special else []
    slots = slots_of(tree)
    index.d_number, index.d_size, index.s_attr = tree.numbers, slots.sizes, slots.attrs
    found = slots.keys
    if hooked or marks & (QUANTIZED_LAYER | PACKED_LAYER):  # served tensors may replace some slots' own
        annotate(index, tree.modules, slots.tensors, hooked, kinds, record=True)
        found = storages(slots.tensors)
    elif found is None:
        found = storages(slots.tensors)
    namer = Namer(index)
    namer.attach()
    flat = flat_views(tree.modules, kinds) if marks & FSDP1 else NO_FLAT_VIEWS
    if "deepspeed" in sys.modules:
        flat = with_partitions(flat, slots.tensors)  # ZeRO-3 placeholders
    with torch._C.DisableTorchFunctionSubclass():  # subclass metadata reads skip __torch_function__
        share(index, slots.tensors, flat, found)
        if record:  # what the graph must still answer for after the model changes
            capture(index, slots.tensors, found, hooked, flat)
    if record and index.same_as:  # (one object under several names: what accelerate's hooks key ties by)
        record_pointer_aliases(index, tree.modules, slots.tensors)
    return Shared(index, tree, slots.tensors, namer), kinds, marks
