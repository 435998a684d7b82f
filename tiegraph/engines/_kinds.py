"""The hand-off's finding kinds: a consumer whose head is not the one the folder means."""

from __future__ import annotations

from collections.abc import Sequence

from .._finding import Finding, Severity, finding, kinds
from ._outcome import EngineOutcome

__all__ = ["KINDS", "SEVERITY", "findings"]

#: kind -> (severity, sentence). ``{engine}``, ``{verdict}`` and ``{source}`` are filled per consumer.
TABLE: dict[str, tuple[Severity, str]] = {
    "engine-drops-trained-head": (
        "error",
        "{engine} ({rule}) puts the input embedding where {head} holds a different, trained head: {verdict}; "
        "set tie_word_embeddings=False in config.json (every level) so it loads the folder's head.",
    ),
    "engine-random-head": (
        "error",
        "{engine} ({rule}) initialises the head randomly: {verdict}; save the head, or set "
        "tie_word_embeddings=True if the head is meant to be the embedding.",
    ),
    "engine-uninitialised-head": (
        "error",
        "{engine} ({rule}) leaves the head uninitialised (no error): {verdict}; save the head, or set "
        "tie_word_embeddings=True if the head is meant to be the embedding.",
    ),
    "engine-load-error": (
        "error",
        "{engine} ({rule}) fails to load the folder: {verdict}.",
    ),
    "engine-replaces-embedding": (
        "error",
        "{engine} ({rule}) overwrites the input embedding with {head}: {verdict}; set "
        "tie_word_embeddings=False in config.json (every level).",
    ),
    "engine-head-values-unchecked": (
        "warning",
        "{engine} ({rule}) puts the input embedding where the folder also saves {head}: {verdict}; this "
        "loses the trained head if the two differ: compare them (--check-values, check_values=True).",
    ),
    "engine-drops-head-companion": (
        "warning",
        "{engine} ({rule}) drops {companions}, which change the head's logits: {verdict}.",
    ),
    "head-never-saved": (
        "error",
        "{engine} ({rule}): the folder holds no head and its config does not say tied, so no consumer can "
        "load the head that was trained ({verdict}); save it, or set tie_word_embeddings=True if the head "
        "was the embedding.",
    ),
}

KINDS: dict[str, str] = kinds(TABLE)
SEVERITY: dict[str, Severity] = {kind: severity for kind, (severity, _) in TABLE.items()}


def findings(outcomes: Sequence[EngineOutcome], head: str | None = None) -> list[Finding]:
    """One finding per consumer whose outcome has a finding kind (``head``: the head's file key)."""
    out = []
    key = head or "lm_head.weight"
    for o in outcomes:
        if o.finding_kind is None:
            continue
        dropped = [k for k, fate in o.companions if fate.startswith("dropped")]
        out.append(
            finding(
                KINDS,
                o.finding_kind,
                [key, *dropped],
                engine=o.engine,
                rule=o.rule_version,
                head=key,
                verdict=o.verdict,
                companions=", ".join(dropped),
            )
        )
    return out
