"""Packaging a user and a maintainer expect: declared imports, one version, pinned test environment.

These read the repository's own files (``pyproject.toml``, ``constraints.txt``, ``README.md``, git's
index), so a dependency added without its pin, or a README that names other versions than the pins,
fails here rather than on somebody's machine.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import tiegraph

ROOT = Path(__file__).resolve().parents[1]

if sys.version_info < (3, 11):  # pragma: no cover - the pinned environment is CPython 3.11
    pytest.skip("tomllib needs Python 3.11 (the pinned test environment)", allow_module_level=True)
import tomllib  # type: ignore[import-not-found,unused-ignore]  # noqa: E402 -- after the guard (mypy: 3.10)


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(spec: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", spec)
    assert match, spec
    return _canonical(match.group(1))


PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
DEPENDENCIES = {_requirement_name(s) for s in PROJECT["dependencies"]}
EXTRAS = {
    extra: {_requirement_name(s) for s in specs} for extra, specs in PROJECT["optional-dependencies"].items()
}


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep, f"constraints.txt: {line!r} is not an exact pin (name==version)"
            pins[_canonical(name)] = version.strip()
    return pins


def test_license_is_apache_and_shipped() -> None:
    assert PROJECT["license"] == "Apache-2.0"
    assert PROJECT["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text
    assert "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text  # the full text, not a stub


def test_version_is_written_once() -> None:
    """pyproject reads the version from ``tiegraph.__version__``; no other file spells it."""
    assert "version" not in PROJECT
    assert "version" in PROJECT["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "tiegraph.__version__"}
    spelled = [
        str(path.relative_to(ROOT))
        for path in [*(ROOT / "tiegraph").rglob("*.py"), ROOT / "pyproject.toml"]
        if re.search(rf"[\"' ]{re.escape(tiegraph.__version__)}[\"'\n]", path.read_text())
    ]
    assert spelled == ["tiegraph/__init__.py"], spelled


def test_every_third_party_import_of_the_library_is_declared() -> None:
    """tqdm was imported but not declared once; every top-level import must be a dependency or extra."""
    declared = DEPENDENCIES.union(*EXTRAS.values())
    distributions = importlib.metadata.packages_distributions()
    missing = {}
    for path in (ROOT / "tiegraph").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top in sys.stdlib_module_names or top == "tiegraph":
                    continue
                dists = {_canonical(d) for d in distributions.get(top, [top])}
                if not dists & declared:
                    missing[top] = str(path.relative_to(ROOT))
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_maintainer_tools_are_dev_not_test() -> None:
    assert {"ruff", "mypy"} <= EXTRAS["dev"]
    assert not {"ruff", "mypy"} & EXTRAS["test"]
    assert {"sphinx", "myst-nb", "furo"} <= EXTRAS["docs"]


def test_every_declared_package_is_pinned() -> None:
    """The test environment is pinned: whatever an extra asks for has a ``name==version`` line."""
    pins = _pins()
    unpinned = sorted(DEPENDENCIES.union(*EXTRAS.values()) - pins.keys())
    assert not unpinned, f"add `name==version` lines to constraints.txt for {unpinned}"
    lines = [line for line in (ROOT / "constraints.txt").read_text().splitlines() if not line.startswith("#")]
    assert lines == sorted(lines, key=str.lower), "keep constraints.txt in alphabetical order"


def test_the_running_environment_matches_the_pins() -> None:
    """The suite runs in the pinned environment (dev.py installs with -c constraints.txt)."""
    pins = _pins()
    for name in ["torch", "transformers", "peft", "accelerate", "safetensors", "networkx"]:
        installed = importlib.metadata.version(name).split("+")[0]
        assert installed == pins[name], f"{name} {installed} installed, constraints.txt pins {pins[name]}"


def test_readme_states_the_pinned_versions() -> None:
    """The README's "Tested with" line names exactly the versions constraints.txt pins."""
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"Tested with[^:]*:(.*?)\.\s", readme, flags=re.S)
    assert match, "README.md has no 'Tested with ...:' sentence"
    stated = re.findall(r"\b([a-z][a-z0-9_-]+) (\d+(?:\.\d+)+)", match.group(1))
    assert len(stated) >= 5, stated
    pins = _pins()
    wrong = {name: (version, pins.get(_canonical(name))) for name, version in stated}
    wrong = {name: pair for name, pair in wrong.items() if pair[0] != pair[1]}
    assert not wrong, f"README version vs constraints.txt pin: {wrong}"


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="not a git checkout")
def test_no_tracked_file_is_git_ignored() -> None:
    """A file both tracked and ignored (docs/survey.md once) silently stops being updated by `git add .`."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--ignored", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.split() == []
