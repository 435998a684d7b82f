"""What a finding is, and how a room that detects one builds it (see :mod:`tiegraph._audit` to register)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from ._view import GraphView

__all__ = [
    "SEVERITIES",
    "Finder",
    "Finding",
    "Severity",
    "finding",
    "kinds",
    "registered_kinds",
    "severity_of",
]

#: How bad a finding is. ``error``: a tensor is or will be wrong (lost on reload, trained apart while the
#: model says one, a forward that breaks); ``warning``: a tie that the next step (a cast, a shard, a merge,
#: a reload) may change, or a declaration that says something else than the memory; ``info``: a fact worth
#: knowing that needs no action. ``tiegraph inspect --strict`` fails on errors and warnings.
Severity = Literal["error", "warning", "info"]
SEVERITIES: tuple[Severity, ...] = ("error", "warning", "info")

_SEVERITY: dict[str, Severity] = {}  # every registered kind's severity (see kinds())


def kinds(table: Mapping[str, tuple[Severity, str]]) -> dict[str, str]:
    """Register a room's finding kinds: ``kind -> (severity, sentence)``; returns ``kind -> sentence``.

    Each kind's severity is declared here, beside its sentence, once; :attr:`Finding.severity` reads it.

    Examples
    --------
    >>> kinds({"x-odd": ("info", "{paths} look odd.")})
    {'x-odd': '{paths} look odd.'}
    >>> severity_of("x-odd")
    'info'
    """
    out: dict[str, str] = {}
    for kind, (severity, sentence) in table.items():
        if severity not in SEVERITIES:
            raise ValueError(f"finding kind {kind!r}: severity {severity!r} is not one of {SEVERITIES}")
        _SEVERITY[kind] = severity
        out[kind] = sentence
    return out


def registered_kinds() -> list[str]:
    """Every kind registered with :func:`kinds` so far, in registration order."""
    return list(_SEVERITY)


def severity_of(kind: str) -> Severity:
    """The severity registered for ``kind`` (a kind no room registered with :func:`kinds`: ``warning``)."""
    return _SEVERITY.get(kind, "warning")


@dataclass(frozen=True)
class Finding:
    """One place where the declarations, the config and the memory disagree.

    Attributes
    ----------
    kind
        A finding kind (``declared-not-tied``, ``tied-not-declared``, ...; the findings page of the
        documentation lists every kind).
    paths
        The canonical slot names (or module paths) involved, sorted.
    message
        One sentence: what is wrong and what to do about it.
    severity
        ``error``, ``warning`` or ``info`` (:data:`SEVERITIES`), declared with the kind.
    accepted
        True when the user accepted this finding (``--accept``, ``accept=``, ``[tool.tiegraph]``): it
        still shows, marked accepted, and fails nothing.

    Examples
    --------
    >>> import torch, tiegraph
    >>> m = torch.nn.Module()
    >>> m.a, m.b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    >>> m.b.weight = m.a.weight
    >>> finding = tiegraph.build_graph(m).audit()[0]
    >>> finding.kind, finding.paths, finding.severity
    ('tied-not-declared-plain-module', ('a.weight', 'b.weight'), 'info')
    """

    kind: str
    paths: tuple[str, ...]
    message: str
    accepted: bool = False

    @property
    def severity(self) -> Severity:
        """``error``, ``warning`` or ``info``: the severity declared with the kind (:func:`kinds`)."""
        return severity_of(self.kind)

    @property
    def fails(self) -> bool:
        """True when ``--strict`` fails on this finding: an error or a warning, not accepted."""
        return self.severity in ("error", "warning") and not self.accepted

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
