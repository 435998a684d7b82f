"""What a step did to the ties: :func:`diff` of two graphs, matched by canonical names.

Users rarely lose a tie at rest; they lose it in a step (``get_peft_model``, ``merge_and_unload``,
``load_state_dict(assign=True)``, a save and reload). :func:`diff` lays the graph before the step beside the
graph after it. Both sides are named canonically, so a bare model and its PEFT-, ``torch.compile``- or
DDP-wrapped self line up, and a graph reloaded from JSON compares like a freshly built one.

Each side is judged on the tensors a forward uses: where PEFT's ``modules_to_save`` keeps an
``original_module`` and copies under one canonical name, the copy the forward uses speaks for that name
(the rule every query follows, :mod:`tiegraph._copies`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from torch import nn

from ._graph import view_of
from .errors import NoInputEmbeddingError

if TYPE_CHECKING:
    from torch.export import ExportedProgram

    from ._audit import Finding
    from ._build import InputEmbedding
    from ._graph import TieGraph

__all__ = ["SlotChange", "TieDiff", "diff", "live_slots"]

#: Slot attributes compared for slots in tie groups, in report order.
ATTRIBUTES = ("dtype", "placement", "quantization")

_SHOWN = 6  # names listed before "+N more" in str(diff)


class SlotChange(NamedTuple):
    """One attribute of one slot that changed: canonical slot name, value before, value after."""

    slot: str
    before: object
    after: object


@dataclass(frozen=True)
class TieDiff:
    """What changed about the ties between two graphs (see :func:`diff`).

    Attributes
    ----------
    broken, made
        Sorted pairs ``(a, b)`` (``a < b``) of canonical slot names that shared memory before and do not
        after, and the reverse. A pair with a slot that exists on one side only counts too (a removed
        slot's ties are broken, an added slot's ties are made).
    tied_before, tied_after
        The input embedding's tied targets (canonical module paths, as
        :meth:`TieGraph.tied_to_input_embedding` gives them), or None when that side has no input embedding
        (then they are not compared).
    added, removed
        Canonical slot names present only after, only before (sorted).
    findings_added, findings_resolved
        Audit findings present only after, only before (compared by kind and paths; in audit order).
    dtype, placement, quantization
        :class:`SlotChange` per slot in a tie group (on either side) whose attribute changed.
    input_embedding
        Canonical path of the input embedding (after, else before), for the report.

    Notes
    -----
    ``bool(diff)`` is False when nothing about the ties changed: no pair broken or made, the same tied
    targets, no finding added or resolved, and no tied slot changed dtype, placement or quantization. Slots
    added or removed without a tie (a LoRA adapter on ``q_proj``) do not count.
    """

    broken: list[tuple[str, str]] = field(default_factory=list)
    made: list[tuple[str, str]] = field(default_factory=list)
    tied_before: list[str] | None = None
    tied_after: list[str] | None = None
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    findings_added: list[Finding] = field(default_factory=list)
    findings_resolved: list[Finding] = field(default_factory=list)
    dtype: list[SlotChange] = field(default_factory=list)
    placement: list[SlotChange] = field(default_factory=list)
    quantization: list[SlotChange] = field(default_factory=list)
    input_embedding: str | None = None
    _inside: frozenset[str] = field(default=frozenset(), repr=False, compare=False)

    def __bool__(self) -> bool:
        return bool(
            self.broken
            or self.made
            or self._targets_changed()
            or self.findings_added
            or self.findings_resolved
            or self.dtype
            or self.placement
            or self.quantization
        )

    def _targets_changed(self) -> bool:
        # a side without an input embedding has no targets to compare
        return None not in (self.tied_before, self.tied_after) and self.tied_before != self.tied_after

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def lines(self) -> list[str]:
        """The report of :meth:`__str__`, one sentence per line."""
        added, removed = set(self.added), set(self.removed)

        def mark(name: str) -> str:
            return name + (" (added)" if name in added else " (removed)" if name in removed else "")

        out = [f"{mark(a)} no longer shares memory with {b}" for a, b in _sentences(self.broken, self, mark)]
        out += [f"{mark(a)} now shares memory with {b}" for a, b in _sentences(self.made, self, mark)]
        if self._targets_changed():
            where = f" {self.input_embedding}" if self.input_embedding else ""
            out.append(
                f"tied to the input embedding{where}: {_targets(self.tied_before)} before, "
                f"{_targets(self.tied_after)} after"
            )
        for kind in ATTRIBUTES:
            for change in getattr(self, kind):
                out.append(f"{change.slot} {kind}: {change.before} -> {change.after}")
        out += [f"new finding {f.kind}: {', '.join(f.paths)}" for f in self.findings_added]
        out += [f"resolved finding {f.kind}: {', '.join(f.paths)}" for f in self.findings_resolved]
        if not out:
            out.append(f"ties unchanged (tied to the input embedding: {_targets(self.tied_after)})")
        for what, names in (("added", self.added), ("removed", self.removed)):
            if names:
                out.append(f"{len(names)} slot{'' if len(names) == 1 else 's'} {what}: {_few(names)}")
        return out


def _targets(tied: list[str] | None) -> str:
    if tied is None:
        return "no input embedding"
    return ", ".join(tied) if tied else "nothing"


def _few(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    return shown + (f" (+{len(names) - _SHOWN} more)" if len(names) > _SHOWN else "")


def _sentences(pairs: list[tuple[str, str]], d: TieDiff, mark: Any) -> Iterable[tuple[str, str]]:
    """Pairs gathered into sentences: the name in most pairs first (outside the input embedding first)."""
    left = set(pairs)
    while left:
        count: dict[str, int] = {}
        for a, b in left:
            count[a] = count.get(a, 0) + 1
            count[b] = count.get(b, 0) + 1
        name = min(count, key=lambda n: (-count[n], n in d._inside, n))
        partners = sorted(b if a == name else a for a, b in left if name in (a, b))
        left = {p for p in left if name not in p}
        yield name, ", ".join(mark(p) for p in partners)


# ---------------------------------------------------------------------------------------------- sides


def live_slots(tg: TieGraph) -> dict[str, int]:
    """Canonical slot name -> the slot a forward uses under that name (see the module docstring).

    Examples
    --------
    >>> import torch, tiegraph
    >>> m = torch.nn.Module()
    >>> m.a = torch.nn.Linear(2, 2, bias=False)
    >>> live_slots(tiegraph.build_graph(m))
    {'a.weight': 0}
    """
    view = view_of(tg)
    best: dict[str, int] = {}
    for s in range(view.num_slots):
        if view.is_used(s):
            best.setdefault(view.slot_canonical(s), s)
    return best


@dataclass
class _Side:
    """What one graph says, by canonical slot name."""

    tg: TieGraph
    live: dict[str, int]
    group: dict[str, int]  # canonical name -> share component, for names in a tie group
    pairs: set[tuple[str, str]]
    tied: list[str] | None
    inside: set[str]


def _side(tg: TieGraph) -> _Side:
    view = view_of(tg)
    live = live_slots(tg)
    members: dict[int, list[str]] = {}
    for canon, s in live.items():
        members.setdefault(view.group_of(s), []).append(canon)
    group: dict[str, int] = {}
    pairs: set[tuple[str, str]] = set()
    for root, names in members.items():
        if len(names) < 2:
            continue
        names.sort()
        for i, a in enumerate(names):
            group[a] = root
            pairs.update((a, b) for b in names[i + 1 :])
    try:
        tied: list[str] | None = tg.tied_to_input_embedding()
    except NoInputEmbeddingError:
        tied = None
    inside = {view.slot_canonical(s) for s in view.input_embedding_slots}
    return _Side(tg, live, group, pairs, tied, inside)


def slot_attribute(tg: TieGraph, s: int, name: str) -> object:
    """A slot's ``dtype``, ``placement`` or ``quantization``, as the graph recorded it."""
    view = view_of(tg)
    if name == "dtype":
        return view.tensor(s).dtype
    if name == "placement":
        return view.placement(s)
    return view.quantization(s)


