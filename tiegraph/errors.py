"""Exceptions raised by tiegraph.

Every error raised for bad input is a :class:`TiegraphError` (or a ``TypeError`` for an argument that is not
an ``nn.Module``), and its message names the offending path or value and says what to do next.
"""

from __future__ import annotations

__all__ = [
    "AcceptanceError",
    "CheckpointError",
    "ConfigurationError",
    "CycleError",
    "GraphFormatError",
    "NoInputEmbeddingError",
    "PathNotFoundError",
    "RenderError",
    "TiegraphError",
]


class TiegraphError(Exception):
    """Base class of every error tiegraph raises on purpose."""


class PathNotFoundError(TiegraphError, LookupError):
    """A module or slot path given by the caller names nothing in the model."""


class CycleError(TiegraphError):
    """The module tree contains a cycle (a module registered under one of its own descendants)."""


class NoInputEmbeddingError(TiegraphError):
    """The input embedding could not be found; pass ``input_embedding=`` to name it."""


class RenderError(TiegraphError, RuntimeError):
    """A picture could not be rendered (pygraphviz missing or Graphviz failed); DOT still works."""


class GraphFormatError(TiegraphError, ValueError):
    """Data given to :meth:`tiegraph.TieGraph.from_json` is not a graph written by ``to_json``.

    Also raised by :func:`tiegraph.export.lint` for a networkx graph that breaks one of the graph's
    invariants.
    """


class ConfigurationError(TiegraphError, ValueError):
    """An option given to a tiegraph function is not one it accepts; the message lists the accepted ones."""


class AcceptanceError(TiegraphError, ValueError):
    """An acceptance names no finding kind, or a ``[tool.tiegraph]`` section cannot be read."""


class CheckpointError(TiegraphError):
    """A checkpoint directory's files cannot be read (a safetensors header or the shard index)."""
