"""Declared ties: every ``_tied_weights_keys`` in the module tree, laid beside what really shares memory.

A declaration is a claim. The build step :mod:`tiegraph._declaring` reads every declaration (where they
come from and how each is expanded is told there) and records each declared pair as a
:class:`Declaration`; the networkx graph turns each resolved pair into a ``declares`` edge (target slot ->
source slot). :func:`declared_ties` gives their public form, :class:`DeclaredTie`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._graph import view_of

if TYPE_CHECKING:
    from ._graph import TieGraph

__all__ = ["STATUSES", "Declaration", "DeclaredTie", "declared_ties", "declarer"]

#: The status of a declared tie: the pair shares memory, does not, names nothing, or its config gates it off.
STATUSES = ("tied", "not-tied", "unresolved", "gated-off")


@dataclass(frozen=True)
class DeclaredTie:
    """One declared pair (target is made to share source's weight), and whether memory agrees.

    Attributes
    ----------
    target, source
        Canonical slot names (as the model's own code and its checkpoints name them). For an
        ``unresolved`` declaration, the declared key joined to the declaring module's path.
    declared_by
        Canonical path of the module whose ``_tied_weights_keys`` holds the declaration (``""``: the root).
    status
        ``tied`` (they share memory), ``not-tied`` (they do not), ``unresolved`` (a key names no slot) or
        ``gated-off`` (the declaring module's ``config.tie_word_embeddings`` is off).
    target_path, source_path, declared_by_path
        The same places as the (possibly wrapped) model you gave names them.
    declared_by_cls
        The class name of the declaring module.
    declared_as
        The raw ``(target, source)`` entry of ``_tied_weights_keys`` it came from (a regex, a module name,
        or, for a transformers 4 list, ``(target, "<input embedding>")``).
    shares
        Whether target and source share memory (also for ``gated-off`` pairs).
    flag
        The declaring module's ``config.tie_word_embeddings`` (None when it has no such flag).
    listed
        Whether transformers' ``all_tied_weights_keys`` bookkeeping lists the target (None: not a
        transformers model). ``False`` for a tied pair means the bookkeeping is stale.
    target_copy, source_copy
        For PEFT ``modules_to_save``: ``"original"``, ``"active"`` or ``"inactive"`` when the slot is in
        a ``ModulesToSaveWrapper`` copy, else ``""``.
    note
        Why an ``unresolved`` declaration resolved to nothing.
    values
        Only when asked (``build_graph(model, check_values=True)``): ``"equal"``, ``"differ"`` or
        ``"unknown"`` (meta tensors, or an offload store that cannot be read; unresolved declarations).
        None when not asked.

    Examples
    --------
    >>> import torch, tiegraph
    >>> class Tiny(torch.nn.Module):
    ...     _tied_weights_keys = {"head.weight": "embed.weight"}
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.embed = torch.nn.Embedding(10, 4)
    ...         self.head = torch.nn.Linear(4, 10, bias=False)
    >>> tie = tiegraph.build_graph(Tiny()).declared_ties()[0]
    >>> tie.target, tie.source, tie.status
    ('head.weight', 'embed.weight', 'not-tied')
    """

    target: str
    source: str
    declared_by: str
    status: str
    target_path: str = ""
    source_path: str = ""
    declared_by_path: str = ""
    declared_by_cls: str = ""
    declared_as: tuple[str, str] = ("", "")
    shares: bool = False
    flag: bool | None = None
    listed: bool | None = None
    target_copy: str = ""
    source_copy: str = ""
    note: str = ""
    values: str | None = None

    @property
    def declarer(self) -> str:
        """The declaring module as reports name it: its class, after its canonical path unless the root.

        Examples
        --------
        >>> DeclaredTie("lm_head.weight", "model.embed.weight", "", "tied", declared_by_cls="Gemma").declarer
        'Gemma'
        >>> DeclaredTie("a", "b", "language_model", "tied", declared_by_cls="OPTForCausalLM").declarer
        'language_model (OPTForCausalLM)'
        """
        return declarer(self.declared_by, self.declared_by_cls)


def declarer(path: str, cls: str) -> str:
    """The declaring module as reports and findings name it: its path, then its class (the root: its class).

    Examples
    --------
    >>> declarer("language_model", "OPTForCausalLM"), declarer("", "GemmaForCausalLM"), declarer("", "")
    ('language_model (OPTForCausalLM)', 'GemmaForCausalLM', 'the model')
    """
    cls = cls or "the model"
    return f"{path} ({cls})" if path else cls


@dataclass(frozen=True)
class Declaration:
    """One declared pair as the builder records it (internal): its public :class:`DeclaredTie`, plus slots.

    ``tie`` is the public record; ``target_slot`` and ``source_slot`` number the slots in the index (-1 for
    an ``unresolved`` pair); ``style`` is how the declaration was written (``dict`` or ``list``) and
    ``expanded_by`` who expanded it (``transformers`` or ``tiegraph``). Plain JSON-able data:
    :meth:`to_dict` / :meth:`from_dict` carry it through the graph and its JSON.
    """

    tie: DeclaredTie
    target_slot: int = -1
    source_slot: int = -1
    style: str = "dict"
    expanded_by: str = "tiegraph"

    @property
    def resolved(self) -> bool:
        """Whether both ends name a slot (false only for ``unresolved`` declarations)."""
        return self.target_slot >= 0 and self.source_slot >= 0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (the graph's ``declared`` list and ``declares`` edge attributes), in a fixed order.

        ``target`` and ``source`` are written ``target_canonical`` and ``source_canonical``: node-link data
        and pydot reserve the plain names.
        """
        tie = self.tie
        return {
            "target_slot": self.target_slot,
            "source_slot": self.source_slot,
            "declared_by": tie.declared_by,
            "declared_by_cls": tie.declared_by_cls,
            "status": tie.status,
            "target_path": tie.target_path,
            "source_path": tie.source_path,
            "declared_by_path": tie.declared_by_path,
            "declared_as": list(tie.declared_as),
            "style": self.style,
            "expanded_by": self.expanded_by,
            "shares": tie.shares,
            "flag": tie.flag,
            "listed": tie.listed,
            "target_copy": tie.target_copy,
            "source_copy": tie.source_copy,
            "note": tie.note,
            "values": tie.values,
            "target_canonical": tie.target,
            "source_canonical": tie.source,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Declaration:
        """Read :meth:`to_dict` output."""
        fields = {f.name for f in dataclasses.fields(DeclaredTie)}
        values = {k: v for k, v in data.items() if k in fields}
        values["target"] = data["target_canonical"]
        values["source"] = data["source_canonical"]
        raw = values.get("declared_as") or ("", "")
        values["declared_as"] = (str(raw[0]), str(raw[1]))
        return cls(
            DeclaredTie(**values),
            target_slot=int(data.get("target_slot", -1)),
            source_slot=int(data.get("source_slot", -1)),
            style=data.get("style", "dict"),
            expanded_by=data.get("expanded_by", "tiegraph"),
        )


def declared_ties(tg: TieGraph) -> list[DeclaredTie]:
    """Every declared tie of the model, in declaration order, each with its status.

    Parameters
    ----------
    tg
        A graph from :func:`tiegraph.build_graph` (or reloaded from JSON: only the index is read).

    Returns
    -------
    list of DeclaredTie
        One per declared (target slot, source slot) pair; a declaration whose names match nothing is one
        ``unresolved`` entry. A target seen through two wrapper paths (PEFT ``modules_to_save`` keeps an
        ``original_module`` and a copy) gives one entry per path.

    Examples
    --------
    >>> import torch, tiegraph
    >>> class Tiny(torch.nn.Module):
    ...     _tied_weights_keys = ["head.weight"]  # transformers 4 style: tied to the input embedding
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.embed = torch.nn.Embedding(10, 4)
    ...         self.head = torch.nn.Linear(4, 10, bias=False)
    ...         self.head.weight = self.embed.weight
    ...     def get_input_embeddings(self):
    ...         return self.embed
    >>> [(t.target, t.source, t.status) for t in tiegraph.build_graph(Tiny()).declared_ties()]
    [('head.weight', 'embed.weight', 'tied')]
    """
    return [d.tie for d in view_of(tg).declarations]
