"""Which PEFT copy the forward uses: the one rule every query, helper and report follows.

PEFT's ``ModulesToSaveWrapper`` keeps the wrapped module as ``original_module`` and one copy per adapter
under ``modules_to_save.<adapter>``, all under one canonical name. Its forward calls the active adapter's
copy, and ``original_module`` only when the adapters are disabled, no adapter is active on it, or the active
adapter has no copy there. That copy decides every answer: the input embedding's tied targets, the tie
groups, ``component``, ``assert_tied``, ``diff``, the declared ties, the audit, the report and the picture.
The slots of an ``original_module`` a copy stands in for, and of the other adapters' copies, are *unused*:
they stay in the graph (a graph records memory as it is) and are reported as facts of their own (the
report's ``modules_to_save`` line, the picture's labels, and ``component()`` of their full path, which
answers from memory).

A graph records the copy in use when it was built: ``set_adapter`` afterwards changes nothing it says.

Trainable-token wrappers (``TrainableTokensWrapper``, ``TrainableTokensLayer``) hold no stand-in copy:
their forward reads the base layer's weight with the trained rows laid over it, so all their slots are used.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ._canonical import join
from ._storage import Components

if TYPE_CHECKING:
    from ._index import Index
    from ._records import CopyWrapper

__all__ = [
    "ACTIVE",
    "INACTIVE",
    "ORIGINAL",
    "UNUSED",
    "Forward",
    "copy_in_use",
    "copy_prefixes",
    "forward_of",
]

#: The kinds of copy a slot of a ``ModulesToSaveWrapper`` can be in: the copy the forward uses, an
#: ``original_module`` a copy stands in for, and another adapter's copy.
ACTIVE, ORIGINAL, INACTIVE = "active", "original", "inactive"
UNUSED = frozenset({ORIGINAL, INACTIVE})


def copy_in_use(wrapper: CopyWrapper) -> str | None:
    """The adapter whose copy the wrapper's forward calls, or None when it calls ``original_module``.

    ``wrapper.active`` is empty when the build found the adapters disabled. PEFT calls the original when an
    active adapter has no copy in this wrapper.

    Examples
    --------
    >>> from tiegraph._records import CopyWrapper
    >>> copy_in_use(CopyWrapper("lm_head", "lm_head", ["default"], ["default", "other"]))
    'default'
    >>> copy_in_use(CopyWrapper("lm_head", "lm_head", ["third"], ["default"])) is None
    True
    """
    active = wrapper.active
    if active and all(name in wrapper.adapters for name in active):
        return active[0]
    return None


def copy_prefixes(wrappers: Iterable[CopyWrapper]) -> list[tuple[str, str]]:
    """``(full path prefix, kind)`` of every copy of every wrapper: ``active``, ``original`` or ``inactive``.

    Examples
    --------
    >>> from tiegraph._records import CopyWrapper
    >>> copy_prefixes([CopyWrapper("m.lm_head", "lm_head", ["a"], ["a", "b"])])
    [('m.lm_head.original_module.', 'original'), ('m.lm_head.modules_to_save.a.', 'active'), \
('m.lm_head.modules_to_save.b.', 'inactive')]
    """
    out: list[tuple[str, str]] = []
    for wrapper in wrappers:
        used = copy_in_use(wrapper)
        out.append((join(wrapper.path, "original_module") + ".", ACTIVE if used is None else ORIGINAL))
        for name in wrapper.adapters:
            kind = ACTIVE if name == used else INACTIVE
            out.append((join(wrapper.path, f"modules_to_save.{name}") + ".", kind))
    return out


class Forward:
    """The rule applied to one index: which slots are unused, and the tie groups of the slots in use.

    A tie group in use is a share component over the used slots: a group that held an unused slot is split
    again from the recorded share pairs, joining slots through their tensors (one tensor object is one
    place, whichever slot holds it), never through an unused tensor. Groups not touched keep their number;
    a group split again, and an unused slot, get numbers below zero, so no two kinds of number meet.
    """

    __slots__ = ("_index", "_roots", "groups", "unused")

    def __init__(self, index: Index) -> None:
        self._index = weakref.ref(index)  # the index keeps this: no cycle for the collector to find
        starts = tuple(prefix for prefix, kind in copy_prefixes(index.modules_to_save) if kind in UNUSED)
        names = index.s_name if starts else ()
        self.unused = frozenset(s for s, name in enumerate(names) if name.startswith(starts))
        self._roots: dict[int, int] = {}
        self.groups: dict[int, list[int]] = index.groups() if not self.unused else self._split()

    def _split(self) -> dict[int, list[int]]:
        index, unused = self._owner(), self.unused
        s_tensor = index.s_tensor
        touched = [slots for slots in index.groups().values() if not unused.isdisjoint(slots)]
        members = {s for slots in touched for s in slots}
        pairs = [(a, b) for a, b, _ in index.shares if a in members and b in members]
        out = {key: slots for key, slots in index.groups().items() if unused.isdisjoint(slots)}
        for slots in touched:
            kept = [s for s in slots if s not in unused]
            alive = {s_tensor[s] for s in kept}
            parts = Components[int]()
            for a, b in pairs:
                if s_tensor[a] in alive and s_tensor[b] in alive:
                    parts.union(s_tensor[a], s_tensor[b])
            found: dict[int, list[int]] = {}
            for s in kept:
                found.setdefault(parts.find(s_tensor[s]), []).append(s)
            for part in found.values():
                key = -1 - part[0]
                self._roots.update(dict.fromkeys(part, key))
                if len(part) > 1:
                    out[key] = part
        return dict(sorted(out.items(), key=lambda item: item[1][0]))

    def used(self, s: int) -> bool:
        """Whether the forward uses slot ``s``."""
        return s not in self.unused

    def root_of(self, s: int) -> int:
        """The number of slot ``s``'s tie group in use (equal for slots that share memory and are used)."""
        if s in self.unused:
            return -1 - s
        found = self._roots.get(s)
        return self._owner().root_of_slot(s) if found is None else found

    def _owner(self) -> Index:
        index = self._index()
        assert index is not None, "a Forward lives on its index"  # (internal: never a user error)
        return index


def forward_of(index: Index) -> Forward:
    """The rule applied to ``index``, made on first use and kept on it."""
    found = index.forward
    if found is None:
        found = index.forward = Forward(index)
    return found
