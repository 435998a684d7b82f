"""What ``tiegraph survey`` shows: the plain-text table, the summary, ``docs/survey.md`` and ``--compare``.

Everything here reads survey rows (plain dicts, as :func:`tiegraph.cli.survey.survey_one` returns them and
``--json`` writes them), so a saved survey renders and compares the same as a fresh one.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from .repairs import REPAIRS

__all__ = [
    "HEADER",
    "compare",
    "finding_entries",
    "format_compare",
    "format_markdown",
    "format_summary",
    "format_table",
]

HEADER = ["architecture", "class", "tied targets", "groups", "declared", "findings", "repairs"]

#: Why an architecture was not built, in the order the summary lists them.
FAILURES = {
    "needs-dependency": "needs a package that cannot be installed here (named)",
    "transformers-bug": "its default config fails in transformers alone too, and no repair helped",
    "tiegraph-bug": "transformers builds it but tiegraph failed (must be zero)",
    "timeout": "ran past the time limit",
    "error": "failed before building (no class or config)",
    "not-run": "a worker stopped answering before it ran",
}

#: Finding kind -> the one-line fix for the model's maintainers (``{flag}``, ``{source}`` filled in).
FIXES = {
    "config-says-tied-but-nothing-is": (
        "tie the head in the model (declare it in `_tied_weights_keys`), or default `{flag}` to False"
    ),
    "tied-although-config-says-not": (
        "share the weights only through `_tied_weights_keys` (gated on the flag), or default `{flag}` to True"
    ),
    "input-embedding-is-declared-target": (
        "return the declared source `{source}` from `get_input_embeddings()`, or declare the tie the other "
        "way round"
    ),
    "unresolved-declaration": "name a parameter or module that exists under the declaring module",
    "declared-not-tied": "tie them in `post_init()`/`tie_weights()`, or drop the declaration",
    "tied-not-declared": "declare the tie in `_tied_weights_keys`",
    "tied-not-declared-plain-module": "declare the tie in `_tied_weights_keys` if it should be checked",
    "stale-tied-weights-keys": "refresh `all_tied_weights_keys` after `tie_weights()`",
    "config-flags-disagree": "give both flags the value transformers obeys, `{obeyed}`",
}

_FLAG = re.compile(r"\b(config(?:\.\w+)*\.tie_\w+)")
_OBEYED = re.compile(r"transformers obeys ([\w.]+=\w+)")
_FLAG_VALUE = re.compile(r"\b(config(?:\.\w+)*\.tie_\w+) is (True|False)\b")
_BY = re.compile(r"\(by ([^)]*(?:\([^)]*\))?)\)")
_DECLARES = re.compile(r"declares (\{.*?\}|\S+) but")
_DECLARER = re.compile(r"^([\w.]+(?: \(\w+\))?) declares ")


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word if n == 1 else plural or word + 's'}"


# ---------------------------------------------------------------------------------------------- cells
def _cells(row: dict[str, Any]) -> list[str]:
    tied = row.get("tied_to_input_embedding")
    tied_cell = "(no input embedding)" if tied is None else (", ".join(tied) or "-")
    groups = row.get("tie_groups") or []
    groups_cell = str(len(groups)) if groups else "-"
    if groups and max(len(g) for g in groups) > 2:
        groups_cell += f" (max {max(len(g) for g in groups)})"
    declared = row.get("declared")
    if declared is None:
        declared_cell = "?"
    else:
        counts = Counter(d["status"] for d in declared)
        declared_cell = " ".join(f"{k}:{v}" for k, v in sorted(counts.items())) or "-"
    findings = row.get("findings")
    if findings is None:
        findings_cell = "?"
    else:
        kinds = Counter(str(f["kind"]) for f in findings)
        findings_cell = ", ".join(k if v == 1 else f"{k} x{v}" for k, v in sorted(kinds.items())) or "-"
    repairs_cell = ", ".join(row.get("repairs") or []) or "-"
    return [
        row["model_type"],
        row["class"],
        tied_cell,
        groups_cell,
        declared_cell,
        findings_cell,
        repairs_cell,
    ]


def format_table(rows: Iterable[dict[str, Any]]) -> str:
    """A plain-text table of the built rows, then the ones that could not be built with their reasons."""
    rows = list(rows)
    built = [_cells(r) for r in rows if r["status"] == "ok"]
    lines = []
    if built:
        widths = [max(len(h), *(len(c[i]) for c in built)) for i, h in enumerate(HEADER)]
        widths[2] = min(widths[2], 60)
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        lines.append(fmt.format(*HEADER).rstrip())
        lines.append(fmt.format(*("-" * w for w in widths)).rstrip())
        lines.extend(fmt.format(*cells).rstrip() for cells in built)
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        lines.append("")
        lines.append(f"not built ({len(failed)}):")
        lines.extend(
            f"  {r['model_type']} {r['class']}: {r['status']}: {r.get('reason', '')}" for r in failed
        )
    return "\n".join(lines)


def format_summary(rows: Sequence[dict[str, Any]], timing: dict[str, Any]) -> str:
    """One paragraph: wall and worker CPU time, built/repaired/unbuilt by kind, ties, findings by kind.

    ``timing`` holds ``seconds`` (wall), ``jobs`` and optionally ``load`` (the 1-minute load average when
    the survey started, as :func:`os.getloadavg` gives it).
    """
    ok = [r for r in rows if r["status"] == "ok"]
    repaired = [r for r in ok if r.get("repairs")]
    status = Counter(r["status"] for r in rows if r["status"] != "ok")
    tied = [r for r in ok if r.get("tied_to_input_embedding")]
    grouped = [r for r in ok if r.get("tie_groups")]
    cpu = sum(r.get("cpu_seconds", 0.0) for r in rows)
    jobs = int(timing.get("jobs", 1))
    load = timing.get("load")
    load_text = f", load average {load:.1f} at the start" if load is not None else ""
    unbuilt = len(rows) - len(ok)
    share = f" ({100 * unbuilt / len(rows):.1f}%)" if rows else ""
    lines = [
        f"{_plural(len(rows), 'architecture')} in {timing.get('seconds', 0.0):.1f} s wall on "
        f"{_plural(jobs, 'worker')} ({cpu:.0f} s of worker CPU time{load_text}): "
        f"{len(ok)} built ({len(repaired)} after config repairs), {unbuilt} not built{share}"
        + "".join(f", {n} {s}" for s, n in status.items())
        + f"; {len(tied)} tie the input embedding to something, {len(grouped)} have tie groups."
    ]
    if ok and all(r.get("findings") is not None for r in ok):
        kinds = Counter(str(f["kind"]) for r in ok for f in r["findings"])
        with_findings = sum(1 for r in ok if r["findings"])
        detail = ", ".join(f"{k} {v}" for k, v in kinds.most_common())
        lines.append(
            f"Audit findings in {_plural(with_findings, 'architecture')}"
            + (f" ({detail})." if detail else ".")
        )
    elif ok:
        lines.append("Declared ties and audit findings: missing from some rows (see their reasons).")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- findings
def _relative(name: str, prefix: str) -> str:
    return name[len(prefix) + 1 :] if prefix and name.startswith(prefix + ".") else name


def finding_entries(row: dict[str, Any], finding: dict[str, Any]) -> tuple[str, str]:
    """The config flag or ``_tied_weights_keys`` entry a finding is about, and the one-line fix.

    Examples
    --------
    >>> row = {"declared": [{"target": "model.a.weight", "source": "model.b.weight",
    ...                      "declared_by": "model", "status": "tied"}]}
    >>> finding = {"kind": "input-embedding-is-declared-target",
    ...            "paths": ["model.a.weight", "model.b.weight"],
    ...            "message": "The input embedding's model.a.weight is ... (by model (MModel)): ..."}
    >>> finding_entries(row, finding)[0]
    'MModel._tied_weights_keys["a.weight"] = "b.weight"'
    """
    message = str(finding.get("message") or "")
    paths = set(finding.get("paths") or [])
    flag_match = _FLAG.search(message)
    flag = flag_match.group(1) if flag_match else ""
    values = dict.fromkeys(_FLAG_VALUE.findall(message))
    if len(values) > 1:  # two flags that disagree: name both with their values
        flag = ", ".join(f"{name}={value}" for name, value in values)
    entries, source = [], ""
    by = _BY.search(message) or _DECLARER.search(message)
    path, _, cls = by.group(1).partition(" (") if by else ("", "", "")
    owner = cls.removesuffix(")") or path  # (the declaring module is named "path (Class)", the root "Class")
    for d in row.get("declared") or []:
        if {d["target"], d["source"]} == paths or (d["target"] in paths and d["source"] in paths):
            prefix = d.get("declared_by_canonical", d.get("declared_by")) or ""
            name = owner or (prefix or row.get("class", ""))
            entry = (
                f'{name}._tied_weights_keys["{_relative(d["target"], prefix)}"] = '
                f'"{_relative(d["source"], prefix)}"'
            )
            source = source or d["source"]
            if entry not in entries:
                entries.append(entry)
    declares = _DECLARES.search(message)
    if not entries and declares:
        entries.append(f"{owner or row.get('class', '')}._tied_weights_keys = {declares.group(1)}")
    involved = flag or "; ".join(entries[:1]) or ", ".join(sorted(paths))
    fix = FIXES.get(str(finding.get("kind")), "")
    if not fix:
        fix = message.split("; ", 1)[-1].rstrip(".")
    obeyed = _OBEYED.search(message)
    return involved, fix.format(
        flag=flag or "the tie flag",
        source=source or "the source",
        obeyed=obeyed.group(1) if obeyed else "the flag it reads",
    )


def _findings_by_kind(
    rows: Sequence[dict[str, Any]],
) -> dict[str, list[tuple[dict[str, Any], dict[str, Any]]]]:
    out: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = {}
    for row in rows:
        if row["status"] != "ok":
            continue
        seen: set[tuple[str, ...]] = set()
        for finding in row.get("findings") or []:
            involved, fix = finding_entries(row, finding)
            key = (str(finding["kind"]), involved, fix)
            if key not in seen:  # one line per entry even when two modules declare it
                seen.add(key)
                out.setdefault(str(finding["kind"]), []).append((row, finding))
    return dict(sorted(out.items(), key=lambda kv: (-len(kv[1]), kv[0])))


# ---------------------------------------------------------------------------------------------- markdown
def _md(text: str) -> str:
    return text.replace("|", "\\|")


def _code(text: str) -> str:
    return f"`{text}`" if text else "-"


def format_markdown(rows: Sequence[dict[str, Any]], timing: dict[str, Any], meta: dict[str, Any]) -> str:
    """The survey as a markdown document (``docs/survey.md``): findings by kind first, then the table."""
    versions = ", ".join(f"{k} {v}" for k, v in meta.items() if k not in ("tasks", "load", "seconds", "jobs"))
    tasks = ", ".join(f"`{t}`" for t in meta.get("tasks", ()))
    out = [
        "# Survey of the transformers zoo",
        "",
        f"Run on **transformers {meta.get('transformers', '?')}**, the version the test environment pins "
        f"(`constraints.txt`); generated by `tiegraph survey --markdown docs/survey.md --json "
        f"docs/survey.json` ({versions}). Every architecture in transformers' auto mappings for the tasks "
        f"{tasks} is built from its default config on the meta device (no weights exist) and analysed. "
        "A default config that transformers cannot build is retried with generic repairs (listed below); "
        "no repair touches a tie flag or `_tied_weights_keys`. `tiegraph survey --compare OLD.json` shows "
        'what changed since a saved survey; `pip install "tiegraph[survey]"` adds Pillow, which some '
        "vision towers need.",
        "",
        format_summary(rows, timing),
    ]
    out += _findings_section(rows)
    out += _failed_section(rows)
    out += _repaired_section(rows)
    out += [
        "",
        f"## All architectures ({len(rows)})",
        "",
        "Columns: **tied targets** are the modules that really share memory with the input embedding "
        "(canonical paths); **groups** counts tie groups (largest size when above 2); **declared** counts "
        "the declared ties by status; **findings** lists the audit's finding kinds; **repairs** the config "
        "repairs the build needed.",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "---|" * len(HEADER),
    ]
    out.extend("| " + " | ".join(_md(c) for c in _cells(r)) + " |" for r in rows if r["status"] == "ok")
    return "\n".join(out) + "\n"


def _findings_section(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Findings by kind: a table per kind of the architectures that have it, and what it means."""
    grouped = _findings_by_kind(rows)
    out = ["", f"## Findings by kind ({_plural(sum(map(len, grouped.values())), 'finding')})", ""]
    if not grouped:
        out.append("None.")
    for kind, items in grouped.items():
        architectures = len({(r["model_type"], r["class"]) for r, _ in items})
        out += [
            f"### `{kind}` ({_plural(architectures, 'architecture')})",
            "",
            "| architecture | class | config flag or `_tied_weights_keys` entry | fix |",
            "|---|---|---|---|",
        ]
        for row, finding in items:
            involved, fix = finding_entries(row, finding)
            out.append(f"| {row['model_type']} | {row['class']} | {_md(_code(involved))} | {_md(fix)} |")
        out.append("")
        out.append(f"What it means: {_md(str(items[0][1]['message']))}")
        out.append("")
    return out


