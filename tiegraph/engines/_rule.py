"""A consumer's rule as data: how it reads the tie flag, and what its head holds for each folder state.

A :class:`Rule` is read from the consumer's own source (file and function in ``source_ref``) for the
versions in ``versions``. It maps (config says tied, :data:`~tiegraph.engines._facts.HeadState`) to a
:class:`Case`: what the head holds after load and whether the consumer warns. Architectures the consumer
treats differently get their own table; architectures the rule was not read for are not guessed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from ._facts import HEAD_STATES

__all__ = ["OUTCOMES", "Case", "Flag", "Outcome", "Rule", "Table", "table"]

#: What the head holds after load (DESIGN.md, "The hand-off").
Outcome = Literal["embedding", "folder-head", "random", "uninitialised", "load-error", "embedding-replaced"]
OUTCOMES: tuple[Outcome, ...] = (
    "embedding",
    "folder-head",
    "random",
    "uninitialised",
    "load-error",
    "embedding-replaced",
)


@dataclass(frozen=True)
class Case:
    """What a consumer's head holds after load in one situation, whether it warns, and why (one line)."""

    head: Outcome
    warns: bool
    note: str = ""


#: (config says tied, head state) -> what happens. A missing ``present`` entry is derived from ``equal`` and
#: ``different`` (the same case for both, or "depends on the values").
Table = Mapping[tuple[bool, str], Case]


@dataclass(frozen=True)
class Flag:
    """How a consumer decides that the config says tied.

    Attributes
    ----------
    level
        ``"top"``: the top-level config only; ``"text"``: the text sub-config when there is one (what
        ``config.get_text_config(decoder=True)`` gives: its own key, else its class default), else the top
        level; ``"merged"``: the text sub-config's key, else the top level's (a converter that merges
        ``text_config`` into the top level).
    defaults
        ``model_type -> value`` when no config level the consumer reads sets the key; ``"transformers"``
        asks the installed transformers' config class (its default and its own post-init rules), when the
        installed transformers' major version is ``transformers``.
    fallback
        The value for a model type ``defaults`` does not list (None: unknown, never guessed).
    transformers
        The transformers major version whose config classes the consumer reads the config with.
    text_defaults
        ``model_type`` of the top level -> value when its text sub-config has no key (a consumer that
        remaps a multimodal type to its own class with its own default, read before ``defaults``).
    """

    level: Literal["top", "text", "merged"] = "top"
    defaults: Mapping[str, bool] | Literal["transformers"] = field(default_factory=dict)
    fallback: bool | None = None
    transformers: str = "5"
    text_defaults: Mapping[str, bool] = field(default_factory=dict)


@dataclass(frozen=True)
class Rule:
    """One consumer's rule, as read from its source.

    Attributes
    ----------
    engine
        One of :data:`tiegraph.engines.ENGINE_IDS`.
    package
        The distribution whose installed version is compared with ``versions`` (None: not a Python package).
    versions
        The lowest and highest versions the rule was read for (inclusive, ``major.minor[.patch]``).
    source_ref
        The consumer's source file(s) and function(s) the rule reads.
    flag
        How the consumer reads ``tie_word_embeddings``.
    table
        What happens, for every architecture in ``architectures`` without a table of its own.
    architectures
        Model types the rule was read for -> their own table, or None to use ``table``. A model type not
        listed gets no prediction (``None`` here means every model type).
    companions
        What the consumer does with a companion of the head (``lm_head.bias``, ``final_logits_bias``,
        scales): ``kept``, ``dropped`` (silently), ``dropped-warns``, ``load-error``; missing: not read.
        A key ``"<model_type>:<kind>"`` overrides ``"<kind>"`` for one architecture.
    verified
        True when the rule was checked against the real consumer run on this machine (see the docs' table).
    unsupported
        Model types the consumer has no class for -> why (its message, where in its source): loading any
        folder of that type fails, whatever the flag and the files say.
    """

    engine: str
    package: str | None
    versions: tuple[str, str]
    source_ref: str
    flag: Flag
    table: Table
    architectures: Mapping[str, Table | None] | None = None
    companions: Mapping[str, str] = field(default_factory=dict)
    verified: bool = False
    unsupported: Mapping[str, str] = field(default_factory=dict)

    @property
    def rule_version(self) -> str:
        """The versions the rule models, for the output: ``"vllm 0.32"``, ``"transformers 5.0-5.24"``."""
        low, high = self.versions
        name = self.package or self.engine
        return f"{name} {low}" if low == high else f"{name} {low}-{high}"

    def table_for(self, model_type: str | None) -> Table | None:
        """The table for an architecture, or None when the rule was not read for it."""
        why = self.unsupported.get(model_type) if model_type is not None else None
        if why is not None:
            fails = Case("load-error", True, why)
            return table(dict.fromkeys(HEAD_STATES, fails))
        if self.architectures is None:
            return self.table
        if model_type is None or model_type not in self.architectures:
            return None
        return self.architectures[model_type] or self.table


def table(tied: Mapping[str, Case], untied: Mapping[str, Case] | None = None) -> Table:
    """A :data:`Table` from the cases when the config says tied and when not (``untied`` None: the same).

    Keys of ``tied`` and ``untied`` are head states: ``absent``, ``equal``, ``different``, ``mismatch``.
    """
    other = tied if untied is None else untied
    return {**{(True, s): c for s, c in tied.items()}, **{(False, s): c for s, c in other.items()}}
