"""Before the folder exists: what ``save_pretrained`` will write for a model in memory.

The installed transformers decides, through its own code: ``config.to_json_string(use_diff=True)`` is the
``config.json`` it writes (keys equal to the class defaults are left out), and
``remove_tied_weights_from_state_dict`` drops the tied keys it drops (tensors over the same memory whose
names the model declares tied; the one kept is what ``from_pretrained`` expects). Nothing is written and no
tensor is copied; values are read only for ``check_values``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from .._text import one_line
from ..errors import TiegraphError
from ._facts import FolderFacts, facts_of

if TYPE_CHECKING:
    from torch import nn

__all__ = ["SaveError", "model_facts", "saved_keys"]


class SaveError(TiegraphError, RuntimeError):
    """``save_pretrained`` would fail for this model (the message says why, from transformers itself)."""


def saved_keys(model: nn.Module) -> dict[str, Any]:
    """The tensors ``save_pretrained`` writes for ``model``: key -> tensor (views of the model's own).

    Raises
    ------
    SaveError
        If transformers refuses to save the model (shared tensors no declaration explains, a
        ``_tied_weights_keys`` transformers cannot read).
    """
    from transformers.modeling_utils import remove_tied_weights_from_state_dict

    try:
        state = dict(model.state_dict())
        return remove_tied_weights_from_state_dict(state, model)  # type: ignore[arg-type]
    except Exception as exc:
        raise SaveError(
            f"save_pretrained would fail: {type(exc).__name__}: {one_line(exc, limit=None)}"
        ) from None


def _shares(a: Any, b: Any) -> bool:
    if a.device.type == "meta" or b.device.type == "meta":
        return bool(a.untyped_storage() is b.untyped_storage() and a.shape == b.shape)
    return bool(
        a.data_ptr() == b.data_ptr()
        and a.shape == b.shape
        and a.stride() == b.stride()
        and a.dtype == b.dtype
    )


def _equal(a: Any, b: Any, check_values: bool) -> bool | None:
    """Head vs embedding: by memory always, by value when asked (None: not compared, or meta)."""
    import torch

    if _shares(a, b):
        return True
    if not check_values or a.device.type == "meta" or b.device.type == "meta":
        return None
    return bool(a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.detach().cpu(), b.detach().cpu()))


def model_facts(model: nn.Module, *, check_values: bool = False) -> FolderFacts:
    """The facts of the folder ``model.save_pretrained(...)`` would write (nothing is written).

    Raises
    ------
    TypeError
        If ``model`` is not a transformers ``PreTrainedModel`` (only those have ``save_pretrained``).
    SaveError
        If ``save_pretrained`` would fail.
    """
    from transformers import PreTrainedModel

    if not isinstance(model, PreTrainedModel):
        raise TypeError(
            f"outcomes() of a model needs a transformers PreTrainedModel, not {type(model).__name__}; "
            "for a folder, pass its path"
        )
    config = json.loads(model.config.to_json_string(use_diff=True))
    tensors = saved_keys(model)
    shapes = {k: tuple(t.shape) for k, t in tensors.items()}
    label = f"{type(model).__name__} in memory (as save_pretrained writes it)"
    partial = facts_of(label, config, shapes)
    if not (partial.head and partial.embedding and partial.head_state == "present"):
        return partial
    equal = _equal(tensors[partial.head], tensors[partial.embedding], check_values)
    return facts_of(label, config, shapes, equal=equal)
