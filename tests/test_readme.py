"""The README's Python examples run and print what the README says they print."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_python_api_example_answers_match_its_comments() -> None:
    """Every `expression  # literal` statement of the Python API example evaluates to that literal."""
    assert _check_answers(_python_blocks()[0]) >= 6


def test_offloaded_and_quantized_example_answers_match_its_comments() -> None:
    """The "Offloaded and quantized models" example: one real library case per answer line."""
    section = README.read_text().split("## Offloaded and quantized models", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert _check_answers(block) >= 8


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


def _section_blocks(heading: str) -> list[str]:
    text = README.read_text()
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start : end if end > 0 else None], flags=re.S)


def test_what_did_this_step_do_runs() -> None:
    """The diff section runs top to bottom: `expr  # literal` lines evaluate to the literal, and a line
    commented `# AssertionError: text ...` raises AssertionError whose message starts with that text."""
    namespace: dict[str, object] = {}
    checked = raised = 0
    for block in _section_blocks("What did this step do?"):
        lines = block.splitlines()
        for statement in ast.parse(block).body:
            source = "\n".join(lines[statement.lineno - 1 : statement.end_lineno])
            code, _, comment = source.rpartition("  # ")
            comment = comment.strip()
            if isinstance(statement, ast.Expr) and code and comment.startswith("AssertionError: "):
                message = comment.removeprefix("AssertionError: ").removesuffix("...").strip()
                with pytest.raises(AssertionError) as info:
                    exec(code, namespace)
                assert str(info.value).startswith(message), (source, str(info.value))
                raised += 1
                continue
            if isinstance(statement, ast.Expr) and code:
                try:
                    expected = ast.literal_eval(comment)
                except (ValueError, SyntaxError):
                    expected = None
                if expected is not None:
                    assert eval(code, namespace) == expected, source
                    checked += 1
                    continue
            exec(compile(ast.Module([statement], []), "README.md", "exec"), namespace)
    assert checked >= 6 and raised == 1


def test_other_python_snippets_parse() -> None:
    """The other snippets are valid Python (they continue the first one's session)."""
    for block in _python_blocks()[1:]:
        ast.parse(block)
