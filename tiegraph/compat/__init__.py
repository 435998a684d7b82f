"""Drop-in answers for the tie helpers of PEFT, accelerate and safetensors.

Each function here keeps the peer's call shape and return type and answers from memory (tiegraph's share
relation), so a peer or a user can put it in the helper's place:

============================================================  =============================================
peer helper                                                   drop-in
============================================================  =============================================
``peft.utils.other._get_module_names_tied_with_embedding``    :func:`get_module_names_tied_with_embedding`
``accelerate.utils.find_tied_parameters``                     :func:`find_tied_parameters`
``safetensors.torch._find_shared_tensors``                    :func:`find_shared_tensors`
============================================================  =============================================

Their default mode follows the policy the peer's own tests assert where it is deliberate (PEFT: a False
``tie_word_embeddings`` wins), and returns only what the peer's callers can act on (accelerate re-ties
each group to one Parameter, so groups of one layout); a switch answers from memory alone. Each
docstring lists where it and the peer differ, and ``docs/peers.md`` lists the tests that show it.
:func:`patched` makes the installed PEFT and accelerate use these in your own process.

This module and what it stands on import with torch alone (no transformers, networkx or pydot), so a
peer can call or vendor it without a dependency cycle.

>>> import torch
>>> from tiegraph.compat import find_shared_tensors
>>> w = torch.zeros(4, 3)
>>> [sorted(group) for group in find_shared_tensors({"w": w, "wt": w.t(), "other": torch.zeros(2)})]
[['w', 'wt'], ['other']]
"""

from __future__ import annotations

from ._groups import Split, find_tied_parameters, tie_groups
from ._patch import patched
from ._peft import get_module_names_tied_with_embedding
from ._safetensors import find_shared_tensors

__all__ = [
    "Split",
    "find_shared_tensors",
    "find_tied_parameters",
    "get_module_names_tied_with_embedding",
    "patched",
    "tie_groups",
]
