"""The text report of a graph: tie groups, declared ties with their status, and the audit's findings.

``str(tg)``, :meth:`tiegraph.TieGraph.report` and the ``tiegraph inspect`` text all print it. It reads the
graph through the read-only :class:`tiegraph._view.GraphView` and the public queries.
"""

from __future__ import annotations

import textwrap
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from ._acceptance import accept as apply_acceptances
from ._adapters import copy_facts
from ._audit import audit
from ._deployed import deployed_rows
from ._finding import SEVERITIES, Finding
from ._graph import view_of
from ._text import plural

if TYPE_CHECKING:
    from ._acceptance import Acceptance
    from ._graph import TieGraph
    from ._view import GraphView

__all__ = ["findings_lines", "report"]

_WIDTH = 100
_MAX_ROWS = 40
_MAX_GROUPS = 20


def report(tg: TieGraph, *, accept: Iterable[Acceptance | str] = ()) -> str:
    """A compact table of tie groups, declared ties with their status, and findings; ``str(tg)`` too.

    Names are canonical; where the model you gave names a place differently (wrappers), the full path
    follows in brackets. Each finding shows its severity; ``accept`` (``"KIND[:PATH]"``, see
    :mod:`tiegraph._acceptance`) marks the findings it matches accepted and reports acceptances that match
    nothing.

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
    >>> print(tiegraph.build_graph(Tiny()).report())
    Tiny: 3 module paths, 2 slots, input embedding embed
    <BLANKLINE>
    Tie groups (1)
      [1] float32 (10, 4) cpu
        embed.weight
        head.weight
    <BLANKLINE>
    Declared ties (1)
      status  target       source        declared by
      tied    head.weight  embed.weight  Tiny
    <BLANKLINE>
    Findings: none (declarations, config and memory agree)
    """
    view = view_of(tg)
    lines = _head_lines(tg, view)
    lines += _group_lines(view)
    placed = deployed_rows(view)
    if placed:
        lines += ["", f"Quantized or offloaded slots ({len(placed)})"]
        lines += _table(["slot", "quantization", "placement", "runs on"], placed)
    lines += _declared_lines(view)
    lines += findings_lines(apply_acceptances(audit(tg), accept))
    return "\n".join(lines)


def _head_lines(tg: TieGraph, view: GraphView) -> list[str]:
    """The model's class, sizes and input embedding; the config's tie flags; modules_to_save copies."""
    root_cls = view.module_cls(0) if view.num_modules else "model"
    embedding = tg.input_embedding()
    full = tg.input_embedding(full_paths=True)
    head = f"{root_cls}: {plural(tg.num_modules, 'module path')}, {plural(tg.num_slots, 'slot')}, "
    head += f"input embedding {_both(embedding, full)}" if embedding is not None else "input embedding none"
    lines = [head]
    flags = view.tie_config
    said = (
        [f"config.tie_word_embeddings={flags.tie_word_embeddings}"]
        if flags.tie_word_embeddings is not None
        else []
    )
    if flags.text_tie_word_embeddings is not None:
        said.append(f"config.text_config.tie_word_embeddings={flags.text_tie_word_embeddings}")
    if said:
        lines.append(", ".join(said))
    lines += _copy_lines(view)
    return lines


def _group_lines(view: GraphView) -> list[str]:
    """The Tie groups section: groups of two or more canonical names, full paths in one column."""
    groups = sorted(view.groups(), key=lambda g: sorted(view.slot_canonical(s) for s in g))
    shown: list[tuple[str, list[tuple[str, str]]]] = []
    count = 0
    for slots in groups:
        names = sorted({(view.slot_canonical(s), view.slot_name(s)) for s in slots})
        if len({canon for canon, _ in names}) < 2:
            continue
        count += 1
        if count > _MAX_GROUPS:
            continue
        tensors = {view.tensor(s) for s in slots}
        kinds = sorted({f"{t.dtype} {t.shape} {t.device}" for t in tensors})
        shown.append((f"  [{count}] " + "; ".join(kinds), names))
    # one column for every group's full paths, so they line up in every report
    width = max((len(canon) for _, names in shown for canon, _ in names), default=0)
    blocks: list[str] = []
    for head_line, names in shown:
        blocks.append(head_line)
        blocks += [
            f"    {canon.ljust(width)}  [{full}]" if full != canon else f"    {canon}"
            for canon, full in names
        ]
    lines = ["", f"Tie groups ({count})"]
    lines += blocks if blocks else ["  none"]
    if count > _MAX_GROUPS:
        lines.append(f"  ... {count - _MAX_GROUPS} more (all of them: tg.tie_groups())")
    return lines


