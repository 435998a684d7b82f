"""PEFT's ``_get_module_names_tied_with_embedding``, answered from memory."""

from __future__ import annotations

from itertools import compress
from typing import Any, NamedTuple

from torch import nn

from .._canonical import Namer
from .._extent import extents
from .._index import Index
from .._storage import share_components
from .._walk import STORAGE_IDENTITY, aliased, object_numbers, slots_of, walk
from ._groups import parameter_test

__all__ = ["get_module_names_tied_with_embedding"]


def get_module_names_tied_with_embedding(model: nn.Module, *, config_false_wins: bool = True) -> list[str]:
    """PEFT's ``_get_module_names_tied_with_embedding``, answered from memory.

    The modules whose weight shares memory with the input embedding's, named as PEFT's callers look them
    up. The model is unwrapped as PEFT does (a ``PeftModel`` to its base model, a tuner to its ``.model``) and
    the answer is the current path of each module, under that model, whose own parameter shares memory with
    a parameter of ``get_input_embeddings()`` (directly or through its tie group): ``lm_head`` for a tied
    Llama, still ``lm_head`` once a LoRA or trainable-tokens layer wraps the head (the wrapper is the module
    PEFT's callers match and replace), never an adapter's own submodule.

    Parameters
    ----------
    model
        A transformers model, a ``PeftModel`` or a PEFT tuner, or any module with ``get_input_embeddings``.
    config_false_wins
        When the model's top-level ``config.tie_word_embeddings`` is ``False``, answer ``[]`` whatever the
        memory holds (PEFT's policy, asserted by its tests since peft#2944). ``False``: answer from memory
        alone.

    Returns
    -------
    list of str
        Sorted module paths; ``[]`` when nothing is tied or no input embedding can be found.

    Notes
    -----
    Where this and PEFT differ (PEFT reads ``_tied_weights_keys`` and the config, not memory; tests in
    ``tests/test_compat_peers.py``):

    - A checkpoint whose head was loaded apart (untied, flag True): PEFT says ``['lm_head']``, here ``[]``.
    - A tie no ``_tied_weights_keys`` declares (a composite without a root declaration, a user's module):
      PEFT says ``[]``, here the tied module.
    - Two models side by side under a root whose ``get_input_embeddings`` returns one of them: PEFT mixes
      their declarations up; here only what shares the returned embedding's memory counts.
    - A model without ``get_input_embeddings`` gives ``[]`` here; PEFT raises ``ValueError`` when its
      declarations are a dict.
    - With ``config_false_wins=False``, a model tied in memory with the flag False names its tied modules.
    - A wrapped head is named by its wrapper (``lm_head``), as PEFT's list-form answer does; PEFT's dict
      form names the inner ``lm_head.base_layer``, which its trainable-tokens step then wraps again.

    The input embedding is what ``get_input_embeddings()`` returns, as PEFT asks it. Only slots on one of
    its storages, or holding one of its tensor objects, are compared (exact bytes), so a wrapper tensor
    elsewhere (a quantized layer) is not unpacked: that keeps the cost at or below PEFT's own.

    Examples
    --------
    >>> import torch
    >>> from tiegraph.compat import get_module_names_tied_with_embedding
    >>> class Tiny(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.embed = torch.nn.Embedding(8, 4)
    ...         self.head = torch.nn.Linear(4, 8, bias=False)
    ...         self.head.weight = self.embed.weight  # tied, and declared nowhere
    ...     def get_input_embeddings(self):
    ...         return self.embed
    >>> get_module_names_tied_with_embedding(Tiny())
    ['head']
    """
    found: Any = model
    if hasattr(found, "get_base_model"):  # PEFT's own unwrapping: the names its callers use are under it
        found = found.get_base_model()
    if hasattr(found, "tuner_layer_cls"):
        found = found.model
    model = found
    config = getattr(model, "config", None)
    if config_false_wins and getattr(config, "tie_word_embeddings", None) is False:
        return []
    try:
        embedding = found.get_input_embeddings()
    except (AttributeError, NotImplementedError):
        return []
    if not isinstance(embedding, nn.Module):
        return []
    return _tied_module_paths(model, embedding)


