"""The command line answers ``--version``, ``--help`` and usage errors without importing torch.

torch (and transformers) take seconds to import; a user who mistypes a flag or asks for help should not
wait for them. Speed itself is measured in ``benchmarks/targets.py``; here, what must not be imported.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "networkx", "pydot", "safetensors")

SCRIPT = """
import sys
from tiegraph.cli import main
code = main({argv!r})
print("LOADED", sorted({{m.split(".")[0] for m in sys.modules}} & set({heavy!r})), code, file=sys.stderr)
"""


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["--version"], 0),
        (["--help"], 0),
        (["inspect", "--help"], 0),
        (["inspect"], 2),
        (["inspect", "llama", "--no-such-flag"], 2),
        (["no-such-command"], 2),
    ],
)
def test_answers_without_heavy_imports(argv: list[str], code: int) -> None:
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(argv=argv, heavy=HEAVY)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert f"LOADED [] {code}" in run.stderr, run.stderr


def test_import_tiegraph_loads_no_torch() -> None:
    """``import tiegraph`` imports what a public name needs only when that name is first used."""
    script = "import sys, tiegraph; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "[]"
    script = "import tiegraph; print(tiegraph.build_graph.__module__, tiegraph.testing.__name__)"
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert run.stdout.split() == ["tiegraph._build", "tiegraph.testing"]