def as_graph(obj: object, which: str, input_embedding: InputEmbedding) -> TieGraph:
    from ._build import build_graph
    from ._graph import TieGraph
    from ._sources import as_module

    if isinstance(obj, TieGraph):
        return obj
    if isinstance(obj, nn.Module):
        return build_graph(obj, input_embedding=input_embedding)
    try:
        model = as_module(obj, "diff")
    except TypeError:
        kind = type(obj)
        raise TypeError(
            f"diff expects a TieGraph, a torch.nn.Module or a torch.export.ExportedProgram as {which}, got "
            f"{kind.__module__}.{kind.__qualname__}"
        ) from None
    return build_graph(model, input_embedding=input_embedding)


def _findings(tg: TieGraph) -> dict[tuple[str, tuple[str, ...]], Finding]:
    return {(f.kind, f.paths): f for f in tg.audit()}


def diff(
    before: TieGraph | nn.Module | ExportedProgram,
    after: TieGraph | nn.Module | ExportedProgram,
    *,
    input_embedding: InputEmbedding = None,
) -> TieDiff:
    """What changed about the ties from ``before`` to ``after``, matched by canonical names.

    Parameters
    ----------
    before, after
        A :class:`TieGraph` (built, or reloaded from JSON), or an ``nn.Module`` (or ``ExportedProgram``)
        whose graph is built on the spot. A step that changes a model in place (``merge_and_unload``,
        ``load_state_dict``) needs the ``before`` graph built before the step:
        ``before = tiegraph.build_graph(model)``.
    input_embedding
        Passed to :func:`tiegraph.build_graph` for a side given as a module.

    Returns
    -------
    TieDiff
        ``bool(d)`` is False when nothing about the ties changed; ``str(d)`` says what did, in words.

    Raises
    ------
    TypeError
        If a side is neither a TieGraph nor an ``nn.Module``.

    Notes
    -----
    O(slots) per side, plus one audit per side.

    Examples
    --------
    >>> import torch, tiegraph
    >>> class Tiny(torch.nn.Module):
    ...     _tied_weights_keys = {"head.weight": "embed.weight"}
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.embed = torch.nn.Embedding(10, 4)
    ...         self.head = torch.nn.Linear(4, 10, bias=False)
    ...         self.head.weight = self.embed.weight
    ...     def get_input_embeddings(self):
    ...         return self.embed
    >>> model = Tiny()
    >>> before = tiegraph.build_graph(model)
    >>> model.head.weight = torch.nn.Parameter(model.embed.weight.detach().clone())
    >>> d = tiegraph.diff(before, model)
    >>> bool(d), d.broken
    (True, [('embed.weight', 'head.weight')])
    >>> print(d)
    head.weight no longer shares memory with embed.weight
    tied to the input embedding embed: head before, nothing after
    new finding declared-not-tied: embed.weight, head.weight
    >>> bool(tiegraph.diff(model, torch.compile(model)))
    False
    """
    a = _side(as_graph(before, "before", input_embedding))
    b = _side(as_graph(after, "after", input_embedding))
    changes: dict[str, list[SlotChange]] = {kind: [] for kind in ATTRIBUTES}
    for name in sorted((a.group.keys() | b.group.keys()) & a.live.keys() & b.live.keys()):
        for kind in ATTRIBUTES:
            old = slot_attribute(a.tg, a.live[name], kind)
            new = slot_attribute(b.tg, b.live[name], kind)
            if old != new:
                changes[kind].append(SlotChange(name, old, new))
    fa, fb = _findings(a.tg), _findings(b.tg)
    embedding = b.tg.input_embedding() or a.tg.input_embedding()
    return TieDiff(
        broken=sorted(a.pairs - b.pairs),
        made=sorted(b.pairs - a.pairs),
        tied_before=a.tied,
        tied_after=b.tied,
        added=sorted(b.live.keys() - a.live.keys()),
        removed=sorted(a.live.keys() - b.live.keys()),
        findings_added=[f for key, f in fb.items() if key not in fa],
        findings_resolved=[f for key, f in fa.items() if key not in fb],
        dtype=changes["dtype"],
        placement=changes["placement"],
        quantization=changes["quantization"],
        input_embedding=embedding,
        _inside=frozenset(a.inside | b.inside),
    )
