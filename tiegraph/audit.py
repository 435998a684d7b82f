"""The audit: where declarations, the config flag and the memory disagree, and a report to read it in.

Every finding is computed from the index a :class:`tiegraph.TieGraph` holds (its tie groups, its declared
ties, the flags the builder recorded), never from the model: a graph reloaded from JSON audits the same.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .declared import declared_ties
from .deployed import KINDS as DEPLOYED_KINDS
from .naming import join

if TYPE_CHECKING:
    from .graph import TieGraph

__all__ = ["KINDS", "Finding", "audit", "report"]

#: Finding kinds, in report order, with the sentence each one says (``str.format`` fields).
KINDS: dict[str, str] = {
    "declared-not-tied": (
        "{target} is declared tied to {source} (by {declared_by}) but they do not share memory, so they "
        "train and save as two tensors; call model.tie_weights() to tie them, or declare them untied "
        "(config.tie_word_embeddings=False) if the checkpoint really holds two different tensors."
    ),
    "modules-to-save-copy-untied": (
        "The active PEFT modules_to_save copy {copy} is not tied to {other}, although {declared_by} declares "
        "the tie and its original_module is tied (peft#2777): training updates the copy alone and a merged "
        "model reloads tied; leave {module} out of modules_to_save, or save with "
        "config.tie_word_embeddings=False."
    ),
    "group-split-across-devices": (
        "{paths} should be one tensor but sit on {devices}: a device map split the tie; keep them on one "
        "device (pass the tie group to infer_auto_device_map / no_split_module_classes) and call "
        "model.tie_weights()."
    ),
    "untied-by-quantization": DEPLOYED_KINDS["untied-by-quantization"],
    "quantized-layer-holds-tied-weight": DEPLOYED_KINDS["quantized-layer-holds-tied-weight"],
    "group-dtype-or-shape-mismatch": (
        "{paths} cannot be the same weight: {detail}; give them one dtype and shape (e.g. "
        "model.resize_token_embeddings() resizes both) before tying."
    ),
    "unresolved-declaration": (
        "{declared_by} declares {declared_as} but {note}; fix that _tied_weights_keys entry (names are "
        "relative to the declaring module)."
    ),
    "tied-not-declared": (
        "{paths} share memory but no _tied_weights_keys declares it, so loaders and PEFT do not know they "
        "are one weight; declare the tie on the model, or untie them by "
        "giving one a copy, nn.Parameter(weight.detach().clone())."
    ),
    "config-says-tied-but-nothing-is": (
        "{flag} is True but the input embedding {embedding} shares memory with nothing; call "
        "model.tie_weights() if it should be tied, or set {flag}=False so the saved config says what the "
        "weights are."
    ),
    "tied-although-config-says-not": (
        "{paths} share memory although {flag} is False: save_pretrained stores one of them and "
        "from_pretrained, not tying, initializes the other afresh; set {flag}=True, or untie them by "
        "giving one a copy, nn.Parameter(weight.detach().clone())."
    ),
    "input-embedding-is-declared-target": (
        "The input embedding's {target} is itself a declared tie target of {source} (by {declared_by}): "
        "tie_weights() replaces the embedding's weight with {source}, so edit, resize or adapt {source}, "
        "not the embedding."
    ),
    "stale-tied-weights-keys": (
        "{target} is tied to {source}, but transformers' all_tied_weights_keys does not list it "
        "(tie_weights() does not refresh it, and loading and device maps read it); refresh it with "
        "model.all_tied_weights_keys = model.get_expanded_tied_weights_keys(all_submodels=True)."
    ),
}


@dataclass(frozen=True)
class Finding:
    """One place where the declarations, the config and the memory disagree.

    Attributes
    ----------
    kind
        One of :data:`KINDS` (``declared-not-tied``, ``tied-not-declared``, ...).
    paths
        The canonical slot names (or module paths) involved, sorted.
    message
        One sentence: what is wrong and what to do about it.

    Examples
    --------
    >>> import torch, tiegraph
    >>> m = torch.nn.Module()
    >>> m.a, m.b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    >>> m.b.weight = m.a.weight
    >>> finding = tiegraph.build_graph(m).audit()[0]
    >>> finding.kind, finding.paths
    ('tied-not-declared', ('a.weight', 'b.weight'))
    """

    kind: str
    paths: tuple[str, ...]
    message: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"


def _finding(kind: str, paths: list[str] | tuple[str, ...], **fields: Any) -> Finding:
    ordered = tuple(sorted(dict.fromkeys(paths)))
    fields.setdefault("paths", " and ".join(ordered) if len(ordered) == 2 else ", ".join(ordered))
    return Finding(kind, ordered, KINDS[kind].format(**fields))


def _who(path: str, cls: str) -> str:
    return f"{cls} ({path})" if path else cls


def audit(tg: TieGraph) -> list[Finding]:
    """Findings where the declared ties, ``config.tie_word_embeddings`` and the memory disagree.

    Parameters
    ----------
    tg
        A graph from :func:`tiegraph.build_graph` (or reloaded from JSON).

    Returns
    -------
    list of Finding
        Sorted by kind (in :data:`KINDS` order), then by paths. Empty when everything agrees.

    Notes
    -----
    Declared pairs are judged one by one (``not-tied`` ones become ``declared-not-tied``, or the more
    specific PEFT copy, device or dtype/shape kind); tie groups are judged as wholes (a group whose slots
    are not all connected by declarations is ``tied-not-declared``; PEFT adapter slots, tied by PEFT's own
    ``ensure_weight_tying``, are left out of that check). O(slots + declarations).

    Examples
    --------
    >>> import torch, tiegraph
    >>> class Tiny(torch.nn.Module):
    ...     _tied_weights_keys = {"head.weight": "embed.weight"}
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.embed = torch.nn.Embedding(10, 4)
    ...         self.head = torch.nn.Linear(4, 10, bias=False)
    >>> [f.kind for f in tiegraph.build_graph(Tiny()).audit()]
    ['declared-not-tied']
    """
    idx = tg._index
    entries = idx.declared
    ties = declared_ties(tg)
    found: list[Finding] = []
    ie = set(idx.ie_slots)
    flags = idx.tie_config.as_dict() if idx.tie_config is not None else {}
    flag_name, flag = _effective_flag(flags)
    explained_gated = False
    from .deployed import findings as deployed_findings
    from .deployed import untied_pairs

    placed_or_quantized = untied_pairs(tg)  # their own kinds say more than declared-not-tied

    for entry, tie in zip(entries, ties, strict=True):
        by = _who(tie.declared_by, entry.get("declared_by_cls", "the model"))
        if (tie.target, tie.source) in placed_or_quantized:
            continue
        if tie.status == "unresolved":
            raw = f"{{{tie.declared_as[0]!r}: {tie.declared_as[1]!r}}}"
            found.append(
                _finding(
                    "unresolved-declaration",
                    [tie.target, tie.source],
                    declared_by=by,
                    declared_as=raw,
                    note=tie.note,
                )
            )
            continue
        t, s = int(entry["target_slot"]), int(entry["source_slot"])
        if tie.status == "gated-off":
            if tie.shares:
                explained_gated = True
                name = join(tie.declared_by, "config.tie_word_embeddings")
                found.append(_finding("tied-although-config-says-not", [tie.target, tie.source], flag=name))
            continue
        if t in ie and s not in ie:
            found.append(
                _finding(
                    "input-embedding-is-declared-target",
                    [tie.target, tie.source],
                    target=tie.target,
                    source=tie.source,
                    declared_by=by,
                )
            )
        if tie.status == "tied":
            if tie.listed is False:
                found.append(
                    _finding(
                        "stale-tied-weights-keys",
                        [tie.target, tie.source],
                        target=tie.target,
                        source=tie.source,
                    )
                )
            continue
        # not-tied: the most specific reason first
        if "inactive" in (tie.target_copy, tie.source_copy):
            continue
        if "active" in (tie.target_copy, tie.source_copy):
            copy, other = (
                (tie.target_path, tie.source)
                if tie.target_copy == "active"
                else (tie.source_path, tie.target)
            )
            module = idx.belongs_of(idx.s_owner[t if tie.target_copy == "active" else s])
            found.append(
                _finding(
                    "modules-to-save-copy-untied",
                    [tie.target, tie.source],
                    copy=copy,
                    other=other,
                    declared_by=by,
                    module=module,
                )
            )
            continue
        tm, sm = idx.meta_of(t), idx.meta_of(s)
        detail = _mismatch(tm.dtype, tm.shape, sm.dtype, sm.shape)
        if detail:
            found.append(_finding("group-dtype-or-shape-mismatch", [tie.target, tie.source], detail=detail))
            continue
        found.append(
            _finding(
                "declared-not-tied",
                [tie.target, tie.source],
                target=tie.target,
                source=tie.source,
                declared_by=by,
            )
        )

    found.extend(_group_findings(tg))
    found.extend(deployed_findings(tg))

    if idx.ie_slots and flag is not None:
        tied_to = tg.tied_to_input_embedding()
        embedding = tg.input_embedding() or ""
        resolved = any(tie.status in ("tied", "not-tied") for tie in ties)
        explained = any(f.kind in _EXPLAIN_UNTIED for f in found)
        if flag and not tied_to and resolved and not explained:
            found.append(
                _finding("config-says-tied-but-nothing-is", [embedding], flag=flag_name, embedding=embedding)
            )
        if not flag and tied_to and not explained_gated:
            found.append(_finding("tied-although-config-says-not", [embedding, *tied_to], flag=flag_name))

    order = {kind: i for i, kind in enumerate(KINDS)}
    unique = dict.fromkeys(found)
    return sorted(unique, key=lambda f: (order[f.kind], f.paths))


# a split device map or a PEFT copy explains an untied embedding better than a wrong flag does
_EXPLAIN_UNTIED = ("group-split-across-devices", "modules-to-save-copy-untied", "untied-by-quantization")


def _effective_flag(flags: dict[str, Any]) -> tuple[str, bool | None]:
    """The flag transformers reads for the top-level tie: the config's own, else its text config's."""
    if flags.get("tie_word_embeddings") is not None:
        return "config.tie_word_embeddings", bool(flags["tie_word_embeddings"])
    if flags.get("text_tie_word_embeddings") is not None:
        return "config.text_config.tie_word_embeddings", bool(flags["text_tie_word_embeddings"])
    return "config.tie_word_embeddings", None


def _mismatch(dtype_a: str, shape_a: tuple[int, ...], dtype_b: str, shape_b: tuple[int, ...]) -> str:
    """Why two tensors cannot be one weight ('' if they can: same dtype, same or transposed shape)."""
    parts = []
    if dtype_a != dtype_b:
        parts.append(f"dtypes {dtype_a} and {dtype_b}")
    if tuple(shape_a) != tuple(shape_b) and tuple(shape_a) != tuple(reversed(shape_b)):
        parts.append(f"shapes {tuple(shape_a)} and {tuple(shape_b)}")
    return " and ".join(parts)


def _group_findings(tg: TieGraph) -> list[Finding]:
    """Per tie group: split devices, mixed dtypes, and slots no declaration connects."""
    idx = tg._index
    out: list[Finding] = []
    links: dict[int, list[int]] = {}
    for entry in idx.declared:
        t, s = int(entry.get("target_slot", -1)), int(entry.get("source_slot", -1))
        if t >= 0 and s >= 0:
            links.setdefault(t, []).append(s)
    for slots in tg._groups().values():
        names = sorted({idx.slot_canon_of(s) for s in slots})
        dtypes = sorted({idx.meta_of(s).dtype for s in slots})
        if len(dtypes) > 1:
            out.append(
                _finding("group-dtype-or-shape-mismatch", names, detail="dtypes " + " and ".join(dtypes))
            )
        undeclared = _unconnected(tg, slots, links)
        if undeclared:
            out.append(_finding("tied-not-declared", undeclared))
    return out


def _unconnected(tg: TieGraph, slots: list[int], links: dict[int, list[int]]) -> list[str]:
    """Canonical names of a tie group when declarations do not connect all of it, else []."""
    idx = tg._index
    # adapter slots (lora_A.default, ...) belong to a tuner layer; PEFT ties them on purpose
    model_slots = [s for s in slots if idx.canon_of(idx.s_owner[s]) == idx.belongs_of(idx.s_owner[s])]
    names = {idx.slot_canon_of(s) for s in model_slots}
    if len(names) < 2:
        return []
    parent = {name: name for name in names}

    def find(name: str) -> str:
        while parent[name] != name:
            parent[name] = parent[parent[name]]
            name = parent[name]
        return name

    for t in model_slots:
        for s in links.get(t, ()):
            a, b = idx.slot_canon_of(t), idx.slot_canon_of(s)
            if b in parent:
                parent[find(a)] = find(b)
    roots = {find(name) for name in names}
    return sorted(names) if len(roots) > 1 else []


# ---------------------------------------------------------------------------------------------- report

_WIDTH = 100
_MAX_ROWS = 40
_MAX_GROUPS = 20


def report(tg: TieGraph) -> str:
    """A compact table of tie groups, declared ties with their status, and findings; ``str(tg)`` too.

    Names are canonical; where the model you gave names a place differently (wrappers), the full path
    follows in brackets.

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
    idx = tg._index
    lines: list[str] = []
    root_cls = idx.m_cls[0] if idx.m_cls else "model"
    embedding = tg.input_embedding()
    full = tg.input_embedding(full_paths=True)
    head = f"{root_cls}: {tg.num_modules} module paths, {tg.num_slots} slots, input embedding "
    head += f"{_both(embedding, full)}" if embedding is not None else "none"
    lines.append(head)
    flags = idx.tie_config.as_dict() if idx.tie_config is not None else {}
    said = (
        [f"config.tie_word_embeddings={flags['tie_word_embeddings']}"]
        if flags.get("tie_word_embeddings") is not None
        else []
    )
    if flags.get("text_tie_word_embeddings") is not None:
        said.append(f"config.text_config.tie_word_embeddings={flags['text_tie_word_embeddings']}")
    if said:
        lines.append(", ".join(said))
    for wrapper in (w.as_dict() for w in idx.modules_to_save):
        active = ", ".join(wrapper["active"]) or "none (original_module)"
        lines.append(f"modules_to_save: {wrapper['canonical']} [{wrapper['path']}], active copy: {active}")

    groups = sorted(tg._groups().values(), key=lambda g: sorted(idx.slot_canon_of(s) for s in g))
    blocks: list[str] = []
    count = 0
    for slots in groups:
        names = sorted({(idx.slot_canon_of(s), idx.s_name[s]) for s in slots})
        if len({canon for canon, _ in names}) < 2:
            continue
        count += 1
        if count > _MAX_GROUPS:
            continue
        kinds = sorted({f"{m.dtype} {tuple(m.shape)} {m.device}" for m in map(idx.meta_of, slots)})
        blocks.append(f"  [{count}] " + "; ".join(kinds))
        rows = [[canon, "" if full == canon else f"[{full}]"] for canon, full in names]
        blocks += ["  " + line for line in _table(["", ""], rows, header_row=False)]
    lines += ["", f"Tie groups ({count})"]
    lines += blocks if blocks else ["  none"]
    if count > _MAX_GROUPS:
        lines.append(f"  ... {count - _MAX_GROUPS} more (all of them: tg.tie_groups())")

    from .deployed import deployed_rows

    placed = deployed_rows(idx)
    if placed:
        lines += ["", f"Quantized or offloaded slots ({len(placed)})"]
        lines += _table(["slot", "quantization", "placement", "runs on"], placed)

    ties = declared_ties(tg)
    lines += ["", f"Declared ties ({len(ties)})"]
    rows = []
    below: dict[int, str] = {}
    for tie, entry in zip(ties, idx.declared, strict=True):
        by = entry.get("declared_by_cls", "")
        rows.append(
            [tie.status, tie.target, tie.source, f"{tie.declared_by} ({by})" if tie.declared_by else by]
        )
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
    indent = " " * (2 + max((len(r[0]) for r in rows), default=0) + 2)
    for i, line in enumerate(table):
        lines.append(line)
        if i - 1 in below:
            lines += textwrap.wrap(
                below[i - 1], _WIDTH, initial_indent=indent, subsequent_indent=indent + " "
            )

    findings = audit(tg)
    if not findings:
        lines += ["", "Findings: none (declarations, config and memory agree)"]
    else:
        lines += ["", f"Findings ({len(findings)})"]
        for finding in findings:
            lines.append(f"  {finding.kind}: {', '.join(finding.paths)}")
            lines += textwrap.wrap(finding.message, _WIDTH, initial_indent="    ", subsequent_indent="    ")
    return "\n".join(lines)


def _both(canonical: str | None, full: str | None) -> str:
    if canonical is None:
        return "none"
    return canonical if not full or full == canonical else f"{canonical} [{full}]"


def _copy(kind: str) -> str:
    return f" ({kind} copy)" if kind else ""


def _table(header: list[str], rows: list[list[str]], *, header_row: bool = True) -> list[str]:
    shown = [header, *rows[:_MAX_ROWS]] if header_row else rows[:_MAX_ROWS]
    widths = [max(len(row[i]) for row in shown) for i in range(len(header))]
    out = []
    for row in shown:
        out.append(
            ("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))).rstrip()
        )
    if len(rows) > _MAX_ROWS:
        out.append(f"  ... {len(rows) - _MAX_ROWS} more")
    return out
