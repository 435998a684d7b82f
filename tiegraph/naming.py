"""Wrapper rules: which path segments are removed to name a place as the model's own code names it.

tiegraph knows the wrappers of torch (``torch.compile``, DDP, DataParallel, FSDP, activation checkpointing)
and PEFT. A wrapper of your own is taught with :func:`register_wrapper`: its rule is data
(:class:`WrapperRule`), matched by the wrapper's *type* (never by ``hasattr``: ``PeftModel`` and
``OptimizedModule`` forward unknown attributes to the model inside them), so a segment called ``module`` or
``model`` is removed for being a wrapper's child, never for its name. A class given as
``"package.module:QualName"`` is looked up only in ``sys.modules``: tiegraph never imports a package just to
check.

Canonical names are then relative to the one model root, if there is exactly one: a user's container
around one model is a prefix dropped from canonical names; with several model roots side by side (a DPO
policy and reference) nothing is dropped and the input embedding is not guessed.
"""

from __future__ import annotations

from torch import nn

from . import _canonical
from ._canonical import WrapperRule
from .errors import ConfigurationError

__all__ = ["WrapperRule", "register_wrapper", "unregister_wrapper"]


def register_wrapper(
    cls: type[nn.Module] | str,
    *,
    drop: tuple[str, ...] = (),
    drop_next: tuple[str, ...] = (),
    adapters: bool = False,
) -> WrapperRule:
    """Teach tiegraph a wrapper class of your own, so canonical names drop its segments.

    Parameters
    ----------
    cls
        The wrapper class, or ``"package.module:QualName"``.
    drop, drop_next, adapters
        See :class:`WrapperRule`.

    Returns
    -------
    WrapperRule
        The registered rule (rules registered later take precedence for the same child name).

    Raises
    ------
    ConfigurationError
        If ``cls`` is a string not written ``"package.module:QualName"``, or ``drop``/``drop_next`` is
        not a tuple of child names (a bare string such as ``drop="inner"``).
    TypeError
        If ``cls`` is not an ``nn.Module`` subclass.

    Examples
    --------
    >>> import torch
    >>> import tiegraph
    >>> class Shell(torch.nn.Module):
    ...     def __init__(self, inner):
    ...         super().__init__()
    ...         self.inner = inner
    >>> rule = tiegraph.register_wrapper(Shell, drop=("inner",))
    >>> tg = tiegraph.build_graph(Shell(torch.nn.Linear(2, 2)))
    >>> [tg.graph.nodes[n]["canonical"] for n in ("s:inner.weight", "s:inner.bias")]
    ['weight', 'bias']
    >>> tiegraph.naming.unregister_wrapper(rule)
    """
    if isinstance(cls, str):
        if ":" not in cls:
            raise ConfigurationError(f"wrapper class {cls!r} must be written 'package.module:QualName'")
    elif not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"register_wrapper expects an nn.Module subclass, got {cls!r}")
    for option, names in (("drop", drop), ("drop_next", drop_next)):
        if isinstance(names, str) or not all(isinstance(name, str) and name for name in names):
            raise ConfigurationError(
                f"{option}={names!r}; expected a tuple of child names, such as {option}=('module',)"
            )
    rule = WrapperRule(cls, tuple(drop), tuple(drop_next), adapters)
    _canonical.RULES.append(rule)
    return rule


def unregister_wrapper(rule: WrapperRule) -> None:
    """Remove a rule added by :func:`register_wrapper`.

    Raises
    ------
    ConfigurationError
        If ``rule`` is not a rule in force (never registered, or removed already).
    """
    if rule not in _canonical.RULES:
        raise ConfigurationError(
            f"{rule!r} is not a registered wrapper rule; pass the rule register_wrapper returned"
        )
    _canonical.RULES.remove(rule)
