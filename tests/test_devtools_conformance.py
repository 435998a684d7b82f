"""The conformance harness's own logic (devtools/conformance): test names, call counts and the table.

The peers' suites themselves run only under ``python3 dev.py conformance``; these tests use made-up
outcomes.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devtools.conformance import plugin, run  # noqa: E402


def test_junit_name_matches_pytest_junit_report() -> None:
    """The plugin keys its call counts as the junit report names the tests, so the two can be joined."""
    assert plugin.junit_name("test_x.py::TestA::test_b[p-1]") == "test_x.TestA::test_b[p-1]"
    assert plugin.junit_name("tests/test_y.py::test_c") == "tests.test_y::test_c"
    assert plugin.junit_name("tests/test_y.py::C::test_d[a/b::c]") == "tests.test_y.C::test_d[a/b::c]"


def test_report_counts_tests_run_and_calling_the_helper() -> None:
    outcomes = {"t::a": "passed", "t::b": "skipped", "t::c": "passed"}
    entry = {
        "outcomes": {"peer": outcomes, "tiegraph": outcomes, "truth": {**outcomes, "t::c": "failed"}},
        "version": "1.0",
        "made": "when",
        "environment": "Python 3, torch 2, transformers 5",
        "calls": {"t::a": 2},
        "same_calls": True,
        "minutes": 1.5,
    }
    table = run.report({"accelerate": entry})
    row = next(line for line in table.splitlines() if line.startswith("| accelerate |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells == [
        "accelerate",
        "1.0",
        "when",
        "Python 3, torch 2, transformers 5",
        "3",  # tie-related tests
        "2",  # run here (not skipped)
        "1",  # called the helper
        "2",
        "2",
        "1",
        "met",
        "1.5",
    ]
    assert "| accelerate | `t::c` | passed | passed | failed | **not explained** |" in table
    assert "reached every call site: accelerate yes." in table
