"""Declaration lint: what will break at save or load under the installed transformers.

Two finding kinds read a built graph (registered in :data:`tiegraph._audit.FINDERS`):

- ``list-tied-weights-keys``: a transformers 4 list ``_tied_weights_keys`` on a model that has a config;
  transformers 5 reads it as a dict and fails with ``AttributeError: 'list' object has no attribute
  'keys'``, at construction when ``tie_word_embeddings`` is True and in ``save_pretrained`` otherwise
  (transformers#44861).
- ``non-word-tie-gated-off``: a declared tie whose ends are not the input embedding, switched off by
  ``tie_word_embeddings=False``: transformers 5's ``get_expanded_tied_weights_keys`` gates every declared
  tie on that one flag (transformers PR#48999, CSM's codebook embeddings).

One reads a folder: ``tie-flag-missing-defaults-disagree``, a ``config.json`` without
``tie_word_embeddings`` whose consumers' defaults for its architecture disagree, so each default decides.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._finding import Finding, Severity, finding, kinds
from ._facts import FolderFacts
from ._flags import installed_version, resolve

if TYPE_CHECKING:
    from .._view import GraphView
    from ._rule import Rule

__all__ = ["KINDS", "findings", "folder_findings"]

#: kind -> (severity, sentence).
TABLE: dict[str, tuple[Severity, str]] = {
    "list-tied-weights-keys": (
        "error",
        "{declared_by} declares _tied_weights_keys as a list ({declared_as}), the transformers 4 style; "
        "transformers {version} reads it as a dict and raises AttributeError ('list' object has no attribute "
        "'keys') at construction when tie_word_embeddings is True and in save_pretrained otherwise "
        '(transformers#44861); write it as a dict, {{"{target}": "{source}"}}.',
    ),
    "non-word-tie-gated-off": (
        "warning",
        "{declared_by} declares {target} tied to {source}, which is not a word-embedding tie, but "
        "transformers gates every declared tie on {flag}, which is False, so save_pretrained saves both "
        "and from_pretrained ties nothing (transformers PR#48999); set the flag, or tie them yourself "
        "after loading.",
    ),
    "tie-flag-missing-defaults-disagree": (
        "warning",
        "{source}'s config.json has no tie_word_embeddings, and the consumers' defaults for {model_type} "
        "disagree ({defaults}), so each loads the head its own way; write tie_word_embeddings "
        "({value} for what the files hold) at every config level.",
    ),
}
KINDS: dict[str, str] = kinds(TABLE)
#: The kinds :func:`folder_findings` reports (the others are the audit's).
FOLDER_KINDS = ("tie-flag-missing-defaults-disagree",)
SEVERITY: dict[str, Severity] = {kind: severity for kind, (severity, _) in TABLE.items()}


def _major() -> int:
    version = installed_version("transformers") or "0"
    head = version.split(".", 1)[0]
    return int(head) if head.isdigit() else 0


def findings(view: GraphView) -> list[Finding]:
    """``list-tied-weights-keys`` and ``non-word-tie-gated-off`` for a built graph. O(declarations)."""
    out: list[Finding] = []
    embedding = set(view.input_embedding_slots)
    version = installed_version("transformers") or ""
    for d in view.declarations:
        tie = d.tie
        who = tie.declarer
        if d.style == "list" and tie.flag is not None and _major() >= 5:
            out.append(
                finding(
                    KINDS,
                    "list-tied-weights-keys",
                    [tie.target],
                    declared_by=who,
                    declared_as=tie.declared_as[0],
                    version=version,
                    target=tie.target,
                    source=tie.source,
                )
            )
        word = d.target_slot in embedding or d.source_slot in embedding
        if tie.status == "gated-off" and tie.flag is False and d.resolved and embedding and not word:
            flag = (
                f"{tie.declared_by}.config.tie_word_embeddings"
                if tie.declared_by
                else "config.tie_word_embeddings"
            )
            out.append(
                finding(
                    KINDS,
                    "non-word-tie-gated-off",
                    [tie.target, tie.source],
                    declared_by=who,
                    target=tie.target,
                    source=tie.source,
                    flag=flag,
                )
            )
    return out


def folder_findings(facts: FolderFacts, rules: list[Rule]) -> list[Finding]:
    """``tie-flag-missing-defaults-disagree`` when no config level sets the flag and defaults disagree."""
    if facts.flags:
        return []
    defaults: dict[str, bool] = {}
    for rule in rules:
        table = rule.table_for(facts.model_type)
        if table is None or all(table.get((True, s)) == table.get((False, s)) for _, s in table):
            continue  # not read for this architecture, or the flag changes nothing
        value = resolve(rule.flag, facts, transformers_major=rule.flag.transformers)
        if value is not None:
            defaults[rule.engine] = value
    if len(set(defaults.values())) < 2:
        return []
    shown = ", ".join(f"{engine} {'tied' if value else 'untied'}" for engine, value in defaults.items())
    return [
        finding(
            KINDS,
            "tie-flag-missing-defaults-disagree",
            [facts.head or "config.json"],
            source=facts.source,
            model_type=facts.model_type,
            defaults=shown,
            value="False" if facts.head_state in ("different", "present", "mismatch") else "True",
        )
    ]
