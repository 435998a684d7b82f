"""What a finding is, and how a room that detects one builds it (see :mod:`tiegraph.audit` to register)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._view import GraphView

__all__ = ["Finder", "Finding", "finding"]


@dataclass(frozen=True)
class Finding:
    """One place where the declarations, the config and the memory disagree.

    Attributes
    ----------
    kind
        One of :data:`tiegraph.audit.KINDS` (``declared-not-tied``, ``tied-not-declared``, ...).
    paths
        The canonical slot names (or module paths) involved, sorted.
    message
        One sentence: what is wrong and what to do about it.

    Examples
    --------
    >>> import torch, tiegraph
    >>> m = torch.nn.Module()
    >>> m.a, m.b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    >>> m.b.weight = m.a.weight
    >>> finding = tiegraph.build_graph(m).audit()[0]
    >>> finding.kind, finding.paths
    ('tied-not-declared', ('a.weight', 'b.weight'))
    """

    kind: str
    paths: tuple[str, ...]
    message: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"


@dataclass(frozen=True)
class Finder:
    """A room's finding kinds (kind -> sentence, in report order) and the function that finds them."""

    kinds: Mapping[str, str]
    find: Callable[[GraphView], list[Finding]]


def finding(kinds: Mapping[str, str], kind: str, paths: Sequence[str], **fields: Any) -> Finding:
    """A :class:`Finding` of ``kind``, its message ``kinds[kind]`` formatted with ``fields``.

    ``paths`` are sorted and deduplicated; the field ``paths`` defaults to them joined ("a and b", "a, b, c").

    Examples
    --------
    >>> finding({"x-odd": "{paths} look odd"}, "x-odd", ["b", "a"]).message
    'a and b look odd'
    """
    ordered = tuple(sorted(dict.fromkeys(paths)))
    fields.setdefault("paths", " and ".join(ordered) if len(ordered) == 2 else ", ".join(ordered))
    return Finding(kind, ordered, kinds[kind].format(**fields))