def _declared_lines(view: GraphView) -> list[str]:
    """The Declared ties section: a table, with full paths and copies under the rows that need them."""
    ties = [d.tie for d in view.declarations]
    lines = ["", f"Declared ties ({len(ties)})"]
    rows = []
    below: dict[int, str] = {}
    for tie in ties:
        rows.append([tie.status, tie.target, tie.source, tie.declarer])
        if (
            tie.target_path != tie.target
            or tie.source_path != tie.source
            or tie.target_copy
            or tie.source_copy
        ):
            target = (tie.target_path or tie.target) + _copy(tie.target_copy)
            source = (tie.source_path or tie.source) + _copy(tie.source_copy)
            below[len(rows) - 1] = f"[{target} <- {source}]"
    table = _table(["status", "target", "source", "declared by"], rows) if rows else ["  none"]
    indent = "    "  # full paths sit under their row, indented as the tie groups' names are
    for i, line in enumerate(table):
        lines.append(line)
        if i - 1 in below:
            lines += textwrap.wrap(
                below[i - 1], _WIDTH, initial_indent=indent, subsequent_indent=indent + " "
            )
    return lines


def findings_lines(findings: Sequence[Finding]) -> list[str]:
    """The report's Findings section: a count by severity, then each finding with its severity and message."""
    if not findings:
        return ["", "Findings: none (declarations, config and memory agree)"]
    counts = Counter(f.severity for f in findings)
    by = ", ".join(plural(counts[s], s, "info" if s == "info" else None) for s in SEVERITIES if counts[s])
    accepted = sum(f.accepted for f in findings)
    lines = ["", f"Findings ({by}{f'; {accepted} accepted' if accepted else ''})"]
    for f in findings:
        mark = f"{f.severity}, accepted" if f.accepted else f.severity
        lines.append(f"  [{mark}] {f.kind}: {', '.join(f.paths)}")
        lines += textwrap.wrap(f.message, _WIDTH, initial_indent="    ", subsequent_indent="    ")
    return lines


def _copy_lines(view: GraphView) -> list[str]:
    """Per PEFT ``modules_to_save`` wrapper: the copy the forward uses, and what the others share (facts)."""
    lines = []
    for facts in copy_facts(view):
        line = f"modules_to_save: {facts.module} [{facts.path}], the forward uses {facts.uses}"
        for name, shared in facts.not_used.items():
            line += f"; {name} (not used) shares memory with {', '.join(shared) or 'nothing'}"
        lines += textwrap.wrap(line, _WIDTH, subsequent_indent="    ")
    return lines


def _both(canonical: str | None, full: str | None) -> str:
    if canonical is None:
        return "none"
    return canonical if not full or full == canonical else f"{canonical} [{full}]"


def _copy(kind: str) -> str:
    """A PEFT copy's mark (only the copies the forward uses reach the table)."""
    return " (the copy the forward uses)" if kind else ""


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    shown = [header, *rows[:_MAX_ROWS]]
    widths = [max(len(row[i]) for row in shown) for i in range(len(header))]
    out = []
    for row in shown:
        out.append(
            ("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))).rstrip()
        )
    if len(rows) > _MAX_ROWS:
        out.append(f"  ... {len(rows) - _MAX_ROWS} more")
    return out
