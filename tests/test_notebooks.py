"""Every notebook in ``notebooks/`` runs top to bottom without an error, and its two files agree.

Each notebook is a pair: a jupytext percent script (``notebooks/*.py``, the file to edit and review) and the
executed ``.ipynb`` with its answers and pictures saved (the file a reader opens on a code host or in plain
Jupyter), written by ``python3 dev.py notebooks``. One test fails when the pair's cells differ; the other
converts the script to a notebook in memory and executes it with nbclient. The kernel is started from
``sys.executable`` through a kernel spec written to a temporary ``JUPYTER_PATH``, so it runs in the same
venv as the tests whatever ``python`` means on ``PATH``; its IPython and Jupyter state stays in the
temporary directory.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import jupytext
import nbformat
import pytest
from nbclient import NotebookClient


def _execute_module() -> ModuleType:
    """``notebooks/execute.py`` (what ``python3 dev.py notebooks`` runs): the same scripts and kernel spec."""
    path = Path(__file__).resolve().parent.parent / "notebooks" / "execute.py"
    spec = importlib.util.spec_from_file_location("notebooks_execute", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


execute = _execute_module()
NOTEBOOKS = execute.scripts()  # the jupytext scripts, not notebooks/execute.py


def test_there_are_notebooks() -> None:
    assert NOTEBOOKS, "notebooks/ holds no jupytext scripts"


def _cells(nb: nbformat.NotebookNode) -> list[tuple[str, str]]:
    return [(cell.cell_type, cell.source.strip()) for cell in nb.cells]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_pair_in_sync(path: Path) -> None:
    """The saved .ipynb has the script's cells, every code cell executed, answers and pictures kept."""
    saved_path = path.with_suffix(".ipynb")
    assert saved_path.exists(), f"{saved_path.name} is missing: run `python3 dev.py notebooks`"
    saved = nbformat.read(saved_path, as_version=4)
    nbformat.validate(saved)
    assert _cells(saved) == _cells(jupytext.read(path)), (
        f"{saved_path.name} is out of sync with {path.name}: run `python3 dev.py notebooks`"
    )
    assert "ipynb" in jupytext.read(path).metadata["jupytext"]["formats"], "pair the script: formats ipynb,py"
    code = [cell for cell in saved.cells if cell.cell_type == "code"]
    assert all(cell.execution_count for cell in code), f"{saved_path.name} has cells that never ran"
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), "not executed top to bottom"
    outputs = [out for cell in code for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    shown = sum(1 for cell in code if "display(" in cell.source)
    pictures = [out for out in outputs if {"image/svg+xml", "image/png"} & set(out.get("data", {}))]
    pictures += [out for out in outputs if "<svg" in str(out.get("data", {}).get("text/html", ""))]
    assert len(pictures) >= shown, f"{saved_path.name}: a step that shows its graph saved no picture"


@pytest.fixture
def kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A kernel spec running ``sys.executable -m ipykernel_launcher`` with no IPython history database
    (``notebooks/execute.py``'s ``kernel_spec``), found through JUPYTER_PATH."""
    name: str = execute.kernel_spec(tmp_path)
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
    for var, sub in [
        ("IPYTHONDIR", "ipython"),
        ("JUPYTER_RUNTIME_DIR", "runtime"),
        ("JUPYTER_DATA_DIR", "data"),
    ]:
        monkeypatch.setenv(var, str(tmp_path / sub))  # not ~/.ipython, ~/.local/share/jupyter
    monkeypatch.setenv("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    return name


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
    saved = nbformat.read(path.with_suffix(".ipynb"), as_version=4)
    assert _pictures(saved) == _pictures(nb), (
        f"{path.with_suffix('.ipynb').name} holds pictures the current renderer no longer draws: run "
        "`python3 dev.py notebooks`"
    )


def _pictures(nb: nbformat.NotebookNode) -> list[str]:
    """Every SVG a notebook shows, in order, addresses blanked (:func:`test_pictures.same_picture`)."""
    from test_pictures import same_picture

    found = []
    for cell in nb.cells:
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            data = out.get("data", {})
            for text in (data.get("image/svg+xml"), data.get("text/html")):
                if isinstance(text, list):
                    text = "".join(text)
                if text and "<svg" in text:
                    found.append(same_picture(text))
    return found
