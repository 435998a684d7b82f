"""The picture's model: what to draw of a graph, the caption that says what was left out, label text.

Everything is read through the graph's read-only :class:`tiegraph._view.GraphView` (tie groups, shares,
declarations), so a picture and the queries can never disagree. Modules, slots and storages are numbered
as in the index; DOT ids are ``m<i>``, ``s<i>`` and ``t<i>`` (see :mod:`tiegraph.export`).
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from ._copies import ACTIVE, ORIGINAL, copy_prefixes
from ._graph import view_of
from ._text import plural

if TYPE_CHECKING:
    from ._declared import Declaration
    from ._graph import TieGraph
    from ._view import GraphView

SHOW = ("embedding", "groups", "all")
GRAY = "#666666"


def esc(text: object) -> str:
    """Text for an HTML-like label."""
    return html.escape(str(text), quote=True)


def plain(text: str) -> str:
    """Text for a quoted DOT string (escString): backslashes doubled, no newlines."""
    return text.replace("\\", "\\\\").replace("\n", " ")


def html_label(*lines: str, align: str | None = None) -> str:
    """An HTML-like label from already escaped lines (centred, or all aligned ``LEFT``)."""
    if align is None:
        return "<" + "<BR/>".join(lines) + ">"
    br = f'<BR ALIGN="{align}"/>'
    return "<" + br.join(lines) + br + ">"


def small(text: str, color: str = GRAY, size: int = 9) -> str:
    return f'<FONT POINT-SIZE="{size}" COLOR="{color}">{text}</FONT>'


def size_text(nbytes: int) -> str:
    """Bytes for people: ``512 B``, ``4.0 KiB``."""
    value = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def shape_text(shape: Iterable[int] | None) -> str:
    if shape is None:
        return "shape unknown"
    dims = list(shape)
    return "×".join(str(d) for d in dims) if dims else "scalar"


class Picture:
    """The graph's modules, slots and relations in the form the drawing needs (built once per picture)."""

    def __init__(self, tg: TieGraph) -> None:
        view = view_of(tg)
        self.tg = tg
        self.view: GraphView = view
        self.modules = range(view.num_modules)
        self.slots = range(view.num_slots)
        self.by_path = {view.module_path(m): m for m in self.modules}
        self.parent: dict[int, int] = {}
        self.children: dict[int, list[int]] = {m: [] for m in self.modules}
        for m in self.modules:
            p = view.module_parent(m)
            if p >= 0:
                self.parent[m] = p
                self.children[p].append(m)
        self.owned: dict[int, list[int]] = {m: [] for m in self.modules}
        self.owner: dict[int, int] = {}
        self.storage: dict[int, tuple[int, int, int]] = {}
        for s in self.slots:
            owner = view.slot_owner(s)
            self.owner[s] = owner
            self.owned[owner].append(s)
            reads = view.storage(s)
            if reads is not None:
                self.storage[s] = reads
        self.shares: dict[tuple[int, int], str] = {}
        for a, b, how in view.shares():
            if a != b:
                self.shares.setdefault((min(a, b), max(a, b)), how)
        self.declares: list[Declaration] = [d for d in view.declarations if d.resolved]
        self.group: dict[int, int] = {s: view.group_of(s) for s in self.slots}
        self.members: dict[int, list[int]] = {}
        for s in self.slots:
            self.members.setdefault(self.group[s], []).append(s)
        self.tied = {s for s in self.slots if len(self.members[self.group[s]]) > 1}
        self.declared_ends = {s for d in self.declares for s in (d.target_slot, d.source_slot)}
        self.embedding_slots = set(view.input_embedding_slots)
        self.embedding_module = view.input_embedding_module
        # PEFT copies the forward does not use: drawn beside the copy that stands in for them, as facts
        self.unused = {s for s in self.slots if not view.is_used(s)}
        self.copies = {prefix[:-1]: kind for prefix, kind in copy_prefixes(view.modules_to_save)}

    # ------------------------------------------------------------------ names
    def path(self, module: int) -> str:
        return self.view.module_path(module)

    def name(self, slot: int) -> str:
        return self.view.slot_name(slot)

    def canonical(self, slot: int) -> str:
        return self.view.slot_canonical(slot)

    # ------------------------------------------------------------------ structure
    def subtree(self, module: int) -> Iterator[int]:
        stack = [module]
        while stack:
            m = stack.pop()
            yield m
            stack.extend(reversed(self.children[m]))

    def slots_under(self, module: int) -> list[int]:
        return [s for m in self.subtree(module) for s in self.owned[m]]

    def components(self, seeds: Iterable[int]) -> set[int]:
        return {s for g in {self.group[s] for s in seeds} for s in self.members[g]}

    def with_neighbours(self, chosen: set[int]) -> set[int]:
        """Add the other end of declared ties and the slots of the same canonical name, with their groups."""
        extra = {
            d.source_slot if d.target_slot in chosen else d.target_slot
            for d in self.declares
            if d.target_slot in chosen or d.source_slot in chosen
        }
        names = {self.canonical(s) for s in chosen}
        extra |= {s for s in self.slots if self.canonical(s) in names}
        found = chosen | self.components(extra)
        # the copies the forward does not use, under the name of a drawn slot (the original_module)
        names = {self.canonical(s) for s in found}
        return found | {s for s in self.unused if self.canonical(s) in names}

    def copy_notes(self, module: int) -> list[str]:
        """A cluster label's line saying what a PEFT ``modules_to_save`` copy is to the forward (or none)."""
        kind = self.copies.get(self.path(module))
        if kind is None:
            return []
        note = "not used by the forward" + (": a modules_to_save copy stands in" if kind == ORIGINAL else "")
        return [small(esc("the copy the forward uses" if kind == ACTIVE else note), size=9)]

    def signature(self, module: int) -> tuple[Any, ...]:
        """What makes two numbered siblings 'identical': classes, relative names, slot shapes and dtypes."""
        view = self.view
        base = len(self.path(module))
        parts: list[Any] = []
        for m in self.subtree(module):
            parts.append((self.path(m)[base:], view.module_cls(m)))
            for s in self.owned[m]:
                t = view.tensor(s)
                parts.append((view.slot_attr(s), t.shape, t.dtype, view.is_parameter(s), t.device))
        return tuple(parts)

    def group_count(self) -> int:
        """Tie groups as :meth:`TieGraph.tie_groups` counts them (by canonical name)."""
        return len(self.tg.tie_groups())


