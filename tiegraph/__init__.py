"""tiegraph: the truth about weight tying in PyTorch models.

Build the parameter-sharing graph of any ``nn.Module``, wrapped or not, and ask it which modules really
share memory with the input embedding, which slots form tie groups, and how the declared ties compare.

>>> import torch, tiegraph
>>> m = torch.nn.Module()
>>> m.embed = torch.nn.Embedding(8, 4)
>>> m.head = torch.nn.Linear(4, 8, bias=False)
>>> m.head.weight = m.embed.weight
>>> tiegraph.tied_to_input_embedding(m, input_embedding="embed")
['head']
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .errors import (
    ConfigurationError,
    CycleError,
    GraphFormatError,
    NoInputEmbeddingError,
    PathNotFoundError,
    RenderError,
    TiegraphError,
)

if TYPE_CHECKING:
    from torch import nn

    from . import naming
    from ._build import InputEmbedding, build_graph
    from ._declared import DeclaredTie
    from ._deployed import check_device_map
    from ._diff import TieDiff, diff
    from ._finding import Finding
    from ._graph import TieGraph
    from .naming import register_wrapper
    from .sharding import check_shard_plan

#: Where each public name lives. They are imported on first use (PEP 562), so ``import tiegraph`` and the
#: command line's ``--version``, ``--help`` and usage errors do not wait for torch and transformers.
_LAZY = {
    "Finding": "._finding",
    "InputEmbedding": "._build",
    "build_graph": "._build",
    "DeclaredTie": "._declared",
    "check_device_map": "._deployed",
    "TieDiff": "._diff",
    "diff": "._diff",
    "TieGraph": "._graph",
    "register_wrapper": ".naming",
    "check_shard_plan": ".sharding",
}


def __getattr__(name: str) -> Any:
    """A public name or submodule (``tiegraph.testing``), imported on first use (then kept here)."""
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name], __name__), name)
    elif name.startswith("__"):
        raise AttributeError(f"module 'tiegraph' has no attribute {name!r}")
    else:
        try:
            value = import_module(f".{name}", __name__)
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module 'tiegraph' has no attribute {name!r}") from None
    globals()[name] = value
    return value


__all__ = [
    "ConfigurationError",
    "CycleError",
    "DeclaredTie",
    "Finding",
    "GraphFormatError",
    "NoInputEmbeddingError",
    "PathNotFoundError",
    "RenderError",
    "TieDiff",
    "TieGraph",
    "TiegraphError",
    "build_graph",
    "check_device_map",
    "check_shard_plan",
    "diff",
    "naming",
    "register_wrapper",
    "tied_to_input_embedding",
]

__version__ = "0.1.0"


def __dir__() -> list[str]:
    """The public names only: none of this module's own imports."""
    return sorted([*__all__, "__version__"])


def tied_to_input_embedding(
    model: nn.Module, *, input_embedding: InputEmbedding = None, full_paths: bool = False
) -> list[str]:
    """Canonical paths of the modules that really share memory with the input embedding.

    Answers PEFT's question (which modules are tied to the input embedding?) from what is shared, not
    from ``_tied_weights_keys`` or ``config.tie_word_embeddings``, in canonical names. Not a drop-in: PEFT's
    callers want the current paths under the base model and a False flag to win; that is
    :func:`tiegraph.compat.get_module_names_tied_with_embedding`.

    Parameters
    ----------
    model
        Any ``nn.Module``, wrapped or not (PEFT, ``torch.compile``, DDP, FSDP, your own wrapper).
    input_embedding
        The input embedding if the model's own ``get_input_embeddings()`` should not be asked.
    full_paths
        Name the modules as ``model`` names them (wrapper segments kept), as
        :meth:`tiegraph.TieGraph.tied_to_input_embedding` does.

    Returns
    -------
    list of str
        Sorted canonical module paths (``["lm_head"]`` for a tied Llama, ``[]`` when untied), or full paths.

    Raises
    ------
    NoInputEmbeddingError
        If the input embedding cannot be found; pass ``input_embedding=``.

    Examples
    --------
    A head tied by a transposed view (no object identity, so accelerate's identity check misses it):

    >>> import torch, tiegraph
    >>> m = torch.nn.Module()
    >>> m.embed = torch.nn.Embedding(8, 4)
    >>> m.proj = torch.nn.Linear(8, 4, bias=False)
    >>> m.proj.weight = torch.nn.Parameter(m.embed.weight.t())
    >>> tiegraph.tied_to_input_embedding(m, input_embedding=m.embed)
    ['proj']
    """
    from ._build import build_graph

    return build_graph(model, input_embedding=input_embedding).tied_to_input_embedding(full_paths=full_paths)
