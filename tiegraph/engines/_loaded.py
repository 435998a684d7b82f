"""A checkpoint's model as ``from_pretrained`` leaves it: the transformers rule applied to a built model.

``tiegraph diff`` and anything else that compares checkpoints compare what loading them gives. The model
built on meta from a folder's ``config.json`` ties what the config says; the installed transformers' rule
(:mod:`tiegraph.engines._transformers5` or :mod:`~tiegraph.engines._transformers4`, the one implementation)
then says whether the head stays tied after the files are loaded, and :func:`as_loaded` unties it where
``from_pretrained`` would.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ._facts import folder_facts
from ._flags import installed_version
from ._outcome import EngineOutcome, predict

if TYPE_CHECKING:
    from torch import nn

__all__ = ["as_loaded", "transformers_outcome"]


def transformers_outcome(folder: str | os.PathLike[str], *, check_values: bool = False) -> EngineOutcome:
    """What the installed transformers' ``from_pretrained`` puts in the head of ``folder``."""
    from . import RULES

    major = (installed_version("transformers") or "5").split(".", 1)[0]
    rule = RULES["transformers-4" if major == "4" else "transformers-5"]
    return predict(rule, folder_facts(folder, check_values=check_values))


def _tied(model: nn.Module) -> bool:
    head, embedding = model.get_output_embeddings(), model.get_input_embeddings()  # type: ignore[operator]
    return (
        head is not None
        and embedding is not None
        and getattr(head, "weight", None) is not None
        and head.weight is getattr(embedding, "weight", None)
    )


def as_loaded(model: nn.Module, folder: str | os.PathLike[str], *, check_values: bool = False) -> str:
    """Untie ``model``'s head where ``from_pretrained`` would leave it apart; a line saying what was decided.

    ``model`` is the model built (on meta) from ``folder``'s ``config.json``; it is changed in place: a
    head the config ties but the files save with different values gets its own tensor, and leaves
    ``all_tied_weights_keys`` as transformers 5 does. Without ``check_values`` a folder saving both copies
    cannot be decided (its values decide); the line says so and the model is left as the config builds it.
    """
    import torch

    if not hasattr(model, "get_output_embeddings") or not _tied(model):
        return ""
    outcome = transformers_outcome(folder, check_values=check_values)
    facts_state = folder_facts(folder).head_state
    if facts_state == "present" and not check_values:
        return (
            f"{folder} saves the head and the embedding, which the config ties: whether from_pretrained "
            "ties them depends on their values (--check-values compares them)"
        )
    if outcome.head != "folder-head":
        return ""
    head = model.get_output_embeddings()  # type: ignore[operator]
    path = next(name for name, module in model.named_modules() if module is head)
    head.weight = torch.nn.Parameter(torch.empty_like(head.weight), requires_grad=head.weight.requires_grad)
    keys = getattr(model, "all_tied_weights_keys", None)
    if isinstance(keys, dict):  # from_pretrained pops the pair it does not tie
        for target in [t for t in keys if t == f"{path}.weight"]:
            keys.pop(target)
    return (
        f"{folder}: {outcome.rule_version} loads the saved head apart from the embedding ({outcome.verdict})"
    )
