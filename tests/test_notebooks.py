"""Every notebook in ``notebooks/`` runs top to bottom without an error, in this venv's Python.

Notebooks are stored as jupytext percent scripts (``notebooks/*.py``) so that diffs stay readable; the test
converts each to a notebook in memory and executes it with nbclient. The kernel is started from
``sys.executable`` through a kernel spec written to a temporary ``JUPYTER_PATH``, so it runs in the same
venv as the tests whatever ``python`` means on ``PATH``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jupytext
import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.py"))
KERNEL = "tiegraph-tests"


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ holds no jupytext scripts"


@pytest.fixture
def kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A kernel spec running ``sys.executable -m ipykernel_launcher``, found through JUPYTER_PATH."""
    spec = tmp_path / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    spec_json = {"argv": argv, "display_name": KERNEL, "language": "python"}
    (spec / "kernel.json").write_text(json.dumps(spec_json))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
    monkeypatch.setenv("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    return KERNEL


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path: Path, kernel: str) -> None:
    nb = jupytext.read(path)
    client = NotebookClient(
        nb, kernel_name=kernel, timeout=600, resources={"metadata": {"path": str(path.parent)}}
    )
    client.execute()  # raises CellExecutionError, naming the cell, on any error
    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", [])]
    errors = [out for out in outputs if out.get("output_type") == "error"]
    assert not errors, errors
    pictures = [out for out in outputs if "<svg" in str(out.get("data", {}).get("text/html", ""))]
    pictures += [out for out in outputs if "image/svg+xml" in out.get("data", {})]
    shown = sum(1 for cell in nb.cells if cell.cell_type == "code" and "display(" in cell.source)
    assert len(pictures) >= shown, "a step that shows its graph rendered no picture"
    nbformat.validate(nb)
