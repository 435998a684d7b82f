"""The README's Python examples run and print what the README says they print."""

from __future__ import annotations

import ast
import re
from pathlib import Path

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


def test_other_python_snippets_parse() -> None:
    """The other snippets are valid Python (they continue the first one's session)."""
    for block in _python_blocks()[1:]:
        ast.parse(block)
