"""One run's results, written where they are read: ``benchmarks/RESULTS.md``, the README's Speed table and
the summary of ``docs/benchmarks.md``.

``bench.py --publish`` (a full run: every workload, the command line too) calls :func:`publish` with its
workloads and report. RESULTS.md is written whole; in the README and the docs page only the text between
``<!-- bench.py:NAME -->`` and ``<!-- /bench.py:NAME -->`` is replaced, so the prose around the tables
stays as written (and quotes no figure: the figures are the tables'). Ratios are the report's own: CPU
medians of one run, each against its peer in the same rounds.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
README = ROOT / "README.md"
DOCS = ROOT / "docs" / "benchmarks.md"

#: how the README and the docs name each workload of bench.FULL
LABELS = {
    "llama-70b-meta": "Llama 70B-shaped, meta",
    "deepseek-v3-meta": "DeepSeek-V3 default, meta",
    "t5-cpu": "T5 (12+12 layers), CPU",
    "llama-thin-cpu": "Llama, 400 thin layers, CPU",
    "synthetic-100k-meta": "synthetic tree with ties and views, meta",
    "peft-lora-llama-cpu": "PEFT LoRA Llama (16 layers), CPU",
    "llama64-cpu (plain)": "tiny Llama (64 wide), CPU",
    "llama64-cpu (torchao int8)": "the same, torchao int8 weight-only",
}
#: the README's shorter table
README_ROWS = [
    "llama-70b-meta",
    "llama-thin-cpu",
    "synthetic-100k-meta",
    "llama64-cpu (plain)",
    "llama64-cpu (torchao int8)",
]

Ratio = Callable[..., "float | None"]


def _x(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def _cold(work: Any, top: str, bottom: str) -> float | None:
    from statistics import median

    a, b = work.cold.get(top), work.cold.get(bottom)
    return median(a) / median(b) if a and b and median(b) else None


def _row(work: Any, ratio: Ratio, full: bool) -> list[str]:
    row = [LABELS.get(work.name, work.name), f"{work.slots:,}"]
    row.append(_x(ratio(work, "tg tied", "accelerate", cpu=True)))
    row.append(_x(ratio(work, "read floor", "accelerate", cpu=True)))
    if full:
        row.append(_x(_cold(work, "tg tied", "accelerate")))
    row.append(_x(ratio(work, "tg build", "named_parameters", cpu=True)))
    if full:
        row.append(f"{work.memory['index peak'] / work.slots:,.0f} B")
    return row


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def run_line() -> str:
    """Which code, and how busy the machine was (load average at the end of the run)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"commit `{commit}`, load average at the end of the run {load} (1, 5, 15 min)"


def readme_table(works: list[Any], ratio: Ratio) -> str:
    chosen = [w for name in README_ROWS for w in works if w.name == name]
    header = ["model", "slots", "tiegraph / accelerate", "read floor / accelerate"]
    return _table([*header, "build / bare `named_parameters` walk"], [_row(w, ratio, False) for w in chosen])


def docs_table(works: list[Any], ratio: Ratio) -> str:
    header = ["workload", "slots", "tiegraph build + tied / accelerate", "read floor / accelerate"]
    header += ["the same, both cold", "build / bare `named_parameters` walk", "build peak per slot"]
    return _table(header, [_row(w, ratio, True) for w in works])


def replace_block(text: str, name: str, body: str) -> str:
    """``text`` with the lines between the two ``bench.py:name`` markers replaced by ``body``."""
    marker = re.escape(name)
    pattern = re.compile(rf"(<!-- bench\.py:{marker} -->\n).*?(\n<!-- /bench\.py:{marker} -->)", re.S)
    found, count = pattern.subn(lambda m: m.group(1) + body + m.group(2), text)
    if count != 1:
        raise SystemExit(f"publish: expected one bench.py:{name} block, found {count}")
    return found


def publish(
    works: list[Any], report: str, ratio: Ratio, machine: list[str], targets: list[str]
) -> list[Path]:
    """Write RESULTS.md, the README's table and the docs page's summary from one run; the paths written."""
    when = run_line()
    RESULTS.write_text(
        "## tiegraph benchmark results\n\n"
        "Rerun: `.venv/bin/python benchmarks/bench.py --publish` (writes this file, the README's Speed table "
        "and the summary of docs/benchmarks.md)\n\n"
        f"Run on {when}.\n\n{report}"
    )
    date = next((line.split(": ", 1)[1] for line in machine if line.startswith("- date:")), "")
    intro = f"One run of `benchmarks/bench.py` ({date}; {when}; CPU medians):"
    readme = replace_block(README.read_text(), "speed", f"{intro}\n\n{readme_table(works, ratio)}")
    README.write_text(readme)
    head = f"Latest run ({date}; {when}); ratios against the peers in the same run, CPU medians:"
    summary = "\n".join([head, "", *machine[1:], "", docs_table(works, ratio)])
    docs = replace_block(DOCS.read_text(), "summary", summary)
    docs = replace_block(docs, "targets", "\n".join(targets))
    DOCS.write_text(docs)
    return [RESULTS, README, DOCS]
