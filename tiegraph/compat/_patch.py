"""Opting in: make the installed PEFT, accelerate and safetensors call tiegraph's drop-ins, then restore."""

from __future__ import annotations

import contextlib
import functools
import importlib
import sys
from collections.abc import Callable, Iterator
from typing import Any

from ._groups import Split, find_tied_parameters
from ._peft import get_module_names_tied_with_embedding
from ._safetensors import find_shared_tensors

__all__ = ["patched"]

# (package to import, module defining the helper, helper name)
_PEFT = ("peft", "peft.utils.other", "_get_module_names_tied_with_embedding")
_ACCELERATE = ("accelerate", "accelerate.utils.modeling", "find_tied_parameters")
_SAFETENSORS = ("safetensors.torch", "safetensors.torch", "_find_shared_tensors")


@contextlib.contextmanager
def patched(
    *,
    peft: bool = True,
    accelerate: bool = True,
    safetensors: bool = False,
    config_false_wins: bool = True,
    split: Split = "layout",
    exact: bool = False,
) -> Iterator[None]:
    """Within the block, the installed peers call tiegraph's drop-ins; on exit every reference is restored.

    A helper is replaced in the module that defines it and in every loaded module that imported it by name
    (PEFT imports ``_get_module_names_tied_with_embedding`` into ``peft.tuners.tuners_utils``; accelerate
    imports ``find_tied_parameters`` into ``accelerate.big_modeling``, ``accelerate.utils`` and
    ``accelerate.utils.bnb``). A module imported inside the block takes the drop-in from there and is
    restored too. A peer that is not installed is left alone.

    Parameters
    ----------
    peft, accelerate, safetensors
        Which peers to patch (PEFT's ``_get_module_names_tied_with_embedding``, accelerate's
        ``find_tied_parameters``, safetensors' ``_find_shared_tensors``).
    config_false_wins, split, exact
        The drop-ins' switches (see :func:`get_module_names_tied_with_embedding`,
        :func:`find_tied_parameters`, :func:`find_shared_tensors`); the defaults keep the peers' policies.

    Examples
    --------
    >>> import accelerate.utils.modeling as modeling
    >>> from tiegraph.compat import patched
    >>> before = modeling.find_tied_parameters
    >>> with patched(peft=False):
    ...     modeling.find_tied_parameters is before
    False
    >>> modeling.find_tied_parameters is before
    True
    """
    chosen: list[tuple[tuple[str, str, str], Callable[..., Any]]] = []
    if peft:
        chosen.append(
            (
                _PEFT,
                functools.partial(get_module_names_tied_with_embedding, config_false_wins=config_false_wins),
            )
        )
    if accelerate:
        chosen.append((_ACCELERATE, functools.partial(find_tied_parameters, split=split)))
    if safetensors:
        chosen.append((_SAFETENSORS, functools.partial(find_shared_tensors, exact=exact)))
    swaps: list[tuple[str, Any, Any]] = []  # (helper name, original, replacement)
    try:
        for (package, defining, name), replacement in chosen:
            original = _original(package, defining, name)
            if original is not None:
                _swap(name, original, replacement)
                swaps.append((name, original, replacement))
        yield
    finally:
        for name, original, replacement in reversed(swaps):
            _swap(name, replacement, original)


def _original(package: str, defining: str, name: str) -> Any:
    """The peer's helper, with the peer imported so that every module importing it by name is loaded."""
    try:
        importlib.import_module(package)
        return getattr(importlib.import_module(defining), name)
    except ImportError:
        return None


def _swap(name: str, old: Any, new: Any) -> None:
    """Point every loaded module's ``name`` that is ``old`` at ``new``."""
    for module in list(sys.modules.values()):
        namespace = getattr(module, "__dict__", None)
        if isinstance(namespace, dict) and namespace.get(name) is old:
            namespace[name] = new
