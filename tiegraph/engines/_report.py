"""The hand-off for a report: one line per consumer, and plain JSON data."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from .._finding import Finding
from ._facts import FolderFacts, folder_facts
from ._outcome import EngineOutcome

__all__ = ["check_folder", "engines_json", "engines_lines", "engines_report"]


def check_folder(
    folder: str, *, engines: Sequence[str] | None = None, check_values: bool = False
) -> tuple[FolderFacts, list[EngineOutcome], list[Finding]]:
    """A folder's facts, every consumer's outcome, and the findings (the consumers' and the lint's)."""
    from . import findings, lint, outcomes

    facts = folder_facts(folder, check_values=check_values)
    result = outcomes(facts, engines=engines)
    found = [*lint(facts), *findings(result, facts.head)]
    return facts, result, found


def _installed(o: EngineOutcome) -> str:
    if o.installed is None or o.in_range:
        return ""
    return f"; installed {o.installed} is outside the versions this rule models"


def engines_lines(facts: FolderFacts, outcomes: Sequence[EngineOutcome]) -> list[str]:
    """The report's "Engines" section: what the folder holds, then one line per consumer.

    Each line names the consumer and the versions its rule models, what its head holds after load, whether
    it warns, the verdict, and whether the rule was checked against the real consumer here.
    """
    flags = ", ".join(f"{level or 'top'}={value}" for level, value in facts.flags.items()) or "no key"
    head = f"{facts.head} ({facts.head_state})" if facts.head else "no head tensor"
    lines = [
        f"Engines (what each puts in the head when it loads {facts.source}):",
        f"  tie_word_embeddings: {flags}; files: {head}, embedding {facts.embedding or 'not found'}"
        + (f"; companions: {', '.join(facts.companions)}" if facts.companions else ""),
    ]
    if facts.skipped:
        lines.append(f"  not checked (pickle files, never unpickled): {', '.join(facts.skipped)}")
    width = max((len(o.engine) for o in outcomes), default=0)
    for o in outcomes:
        warns = {True: "warns", False: "silent", None: "?"}[o.warns]
        mark = "" if o.verified else " [rule read from source, not run here]"
        lines.append(
            f"  {o.engine:<{width}}  {o.rule_version}: {o.head}, {warns}: {o.verdict}{_installed(o)}{mark}"
        )
    return lines


def engines_json(facts: FolderFacts, outcomes: Sequence[EngineOutcome]) -> dict[str, Any]:
    """Plain JSON data: the folder's facts a rule reads and every consumer's outcome."""
    return {
        "source": facts.source,
        "flags": dict(facts.flags),
        "embedding": facts.embedding,
        "head": facts.head,
        "head_state": facts.head_state,
        "companions": list(facts.companions),
        "skipped": list(facts.skipped),
        "outcomes": [
            {**dataclasses.asdict(o), "companions": [list(c) for c in o.companions]} for o in outcomes
        ],
    }


def engines_report(
    folder: str, *, check_values: bool = False, accept: Sequence[Any] = ()
) -> tuple[list[str], dict[str, Any], list[Finding]]:
    """What ``tiegraph inspect DIR --engines`` adds: report lines, JSON data, the findings that fail.

    The last are what ``--strict`` fails on: errors and warnings not accepted.

    ``accept`` holds acceptances (:mod:`tiegraph._acceptance`) for the hand-off's kinds; the others are the
    audit's business and are not reported unmatched here.
    """
    from .._acceptance import accept as apply

    facts, result, found = check_folder(folder, check_values=check_values)
    marked = [f for f in apply(found, accept) if f.kind != "unmatched-acceptance"]
    lines = engines_lines(facts, result)
    for f in marked:
        mark = f"{f.severity}, accepted" if f.accepted else f.severity
        lines.append(f"  [{mark}] {f.kind}: {f.message}")
    data = engines_json(facts, result)
    data["findings"] = [
        {
            "kind": f.kind,
            "severity": f.severity,
            "accepted": f.accepted,
            "paths": list(f.paths),
            "message": f.message,
        }
        for f in marked
    ]
    return lines, data, [f for f in marked if f.fails]
