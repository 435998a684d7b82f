"""Every committed picture is what the current code draws (regression: the README's picture and the
notebook's saved pictures were drawn by an older renderer, "storage t0/t15", "buffer slot", and no test
noticed).

Each committed picture is listed in :data:`PICTURES` with how it is made; a picture file no entry covers
fails :func:`test_every_committed_picture_is_listed`. The notebook's saved pictures are compared with a
fresh execution in ``tests/test_notebooks.py`` (:func:`same_picture` is shared). What is compared is what
the renderer decides: every label, tooltip, colour and line style, in order; not the geometry Graphviz
computes from the fonts a machine has (coordinates, sizes), and not storage addresses in tooltips
(``cpu:0x55...``), which differ from run to run.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest

import tiegraph

ROOT = Path(__file__).resolve().parent.parent
_ADDRESS = re.compile(r"0x[0-9a-f]+")
_GEOMETRY = re.compile(r'\s(?:x|y|cx|cy|rx|ry|points|d|width|height|viewBox|transform)="[^"]*"')


def same_picture(svg: str) -> str:
    """An SVG without what depends on the machine or the run (geometry, storage addresses).

    Examples
    --------
    >>> same_picture('<text x="8" y="-3.5" fill="#666">storage cpu:0x55ec4b9d</text>')
    '<text fill="#666">storage cpu:0x?</text>'
    """
    return _GEOMETRY.sub("", _ADDRESS.sub("0x?", svg))


def _demo_stop(stem: str) -> Callable[[], str]:
    """The SVG ``tiegraph demo`` draws for one of its stops (``python -m tiegraph demo --out DIR``)."""

    def draw() -> str:
        from tiegraph.cli.demo import STOPS

        (factory,) = [factory for name, _, factory, _ in STOPS if name == stem]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return tiegraph.build_graph(factory()).to_svg()

    return draw


#: committed picture -> how it is made (regenerate: `tiegraph demo --out DIR`, copy the stop's SVG)
PICTURES: dict[str, Callable[[], str]] = {
    "docs/img/modules-to-save.svg": _demo_stop("4-modules-to-save"),
}


@pytest.mark.parametrize("name", sorted(PICTURES))
def test_committed_picture_is_what_the_code_draws(name: str) -> None:
    committed = (ROOT / name).read_text()
    drawn = PICTURES[name]()
    assert same_picture(drawn) == same_picture(committed), (
        f"{name} differs from what the current renderer draws: regenerate it (see PICTURES)"
    )


def test_every_committed_picture_is_listed() -> None:
    """A picture added to the repository without an entry here would go stale unnoticed."""
    found = {
        str(p.relative_to(ROOT))
        for suffix in ("*.svg", "*.png")
        for p in ROOT.rglob(suffix)
        if not {"_build", ".venv", "node_modules", ".git"} & set(p.relative_to(ROOT).parts)
    }
    assert found == set(PICTURES)
