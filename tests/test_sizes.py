"""Sizes a reader can hold in mind: no function over 60 lines of code, no module over 500 lines.

Lines of code exclude docstrings, comments and blank lines. ``ruff``'s complexity rule (C901, at most
12) covers the other half; the modules below that still exceed a limit are listed, and the lists only
shrink (a test fails when an entry is no longer needed).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FILES = sorted((ROOT / "tiegraph").rglob("*.py"))
MAX_FUNCTION = 60
MAX_MODULE = 500

#: Functions not yet split (module path: function name), with their lines of code when listed.
LONG_FUNCTIONS: set[str] = set()

#: Modules not yet split, with their lines when listed.
LONG_MODULES: set[str] = set()


def code_lines(source: list[str], node: ast.AST) -> int:
    """Lines of ``node`` that hold code: not blank, not only a comment, not a docstring."""
    lines = set(range(node.lineno, node.end_lineno + 1))  # type: ignore[attr-defined]
    for inner in ast.walk(node):
        body = getattr(inner, "body", None)
        if isinstance(inner, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and body:
            first = body[0]
            value = getattr(first, "value", None)
            if (
                isinstance(first, ast.Expr)
                and isinstance(value, ast.Constant)
                and isinstance(value.value, str)
            ):
                lines -= set(range(first.lineno, first.end_lineno + 1))  # type: ignore[operator]
    return sum(1 for n in lines if source[n - 1].strip() and not source[n - 1].strip().startswith("#"))


def measure() -> tuple[dict[str, int], dict[str, int]]:
    """(``path:function`` -> lines of code over the limit, module path -> lines over the limit)."""
    functions, modules = {}, {}
    for path in FILES:
        text = path.read_text()
        source = text.splitlines()
        name = str(path.relative_to(ROOT))
        if len(source) > MAX_MODULE:
            modules[name] = len(source)
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                size = code_lines(source, node)
                if size > MAX_FUNCTION:
                    functions[f"{name}:{node.name}"] = size
    return functions, modules


FUNCTIONS, MODULES = measure()


def test_the_measure_counts_code_only() -> None:
    """A docstring, comments and blank lines do not count; every statement line does."""
    source = 'def f():\n    """Doc\n    string."""\n\n    # comment\n    x = 1\n    return x\n'
    node = ast.parse(source).body[0]
    assert code_lines(source.splitlines(), node) == 3


def test_no_function_over_60_lines_of_code() -> None:
    """Every function but the listed ones has at most 60 lines of code."""
    assert set(FUNCTIONS) - LONG_FUNCTIONS == set()


def test_no_module_over_500_lines() -> None:
    """Every module but the listed ones has at most 500 lines."""
    assert set(MODULES) - LONG_MODULES == set()


@pytest.mark.parametrize("listed", sorted(LONG_FUNCTIONS | LONG_MODULES))
def test_the_lists_only_shrink(listed: str) -> None:
    """A listed function or module that is now short enough leaves the list."""
    assert listed in FUNCTIONS or listed in MODULES
