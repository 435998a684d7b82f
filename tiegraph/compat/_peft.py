"""PEFT's ``_get_module_names_tied_with_embedding``, answered from memory."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..build import build_graph
from ..errors import NoInputEmbeddingError
from ._groups import _parameter_test

if TYPE_CHECKING:
    from torch import nn

    from .._index import Index
    from ..graph import TieGraph

__all__ = ["get_module_names_tied_with_embedding"]


def get_module_names_tied_with_embedding(model: nn.Module, *, config_false_wins: bool = True) -> list[str]:
    """PEFT's ``_get_module_names_tied_with_embedding``, answered from memory.

    The modules whose weight shares memory with the input embedding's, named as PEFT's callers look them
    up. The model is unwrapped as PEFT does (a ``PeftModel`` to its base model, a tuner to its ``.model``) and
    the answer is the current path of each module, under that model, whose own parameter shares memory with
    a parameter of ``get_input_embeddings()`` (directly or through its tie group): ``lm_head`` for a tied
    Llama, ``lm_head.base_layer`` once a LoRA layer wraps the head, never an adapter's own submodule.

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
        tg = build_graph(model)
    except NoInputEmbeddingError:
        return []
    return _tied_module_paths(tg)


def _tied_module_paths(tg: TieGraph) -> list[str]:
    """Owners of parameters sharing with the input embedding that hold the model module's own weight."""
    idx = tg._index
    if idx.ie_module < 0 and not idx.ie_slots:
        return []
    inside = set(idx.ie_slots)
    groups = idx.groups()
    is_param = _parameter_test(idx)
    found: set[str] = set()
    for root in {idx.root_of_slot(s) for s in idx.ie_slots}:
        for s in groups.get(root, ()):
            if s in inside or not is_param(s):
                continue
            owner = idx.owner_of(s)
            # an adapter's own tensor (lora_A, trainable_tokens_delta) is named under its layer: skip it
            if idx.slot_canon_of(s) != f"{idx.belongs_of(owner)}.{idx.s_attr[s]}".lstrip("."):
                continue
            if idx.ie_module < 0 or not _under_object(idx, owner, idx.object_of(idx.ie_module)):
                found.add(idx.path_of(owner))
    return sorted(found)


def _under_object(idx: Index, i: int, obj: int) -> bool:
    """Whether module path ``i`` or one above it is the module object ``obj`` (the embedding's aliases)."""
    while i >= 0:
        if idx.object_of(i) == obj:
            return True
        i = idx.m_parent[i]
    return False
