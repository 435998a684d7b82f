"""Accepting a known finding without turning the check off.

An acceptance is ``KIND`` (every finding of that kind) or ``KIND:PATH`` (the findings of that kind with a
path that is ``PATH``, lies under the module ``PATH``, or matches ``PATH`` as a glob such as ``*.weight``).
Acceptances come from ``tiegraph inspect/diff --accept KIND[:PATH]``, from ``accept=`` in the
:mod:`tiegraph.testing` helpers, and from the ``[tool.tiegraph]`` section of the nearest ``pyproject.toml``
(the command line reads it)::

    [tool.tiegraph]
    accept = ["tied-not-declared-plain-module", "config-flags-disagree:model.embed_tokens"]

An accepted finding still shows, marked accepted, and fails nothing (``--strict`` fails on errors and
warnings that are not accepted). An acceptance that matches no finding is itself reported
(``unmatched-acceptance``, a warning): what it accepted is gone or renamed, and a stale acceptance could
hide a new finding later.
"""

from __future__ import annotations

import fnmatch
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ._finding import Finding, finding, kinds, registered_kinds
from .errors import AcceptanceError

__all__ = [
    "KINDS",
    "Acceptance",
    "AcceptanceError",
    "accept",
    "fails",
    "find_pyproject",
    "parse",
    "read_pyproject",
]

#: The finding kind of this room, with the sentence it says.
KINDS: dict[str, str] = kinds(
    {
        "unmatched-acceptance": (
            "warning",
            "The acceptance {accept} (from {origin}) matches no finding: what it accepted is fixed, gone or "
            "renamed; remove it, so that it cannot hide a new finding later.",
        ),
    }
)


@dataclass(frozen=True)
class Acceptance:
    """One accepted finding kind, optionally narrowed to a path.

    Attributes
    ----------
    kind
        A finding kind (:data:`tiegraph._audit.KINDS`).
    path
        A canonical slot or module name, or a glob over them; None accepts every finding of ``kind``.
    origin
        Where it was given (``--accept``, ``accept=``, or a ``pyproject.toml`` path), for the report.
    """

    kind: str
    path: str | None = None
    origin: str = "accept="

    def __str__(self) -> str:
        return self.kind if self.path is None else f"{self.kind}:{self.path}"

    def matches(self, f: Finding) -> bool:
        """True when ``f`` is of this kind and (if a path is given) one of its paths fits it."""
        if f.kind != self.kind:
            return False
        if self.path is None:
            return True
        return any(
            p == self.path or p.startswith(self.path + ".") or fnmatch.fnmatchcase(p, self.path)
            for p in f.paths
        )


def parse(text: str, origin: str = "accept=") -> Acceptance:
    """``"KIND"`` or ``"KIND:PATH"`` as an :class:`Acceptance`; an unknown kind is an error, never ignored.

    Examples
    --------
    >>> parse("tied-not-declared:lm_head")
    Acceptance(kind='tied-not-declared', path='lm_head', origin='accept=')
    >>> parse("tied-not-decalred")
    Traceback (most recent call last):
    ...
    tiegraph.errors.AcceptanceError: accept=: 'tied-not-decalred' is not a finding kind; ...
    """
    from . import _audit  # noqa: F401 -- registers every room's kinds

    known = [k for k in registered_kinds() if k not in KINDS]
    kind, _, path = str(text).strip().partition(":")
    if kind not in known:
        raise AcceptanceError(
            f"{origin}: {kind!r} is not a finding kind; expected KIND[:PATH], KIND one of {', '.join(known)}"
        )
    return Acceptance(kind, path.strip() or None, origin)


def accept(findings: Iterable[Finding], acceptances: Iterable[Acceptance | str]) -> list[Finding]:
    """``findings``, the accepted ones marked, then ``unmatched-acceptance`` for each acceptance unused.

    Parameters
    ----------
    findings
        Findings of :meth:`tiegraph.TieGraph.audit` (or of a diff).
    acceptances
        :class:`Acceptance` objects or ``"KIND[:PATH]"`` strings.

    Examples
    --------
    >>> import torch, tiegraph
    >>> m = torch.nn.Module()
    >>> m.a, m.b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    >>> m.b.weight = m.a.weight
    >>> found = tiegraph.build_graph(m).audit()
    >>> [(f.kind, f.accepted) for f in accept(found, ["tied-not-declared-plain-module", "declared-not-tied"])]
    [('tied-not-declared-plain-module', True), ('unmatched-acceptance', False)]
    """
    given = [a if isinstance(a, Acceptance) else parse(a) for a in acceptances]
    used: set[Acceptance] = set()
    out = []
    for f in findings:
        matched = [a for a in given if a.matches(f)]
        used.update(matched)
        out.append(replace(f, accepted=True) if matched else f)
    for a in dict.fromkeys(given):
        if a not in used:
            out.append(finding(KINDS, "unmatched-acceptance", [str(a)], accept=str(a), origin=a.origin))
    return out


def find_pyproject(start: Path | str | None = None) -> Path | None:
    """The nearest ``pyproject.toml`` in ``start`` (default: the current directory) or a folder above it."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


def read_pyproject(start: Path | str | None = None) -> list[Acceptance]:
    """The acceptances of the ``[tool.tiegraph]`` section of the nearest ``pyproject.toml`` ([] if none).

    Raises
    ------
    AcceptanceError
        The file is not TOML, the section has a key other than ``accept``, or an entry is not a finding kind.
    """
    path = find_pyproject(start)
    if path is None:
        return []
    section = _tool_section(path)
    unknown = sorted(set(section) - {"accept"})
    if unknown:
        raise AcceptanceError(f"{path}: [tool.tiegraph] has unknown key {unknown[0]!r}; the key is accept")
    entries = section.get("accept", [])
    if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
        raise AcceptanceError(f'{path}: [tool.tiegraph] accept must be a list of "KIND[:PATH]" strings')
    return [parse(e, str(path)) for e in entries]


def _tool_section(path: Path) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - the pinned test environment is 3.11
        import tomli as tomllib
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise AcceptanceError(f"{path}: cannot read it as TOML: {exc}") from None
    section = data.get("tool", {}).get("tiegraph", {})
    if not isinstance(section, dict):
        raise AcceptanceError(f"{path}: tool.tiegraph must be a table")
    return section


def fails(findings: Sequence[Finding]) -> list[Finding]:
    """The findings ``--strict`` fails on: errors and warnings that are not accepted."""
    return [f for f in findings if f.fails]