class _Walked(NamedTuple):
    idx: Index  # module tree and slot runs, named on demand (no share relation)
    tensors: list[Any]
    keys: list[Any]  # storage key per slot (None: a wrapper tensor, compared by identity)
    inside: list[bool]  # per module path: the embedding (at any of its paths) or under it


def _walked(model: nn.Module, embedding: nn.Module) -> _Walked:
    tree = walk(model)
    slots = slots_of(tree)
    idx = Index(lazy=True)
    idx.m_parent, idx.m_name, idx.m_type = tree.parents, tree.names, tree.types
    if aliased(tree.modules):
        idx.objects_distinct = False
        idx.m_object = object_numbers(tree.modules)
    idx.d_number, idx.d_size, idx.s_attr = tree.numbers, slots.sizes, slots.attrs
    Namer(idx).attach()
    inside: list[bool] = []
    for module, parent in zip(tree.modules, tree.parents, strict=True):
        inside.append(module is embedding or (parent >= 0 and inside[parent]))
    keys = slots.keys.keys if slots.keys is not None else [None] * len(slots.tensors)
    if not STORAGE_IDENTITY:  # (storage objects are keys only where torch returns one per storage)
        keys = [key if key is None else key._cdata for key in keys]
    return _Walked(idx, slots.tensors, keys, inside)


def _tied_module_paths(model: nn.Module, embedding: nn.Module) -> list[str]:
    """Owners of parameters sharing memory with the embedding's that hold the model module's own weight.

    Only slots on one of the embedding's storages (or holding one of its tensor objects) can share with
    it, so the share relation is computed over those alone; wrapper tensors elsewhere are not followed.
    """
    w = _walked(model, embedding)
    idx, tensors, keys = w.idx, w.tensors, w.keys
    starts = idx.run_starts()
    own = [
        s
        for r, number in enumerate(idx.d_number)
        if w.inside[number >> 1]
        for s in range(starts[r], starts[r + 1])
    ]
    if not own:
        return []
    own_keys = {keys[s] for s in own} - {None}
    own_ids = {id(tensors[s]) for s in own}
    near = set(compress(range(len(keys)), map(own_keys.__contains__, keys)))
    near.update(compress(range(len(keys)), map(own_ids.__contains__, map(id, tensors))))
    near.difference_update(own)
    tied = _sharing(sorted(near), own, tensors, keys)
    is_param = parameter_test(idx)
    found: set[str] = set()
    for s in tied:
        owner = idx.owner_of(s)
        if not is_param(s) or w.inside[owner]:
            continue
        # an adapter's own tensor (lora_A, trainable_tokens_delta) is named under its layer: skip it
        place = idx.belongs_of(owner)
        if idx.slot_canon_of(s) == f"{place}.{idx.s_attr[s]}".lstrip("."):
            # named by the outermost module at that place: a wrapped head is its wrapper (``lm_head``), the
            # module PEFT's callers match and replace
            while idx.m_parent[owner] >= 0 and idx.belongs_of(idx.m_parent[owner]) == place:
                owner = idx.m_parent[owner]
            found.add(idx.path_of(owner))
    return sorted(found)


def _sharing(near: list[int], own: list[int], tensors: list[Any], keys: list[Any]) -> list[int]:
    """The slots of ``near`` in a share component with a slot of ``own`` (exact bytes, by storage)."""
    slots = own + near
    objects = {id(tensors[s]) for s in own}
    read = [n for n, s in enumerate(slots) if keys[s] is not None]  # (a storage to read extents on)
    starts, stops = [0] * len(slots), [0] * len(slots)
    found = extents([tensors[slots[n]] for n in read])
    strided = {read[i]: e for i, e in found[2].items()}
    buckets: dict[Any, list[int]] = {}
    for n, start, stop in zip(read, found[0], found[1], strict=True):
        starts[n], stops[n] = start, stop
        if stop:  # (an empty tensor reads no byte: in no bucket)
            buckets.setdefault(keys[slots[n]], []).append(n)
    roots, _ = share_components(len(slots), buckets, starts, stops, strided)
    wanted = {roots[n] for n in range(len(own)) if stops[n]}
    return [
        s
        for n, s in enumerate(near, start=len(own))
        if id(tensors[s]) in objects or (stops[n] and roots[n] in wanted)
    ]