# ---------------------------------------------------------------------------------------------- selection


def select(pic: Picture, show: str, component: str | None) -> tuple[set[int], str, list[str]]:
    """The slots to draw, the caption (HTML-like text), and notes for the caption."""
    notes: list[str] = []
    if component is not None:
        seeds = pic.view.resolve(component)
        chosen = pic.with_neighbours(pic.components(seeds))
        if not chosen & pic.tied:
            notes.append(f"{esc(component)} shares memory with nothing")
        return chosen, f"Slots sharing memory with <B>{esc(component or '(the whole model)')}</B>", notes
    if show == "embedding":
        seeds = [s for s in pic.slots if s in pic.embedding_slots]
        memory = {pic.view.memory_group_of(s) for s in seeds}
        if seeds:
            chosen = pic.with_neighbours(pic.components(seeds))
            name = esc(pic.tg.input_embedding() or pic.tg.input_embedding(full_paths=True))
            groups = len({pic.group[s] for s in seeds if s in pic.tied})
            title = f"Tie group{'' if groups == 1 else 's'} of the input embedding <B>{name}</B>"
            if not groups:
                title = f"The input embedding <B>{name}</B>"
                unused = any(pic.view.memory_group_of(s) in memory for s in pic.unused)
                notes.append("it shares memory with nothing" + (" the forward uses" if unused else ""))
            return chosen, title, notes
        notes.append("no input embedding was found: showing every tie group")
        show = "groups"
    count = pic.group_count()
    aliases = len({pic.group[s] for s in pic.tied}) - count
    if aliases > 0:
        notes.append(
            f"{plural(aliases, 'shared group')} drawn {'is' if aliases == 1 else 'are'} one place named "
            "through several wrapper paths (one canonical name): not a tie"
        )
    if show == "groups":
        chosen = pic.with_neighbours(set(pic.tied) | pic.declared_ends)
        if not chosen:
            notes.append("nothing in this model shares memory")
        title = "The only tie group" if count == 1 else f"All {plural(count, 'tie group')}"
        return chosen, title, notes
    return set(pic.slots), f"Whole model: {plural(count, 'tie group')}", notes


def hidden_note(pic: Picture, drawn: set[int]) -> list[str]:
    """Say what a component picture leaves out, naming runs of numbered layers that are not drawn at all."""
    hidden = len(pic.slots) - len(drawn)
    if not hidden:
        return []
    notes = [f"not drawn: {plural(hidden, 'slot')} that share nothing with what is shown"]
    with_drawn: set[int] = set()
    for m in {pic.owner[s] for s in drawn}:
        while True:
            with_drawn.add(m)
            if m not in pic.parent:
                break
            m = pic.parent[m]
    for m in pic.modules:
        numbered = [c for c in pic.children[m] if pic.path(c).rsplit(".", 1)[-1].isdigit()]
        if len(numbered) < 2 or (m not in with_drawn and pic.parent.get(m) not in with_drawn):
            continue
        skipped = [c for c in numbered if c not in with_drawn and pic.slots_under(c)]
        if len(skipped) >= 2:
            classes = ", ".join(sorted({pic.view.module_cls(c) for c in skipped}))
            some = "" if len(skipped) == len(numbered) else f" ({len(skipped)} of {len(numbered)})"
            first, last = (pic.path(c).rsplit(".", 1)[-1] for c in (skipped[0], skipped[-1]))
            notes.append(
                f"not drawn: {esc(pic.path(m))}.{first}..{last}{some}, {len(skipped)} × {esc(classes)}, "
                "nothing in them is tied"
            )
    return notes


def runs(pic: Picture, module: int, keep: set[int]) -> list[list[int]]:
    """Runs of two or more consecutive numbered children with one signature and no slot in ``keep``."""
    found: list[list[int]] = []
    run: list[int] = []
    last: tuple[Any, ...] | None = None
    for child in pic.children[module]:
        sig: tuple[Any, ...] | None = None
        if pic.path(child).rsplit(".", 1)[-1].isdigit():
            under = pic.slots_under(child)
            if under and not keep.intersection(under):
                sig = pic.signature(child)
        if sig is not None and sig == last:
            run.append(child)
            continue
        if len(run) >= 2:
            found.append(run)
        run = [child] if sig is not None else []
        last = sig
    if len(run) >= 2:
        found.append(run)
    return found
