"""Where a declared tensor lives once torch re-parametrized it, for the declarations to resolve through.

``torch.nn.utils.parametrize`` keeps several originals at ``parametrizations.<name>.original<N>`` (the new
``weight_norm``: the norm and the direction; a single ``original`` is named ``<name>`` already, see
:mod:`tiegraph.naming`), pruning and the old ``spectral_norm`` keep the tensor at ``<name>_orig``, the old
``weight_norm`` its direction at ``<name>_v`` (``<name>_g`` is its norm). ``<name>`` is then a tensor
computed at every forward, no slot.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ._canonical import join
from ._index import Index

__all__ = ["carrier", "embedding_name"]

#: What torch's hook-based re-parametrizations append to the name of the tensor they keep, after ``_``.
SUFFIXES = ("orig", "v")


def carrier(
    index: Index, name: str, others: list[int], names: Iterable[str], named: Callable[[str], list[int]]
) -> list[int]:
    """The slot that holds ``name``'s tensor once re-parametrized (``[]``: none; ``name`` is no slot).

    ``others`` are the slots of the pair's other end; ``names`` every name under the declaring module and
    ``named(n)`` the slots of one. Of the candidates, the one that shares memory with the other end carries
    the tie; without one, the one of the other end's shape (the pair is then not tied).
    """
    module, _, attr = name.rpartition(".")
    prefix = join(module, f"parametrizations.{attr}.original")
    candidates = [n for n in names if n.startswith(prefix) and n[len(prefix) :].isdigit()]
    candidates += [join(module, f"{attr}_{suffix}") for suffix in SUFFIXES]
    found = [s for candidate in candidates for s in named(candidate)]
    if not found or not others:
        return []
    root, tensor = index.t_root, index.s_tensor
    roots = {root[tensor[o]] for o in others}
    shared = [s for s in found if root[tensor[s]] in roots]
    if shared:
        return shared[:1]
    shape = index.meta_of(others[0]).shape
    return [s for s in found if shape is not None and index.meta_of(s).shape == shape][:1]


def embedding_name(index: Index, canon: str, attr: str) -> str | None:
    """The input embedding's ``attr`` named relative to the declaring module at canonical path ``canon``.

    A transformers 4 list ties each target to the input embedding's slot of the same attribute; named so,
    either end resolves through :func:`carrier` as a dict's names do. None: the input embedding is no
    module under ``canon``.
    """
    prefix = canon + "." if canon else ""
    module = index.canon_of(index.ie_module) if index.ie_module >= 0 else ""
    if index.ie_module < 0 or not module.startswith(prefix):
        return None
    return join(module[len(prefix) :], attr)