def _failed_section(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The architectures not built, with why, and what each failure status means."""
    failed = [r for r in rows if r["status"] != "ok"]
    out = [f"## Not built ({len(failed)})", ""]
    if failed:
        out += ["| architecture | class | why | detail |", "|---|---|---|---|"]
        out.extend(
            f"| {r['model_type']} | {r['class']} | {r['status']} | {_md(r.get('reason', ''))} |"
            for r in failed
        )
        out.append("")
        out.extend(f"- `{s}`: {why}" for s, why in FAILURES.items() if any(r["status"] == s for r in failed))
    else:
        out.append("Every architecture was built.")
    return out


def _repaired_section(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The repairs in the order they are tried, and the architectures whose default config needed them."""
    repaired = [r for r in rows if r["status"] == "ok" and r.get("repairs")]
    out = [
        "",
        f"## Repaired default configs ({len(repaired)})",
        "",
        "Repairs are tried in this order, each only while the build still fails:",
        "",
    ]
    out.extend(f"- `{name}`: {what}" for name, what in REPAIRS.items())
    if repaired:
        out += [
            "",
            "| architecture | class | default config's error | repairs | fields changed |",
            "|---|---|---|---|---|",
        ]
        for r in repaired:
            changes = "; ".join(_short(c) for c in r.get("repair_changes") or [])
            out.append(
                f"| {r['model_type']} | {r['class']} | {_md(_short(r.get('default_error', ''), 160))} | "
                f"{', '.join(r['repairs'])} | {_md(changes)} |"
            )
    return out


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------------- compare
def _facts(row: dict[str, Any]) -> dict[str, Any]:
    """What ``--compare`` compares for one row."""
    return {
        "status": row.get("status"),
        "tied targets": row.get("tied_to_input_embedding"),
        "tie groups": sorted(sorted(g) for g in row.get("tie_groups") or []),
        "declared": sorted(
            f"{d['target']} -> {d['source']} ({d['status']})" for d in row.get("declared") or []
        ),
        "findings": sorted(f"{f['kind']} ({', '.join(f['paths'] or [])})" for f in row.get("findings") or []),
        "repairs": row.get("repairs") or [],
    }


def compare(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Architectures added and removed between two ``--json`` surveys, and every fact that changed.

    Examples
    --------
    >>> row = {"model_type": "m", "class": "M", "status": "ok", "tied_to_input_embedding": []}
    >>> changed = dict(row, tied_to_input_embedding=["lm_head"])
    >>> diff = compare({"results": [row]}, {"results": [changed, dict(row, model_type="n")]})
    >>> diff["added"], diff["changed"]
    (['n M'], {'m M': {'tied targets': ([], ['lm_head'])}})
    """
    before = {f"{r['model_type']} {r['class']}": r for r in old.get("results", [])}
    after = {f"{r['model_type']} {r['class']}": r for r in new.get("results", [])}
    changed: dict[str, dict[str, tuple[Any, Any]]] = {}
    for key in sorted(before.keys() & after.keys()):
        a, b = _facts(before[key]), _facts(after[key])
        diff = {name: (a[name], b[name]) for name in a if a[name] != b[name]}
        if diff:
            changed[key] = diff
    return {
        "versions": {k: (old.get(k), new.get(k)) for k in ("transformers", "torch", "tiegraph")},
        "added": sorted(after.keys() - before.keys()),
        "removed": sorted(before.keys() - after.keys()),
        "changed": changed,
    }


def _listed(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, list):
        return "[" + ", ".join(str(v) for v in value) + "]" if value else "none"
    return str(value)


def format_compare(diff: dict[str, Any], old_name: str) -> str:
    """The result of :func:`compare` as text: versions, added, removed, then each changed fact."""
    versions = "; ".join(f"{k} {a} -> {b}" for k, (a, b) in diff["versions"].items() if a != b)
    lines = [f"compared with {old_name}" + (f" ({versions})" if versions else "") + ":"]
    for what in ("added", "removed"):
        keys = diff[what]
        lines.append(f"  {what} ({len(keys)})" + (": " + ", ".join(keys) if keys else ""))
    lines.append(f"  changed ({len(diff['changed'])})" + (":" if diff["changed"] else ""))
    for key, facts in diff["changed"].items():
        for name, (a, b) in facts.items():
            if "status" in facts and name in ("tie groups", "declared"):
                continue  # built now or no longer: its status, tied targets and findings say enough
            if isinstance(a, list) and isinstance(b, list) and name in ("declared", "findings", "tie groups"):
                changes = [f"- {x}" for x in a if x not in b] + [f"+ {x}" for x in b if x not in a]
                more = f" (+{len(changes) - 4} more)" if len(changes) > 4 else ""
                detail = "; ".join(changes[:4]) + more
            else:
                detail = f"{_listed(a)} -> {_listed(b)}"
            lines.append(f"    {key}: {name}: {detail}")
    return "\n".join(lines)
