"""The README's examples run and print what the README says they print.

The README keeps what a first visit needs; every other example lives on the documentation site (``docs/``),
whose pages are executed by ``python3 dev.py docs``.
"""

from __future__ import annotations

import ast
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_python_api_example_answers_match_its_comments() -> None:
    """Every `expression  # literal` statement of the Python API example evaluates to that literal."""
    assert _check_answers(_python_blocks()[0]) >= 6


def _check_answers(block: str) -> int:
    lines = block.splitlines()
    namespace: dict[str, object] = {}
    checked = 0
    for statement in ast.parse(block).body:
        source = "\n".join(lines[statement.lineno - 1 : statement.end_lineno])
        code, _, comment = source.rpartition("  # ")
        if isinstance(statement, ast.Expr) and code:
            try:
                expected = ast.literal_eval(comment.strip())
            except (ValueError, SyntaxError):
                expected = None
            if expected is not None:
                assert eval(code, namespace) == expected, source
                checked += 1
                continue
        exec(compile(ast.Module([statement], []), "README.md", "exec"), namespace)
    return checked


def test_other_python_snippets_parse() -> None:
    """The other snippets are valid Python (they continue the first one's session)."""
    for block in _python_blocks()[1:]:
        ast.parse(block)


def _section(heading: str) -> str:
    text = README.read_text()
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


@pytest.mark.slow
def test_command_line_example_prints_what_it_says() -> None:
    """The command-line example runs: its lines are printed in order ("..." elides) with its exit code."""
    (block,) = re.findall(r"```text\n(.*?)```", _section("Command line"), flags=re.S)
    lines = block.splitlines()
    command, expected_exit = lines[0], lines[-1]
    assert command.startswith("$ tiegraph "), block
    assert lines[-2] == "$ echo $?", block
    expected = [line.rstrip() for line in lines[1:-2] if line.strip() != "..."]
    result = subprocess.run(
        [sys.executable, "-m", "tiegraph", *shlex.split(command.removeprefix("$ tiegraph "))],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == int(expected_exit), result.stderr
    shown = [line.rstrip() for line in result.stdout.splitlines()]
    position = 0
    for line in expected:
        assert line in shown[position:], f"README line not printed (in order): {line!r}\n{result.stdout}"
        position = shown.index(line, position) + 1


def test_relative_links_and_pictures_exist() -> None:
    """Every relative link and picture of the README points at a file of the repository."""
    targets = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README.read_text())
    relative = [t for t in targets if "://" not in t]
    assert len(relative) >= 10, relative
    missing = [t for t in relative if not (README.parent / t).exists()]
    assert not missing, missing
