"""The speed guard: fail when a same-run ratio regresses past a margin against the committed baseline.

CI cannot judge absolute times (its machine may be shared, or loaded by the test suite just before), so the
guard judges only ratios measured in one run: tiegraph's call against a peer or a floor timed in the same
rounds, with the order rotated every round (:func:`bench.run_timings`), CPU-time medians. The whole
measurement is repeated ``--blocks`` times and the median ratio of the blocks is kept, so one noisy block
does not decide. A ratio fails when it exceeds its baseline (``benchmarks/guard.json``, written by
``--write`` from an idle run) by more than ``--margin`` (default 35%: measured here, two idle runs agree
within 4% and a machine at load average 17 moved these ratios by at most 15%; a real regression, such as
a per-slot Python pass added to the build, moves them by more).

Usage::

    .venv/bin/python benchmarks/guard.py            # check against benchmarks/guard.json (CI)
    .venv/bin/python benchmarks/guard.py --write    # measure and write the baseline (idle machine)
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench  # noqa: E402

BASELINE = HERE / "guard.json"

#: (workload, builder, rounds per block): small enough for CI (about a minute in all), large enough that
#: each ratio is a median of many calls
WORKLOADS: list[tuple[str, Callable[[], nn.Module], int]] = [
    ("llama-70b-meta", bench.llama_70b_meta, 60),
    ("t5-cpu (4 layers)", lambda: bench.t5_cpu(4), 60),
    ("peft-lora-llama-cpu (4 layers)", lambda: bench.peft_llama(4), 60),
    ("llama64-cpu (plain)", bench.llama64_cpu, 60),
    ("synthetic-20k-meta", lambda: bench.synthetic_meta(20_000), 5),
]
#: (label, tiegraph's call, the peer or floor timed beside it)
RATIOS = [
    ("tg tied / accelerate", "tg tied", "accelerate"),
    ("tg tied / read floor", "tg tied", "read floor"),
    ("tg build / named_parameters", "tg build", "named_parameters"),
]


def measure(blocks: int) -> dict[str, dict[str, float]]:
    """Median over ``blocks`` of each ratio's CPU-median, per workload."""
    found: dict[str, dict[str, float]] = {}
    for name, builder, rounds in WORKLOADS:
        print(f"guard: {name}...", file=sys.stderr, flush=True)
        work = bench.make(name, builder, rounds, "meta" if "meta" in name else "cpu")
        per_block: dict[str, list[float]] = {label: [] for label, _, _ in RATIOS}
        for _ in range(blocks):
            work.timings, work.cpu = {}, {}
            bench.run_timings(work, rounds)
            for label, top, bottom in RATIOS:
                value = bench.ratio(work, top, bottom, cpu=True)
                if value is not None:
                    per_block[label].append(value)
        found[name] = {label: round(statistics.median(v), 3) for label, v in per_block.items() if v}
        work.model = nn.Module()
        gc.collect()
    return found


def check(found: dict[str, dict[str, float]], baseline: dict[str, dict[str, float]], margin: float) -> int:
    """Print every ratio against its baseline; the number of regressions past the margin."""
    failed = 0
    for name, ratios in found.items():
        for label, value in ratios.items():
            base = baseline.get(name, {}).get(label)
            if base is None:
                print(f"  {name:32} {label:28} {value:6.3f}x  (no baseline: not judged)")
                continue
            limit = base * (1 + margin)
            verdict = "ok" if value <= limit else "REGRESSED"
            failed += verdict != "ok"
            print(
                f"  {name:32} {label:28} {value:6.3f}x  baseline {base:.3f}x, limit {limit:.3f}x: {verdict}"
            )
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--write", action="store_true", help="write the measured ratios as the baseline")
    parser.add_argument("--blocks", type=int, default=3, help="repeated measurements (median kept)")
    parser.add_argument("--margin", type=float, default=0.35, help="allowed regression (0.35: +35%%)")
    args = parser.parse_args(argv)
    found = measure(args.blocks)
    if args.write:
        BASELINE.write_text(json.dumps(found, indent=2, sort_keys=True) + "\n")
        print(f"guard: wrote {BASELINE.relative_to(HERE.parent)}")
        return 0
    baseline = json.loads(BASELINE.read_text())
    failed = check(found, baseline, args.margin)
    if failed:
        print(f"guard: {failed} ratio(s) regressed more than {args.margin:.0%} against {BASELINE.name}")
        return 1
    print(f"guard: every ratio within {args.margin:.0%} of {BASELINE.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
