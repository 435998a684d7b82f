"""Declared ties (``_tied_weights_keys``, ``config.tie_word_embeddings``): placeholder until issue 3."""

from __future__ import annotations

from torch import nn

from ._index import Index


def read_declarations(index: Index, objects: list[nn.Module], root: int) -> None:
    """Record every declaration in ``index.declared`` (filled by the declared-ties work)."""
