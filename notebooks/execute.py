"""Execute every jupytext script ``notebooks/*.py`` into its paired ``notebooks/*.ipynb``, outputs saved.

Run it after editing a notebook script: ``python3 dev.py notebooks`` (or this file with the venv's Python).
The ``.py`` file is the one to review and edit; the ``.ipynb`` holds the same cells with their answers and
pictures, so it reads on a code host and opens in plain Jupyter. ``tests/test_notebooks.py`` fails when a
pair is out of sync.

The kernel is this interpreter (``sys.executable -m ipykernel_launcher``), found through a kernel spec in a
temporary ``JUPYTER_PATH``; the saved notebooks keep the generic ``python3`` kernel name. No execution
timestamps are recorded and cell ids are numbered, so re-running an unchanged notebook changes nothing but
what the code shows. Output a library writes to stderr while importing (torch and torchao log lines with
timestamps) is not saved: it is noise, not an answer.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
KERNEL = "tiegraph-notebooks"


def scripts() -> list[Path]:
    """The jupytext scripts: every ``*.py`` here that has a jupytext header (this file has none)."""
    return sorted(p for p in HERE.glob("*.py") if p.read_text().startswith("# ---\n# jupyter:"))


def kernel_spec(directory: Path) -> str:
    """Write a kernel spec running this interpreter with no IPython history; return its name."""
    spec = directory / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [
        sys.executable,
        "-m",
        "ipykernel_launcher",
        "-f",
        "{connection_file}",
        "--HistoryManager.enabled=False",
    ]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": KERNEL, "language": "python"})
    )
    return KERNEL


def execute(script: Path, kernel: str, timeout: int = 600) -> nbformat.NotebookNode:
    """The notebook of ``script``, executed in ``kernel``, metadata as plain Jupyter writes it."""
    nb: nbformat.NotebookNode = jupytext.read(script)
    client = NotebookClient(
        nb,
        kernel_name=kernel,
        timeout=timeout,
        record_timing=False,
        resources={"metadata": {"path": str(script.parent)}},
    )
    client.execute()
    for number, cell in enumerate(nb.cells):
        cell.id = f"cell-{number:02d}"
        if cell.cell_type == "code":
            cell.outputs = [out for out in cell.outputs if out.get("name") != "stderr"]
    nb.metadata["kernelspec"] = {
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
        "name": "python3",
    }
    nb.metadata.pop("widgets", None)
    nb.metadata["jupytext"] = {"formats": "ipynb,py:percent"}
    nbformat.validate(nb)
    return nb


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="tiegraph-notebooks-") as tmp:
        os.environ["JUPYTER_PATH"] = tmp
        for var, sub in [("IPYTHONDIR", "ipython"), ("JUPYTER_RUNTIME_DIR", "runtime")]:
            os.environ.setdefault(var, str(Path(tmp) / sub))
        kernel = kernel_spec(Path(tmp))
        for script in scripts():
            print(f"executing {script.name}", flush=True)
            nb = execute(script, kernel)
            target = script.with_suffix(".ipynb")
            nbformat.write(nb, target)
            print(f"wrote {target.relative_to(HERE.parent)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
