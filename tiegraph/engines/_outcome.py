"""A rule applied to a folder's facts: what one consumer's head holds, against the intended head."""

from __future__ import annotations

from dataclasses import dataclass

from ._facts import FolderFacts
from ._flags import config_says_tied, installed_version, resolve
from ._rule import Rule, Table

__all__ = ["EngineOutcome", "intended_head", "predict"]

#: Outcome label -> the finding kind when the intended head is the folder's head or the embedding.
KIND_OF = {
    "embedding": "engine-drops-trained-head",
    "random": "engine-random-head",
    "uninitialised": "engine-uninitialised-head",
    "load-error": "engine-load-error",
    "embedding-replaced": "engine-replaces-embedding",
}


@dataclass(frozen=True)
class EngineOutcome:
    """What one consumer's head will hold after it loads a folder (see :func:`tiegraph.engines.outcomes`).

    Attributes
    ----------
    engine
        One of :data:`tiegraph.engines.ENGINE_IDS`.
    rule_version
        The consumer versions the rule models (``"transformers 5.24"``).
    head
        ``embedding``, ``folder-head``, ``random``, ``uninitialised``, ``load-error``,
        ``embedding-replaced``, or ``unknown`` (the rule cannot tell: an architecture it was not read for,
        a flag it cannot resolve, or values that were not compared).
    warns
        Whether the consumer warns (None when unknown).
    verdict
        One sentence for the output: what happens, and whether it is what the folder means.
    finding_kind
        The finding kind when the outcome is not the intended head, else None.
    source_ref
        The consumer's source file and function the rule reads.
    verified
        True when the rule was checked against the real consumer run here.
    intended
        ``folder-head``, ``embedding`` or ``unknown`` (the head was never saved).
    tied
        Whether the consumer reads the config as tied (None: unknown).
    companions
        ``(file key, fate)`` for each companion of the head in the files (``kept``, ``dropped``,
        ``dropped-warns``, ``load-error``, ``not read``).
    installed
        The installed version of the consumer's package, or None.
    in_range
        Whether ``installed`` is inside the versions the rule models (None when not installed).
    """

    engine: str
    rule_version: str
    head: str
    warns: bool | None
    verdict: str
    finding_kind: str | None
    source_ref: str
    verified: bool
    intended: str
    tied: bool | None
    companions: tuple[tuple[str, str], ...] = ()
    installed: str | None = None
    in_range: bool | None = None


def intended_head(facts: FolderFacts) -> str:
    """The head the folder means (DESIGN.md, "The hand-off").

    ``folder-head`` when the files hold a head, else ``embedding`` when the config says tied, else
    ``unknown``.
    """
    if facts.head_state != "absent":
        return "folder-head"
    return "embedding" if config_says_tied(facts) else "unknown"


def _case(tab: Table, tied: bool, state: str) -> tuple[str, bool | None, str] | None:
    """(head, warns, note) from the table, or None.

    A ``present`` head (values not compared) is derived from the ``equal`` and ``different`` cases: the same
    head either way, or None (the values decide).
    """
    if (tied, state) in tab:
        case = tab[(tied, state)]
        return case.head, case.warns, case.note
    equal, different = tab.get((tied, "equal")), tab.get((tied, "different"))
    if state != "present" or equal is None or different is None:
        return None
    warns = equal.warns if equal.warns == different.warns else None
    if equal.head == different.head:
        return equal.head, warns, different.note
    if (
        different.head == "folder-head" and equal.head == "embedding"
    ):  # equal values: both are the folder's head
        return "folder-head", warns, f"{different.note} (if the values differ)"
    return None


def _version_key(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split(".")[:3]:
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def _in_range(rule: Rule, installed: str | None) -> bool | None:
    if installed is None:
        return None
    low, high = (_version_key(v) for v in rule.versions)
    version = _version_key(installed)
    return low <= version[: len(low)] and version[: len(high)] <= high


def _companion_fate(rule: Rule, key: str, model_type: str | None) -> str:
    """``model_type:kind`` first (an architecture the consumer treats apart), then ``kind``."""
    kind = "final_logits_bias" if key.endswith("final_logits_bias") else key.rsplit(".", 1)[-1]
    kind = "bias" if kind == "bias" else kind if kind == "final_logits_bias" else "scales"
    return rule.companions.get(f"{model_type}:{kind}", rule.companions.get(kind, "not read"))


def _finding_kind(head: str, intended: str, state: str) -> str | None:
    if intended == "unknown":
        return "head-never-saved"
    if head == "folder-head" or head == "unknown":
        return None
    if head == "embedding" and (intended == "embedding" or state == "equal"):
        return None
    if head == "embedding" and state == "present":
        return "engine-head-values-unchecked"
    return KIND_OF.get(head)


def _verdict(head: str, intended: str, kind: str | None, why: str, dropped: list[str]) -> str:
    if head == "unknown":
        return f"unknown: {why}"
    if intended == "unknown":
        return f"{head}: the folder holds no head and the config does not say tied ({why})"
    if kind is None:
        return f"ok: {head}, as the folder means ({why})" if why else f"ok: {head}, as the folder means"
    if kind == "engine-drops-head-companion":
        return f"{head}, as the folder means, but {', '.join(dropped)} dropped" + (f" ({why})" if why else "")
    return f"{head} instead of the {intended.replace('-', ' ')}: {why}" if why else f"{head} instead"


def predict(rule: Rule, facts: FolderFacts) -> EngineOutcome:
    """Apply one consumer's rule to a folder's facts."""
    installed = installed_version(rule.package) if rule.package else None
    if (
        installed is not None
        and rule.package == "transformers"
        and installed.split(".")[0] != rule.versions[0].split(".")[0]
    ):
        installed = None  # another major version is installed: that is another consumer, not this one
    intended = intended_head(facts)
    tab = rule.table_for(facts.model_type)
    tied = resolve(rule.flag, facts, transformers_major=rule.flag.transformers)
    case = None if tab is None or tied is None else _case(tab, tied, facts.head_state)
    if tab is None:
        head, warns, why = "unknown", None, f"the rule was not read for model type {facts.model_type!r}"
    elif tied is None:
        head, warns, why = "unknown", None, "the config does not say tied and the rule has no default for it"
    elif case is None and facts.head_state == "present":
        head, warns, why = "unknown", None, "it depends on the values: compare them (check_values)"
    elif case is None:
        head, warns, why = (
            "unknown",
            None,
            f"the rule was not read for a head in this state ({facts.head_state})",
        )
    else:
        head, warns, why = case
    companions = tuple((key, _companion_fate(rule, key, facts.model_type)) for key in facts.companions)
    failing = [key for key, fate in companions if fate == "load-error"]
    if failing and head != "unknown":
        head, warns, why = "load-error", True, f"strict load: no place for {', '.join(failing)}"
    if head != "unknown" and any(fate == "dropped-warns" for _, fate in companions):
        warns = True  # the consumer warns about the companion it drops
    kind = _finding_kind(head, intended, facts.head_state)
    dropped = [key for key, fate in companions if fate.startswith("dropped")]
    if kind is None and dropped and head not in ("load-error", "unknown"):
        kind = "engine-drops-head-companion"
    return EngineOutcome(
        engine=rule.engine,
        rule_version=rule.rule_version,
        head=head,
        warns=warns,
        verdict=_verdict(head, intended, kind, why, dropped),
        finding_kind=kind,
        source_ref=rule.source_ref,
        verified=rule.verified,
        intended=intended,
        tied=tied,
        companions=companions,
        installed=installed,
        in_range=_in_range(rule, installed),
    )
