"""The input embedding: asked of the model (``get_input_embeddings()``) or given, as slots of the index."""

from __future__ import annotations

from itertools import compress, count, repeat
from operator import is_
from typing import Any

import torch
from torch import nn

from ._canonical import Namer
from ._index import Index
from ._text import not_found
from .errors import PathNotFoundError

InputEmbedding = nn.Module | torch.Tensor | str | None


def find_input_embedding(
    index: Index,
    modules: list[nn.Module],
    tensors: list[Any],
    namer: Namer,
    given: InputEmbedding,
) -> None:
    found: object = given
    if given is None:
        if len(namer.roots) > 1:
            names = ", ".join(f"{index.path_of(i)!r} ({type(modules[i]).__name__})" for i in namer.roots)
            index.ie_note = (
                f"the model holds {len(namer.roots)} model roots side by side: {names}; pass "
                "input_embedding= (a module, its path, or a tensor) to name the input embedding"
            )
            return
        holder = modules[namer.root] if namer.root >= 0 else modules[0]
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
        path = next(compress(count(), map(is_, modules, repeat(found))), -1)  # (stops at the first)
        if path < 0:
            raise PathNotFoundError(
                f"the input embedding {type(found).__name__} is not a submodule of the model; pass a module "
                "that the model holds, or its path"
            )
        _select_module(index, path)
    elif isinstance(found, torch.Tensor):
        slots = list(compress(range(len(tensors)), map(is_, tensors, repeat(found))))
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
    module = index.first_path_of(module)
    index.ie_module = module
    index.ie_slots = list(index.slots_under(module))


def _module_by_name(index: Index, name: str) -> int:
    """A module path index from a full path, else a canonical path (the outermost match)."""
    for names in (index.m_path, index.m_canon, index.m_belongs):
        for i, candidate in enumerate(names):
            if candidate == name:
                return i
    message = f"input_embedding={name!r} names no module of the model"
    raise PathNotFoundError(not_found(message, name, index.m_path, index.m_canon))
