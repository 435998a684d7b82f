"""Rendering the picture with Graphviz (pygraphviz, in a child process), and the Jupyter reprs.

A notebook displays a :class:`~tiegraph.TieGraph` once per cell, asking for HTML and SVG together; the
default picture is rendered once per graph and kept (see :meth:`TieGraph._repr_svg_`).
"""

from __future__ import annotations

import re
import subprocess
import sys
from typing import TYPE_CHECKING, Any

from ._dot import to_dot
from ._graph import view_of
from ._picture import esc
from ._text import plural
from .errors import NoInputEmbeddingError, RenderError

if TYPE_CHECKING:
    from ._graph import TieGraph

#: Run in a child process: a Graphviz crash (it segfaults on some layouts) must not take the caller (a
#: Jupyter kernel) down with it, and Graphviz's Fontconfig chatter stays out of the caller's stderr.
_DRAW = (
    "import sys, pygraphviz\n"
    "dot = sys.stdin.buffer.read().decode('utf-8')\n"
    "sys.stdout.buffer.write(pygraphviz.AGraph(string=dot).draw(format=sys.argv[1], prog='dot'))\n"
)


def render(tg: TieGraph, format: str = "svg", **options: Any) -> bytes:
    """The picture rendered by Graphviz (through pygraphviz) as ``svg``, ``png`` or ``pdf`` bytes.

    Raises
    ------
    RenderError
        If pygraphviz is not installed (``pip install 'tiegraph[render]'``) or Graphviz fails.
    """
    return draw(to_dot(tg, **options), format)


def draw(dot: str, format: str, timeout: float = 120.0) -> bytes:
    """Render DOT with pygraphviz (``AGraph(string=dot).draw(format=..., prog="dot")``) in a child process."""
    import importlib.util

    if importlib.util.find_spec("pygraphviz") is None:
        raise RenderError(
            f"rendering {format.upper()} needs pygraphviz (its wheels bundle Graphviz): "
            "pip install 'tiegraph[render]'. to_dot() and write('x.dot') work without it."
        )
    try:
        done = subprocess.run(
            [sys.executable, "-c", _DRAW, format],
            input=dot.encode("utf-8"),
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise RenderError(f"could not run Graphviz (pygraphviz) to render {format.upper()}: {exc}") from exc
    if done.returncode != 0 or not done.stdout:
        errors = [
            line
            for line in done.stderr.decode("utf-8", "replace").splitlines()
            if line.strip() and "Fontconfig" not in line
        ]
        why = f"crashed (signal {-done.returncode})" if done.returncode < 0 else "failed"
        detail = errors[-1] if errors else "no output"
        raise RenderError(
            f"Graphviz {why} rendering {format.upper()}: {detail}. Check the pygraphviz install "
            "(pip install --force-reinstall 'tiegraph[render]'), or write DOT with to_dot() and run "
            f"'dot -T{format}' yourself."
        )
    return done.stdout


def to_svg(tg: TieGraph, **options: Any) -> str:
    """The picture rendered to SVG text by pygraphviz. Options as for :func:`tiegraph.export.to_pydot`.

    Raises
    ------
    RenderError
        If pygraphviz is missing (``pip install 'tiegraph[render]'``) or Graphviz fails.

    Examples
    --------
    >>> import torch, tiegraph
    >>> m = torch.nn.Module()
    >>> m.embed = torch.nn.Embedding(8, 4)
    >>> "<svg" in tiegraph.build_graph(m, input_embedding="embed").to_svg()
    True
    """
    return render(tg, "svg", **options).decode("utf-8")


# ---------------------------------------------------------------------------------------------- Jupyter


def repr_svg(tg: TieGraph) -> str | None:
    """The default picture as SVG text for Jupyter, or None when it cannot be rendered (never raises)."""
    try:
        return to_svg(tg)
    except Exception:  # a display hook must not fail the cell
        return None


_XML_PROLOGUE = re.compile(r"\A\s*(<\?xml[^>]*>\s*)?(<!DOCTYPE[^>]*>\s*)?(<!--.*?-->\s*)*", re.S)


def summary(tg: TieGraph) -> list[str]:
    """The short summary lines shown by :func:`repr_html` (plain text)."""
    view = view_of(tg)
    root = view.module_cls(0) if view.num_modules else "?"
    groups = tg.tie_groups()
    lines = [
        f"{root}: {plural(tg.num_modules, 'module path')}, {plural(tg.num_slots, 'slot')}, "
        f"{plural(len(groups), 'tie group')}"
    ]
    embedding = tg.input_embedding()
    if embedding is None:
        lines.append("no input embedding found")
    else:
        try:
            tied = tg.tied_to_input_embedding()
        except NoInputEmbeddingError:
            tied = []
        lines.append(f"input embedding {embedding}; tied to it: {', '.join(tied) if tied else 'nothing'}")
    return lines


def repr_html(tg: TieGraph, svg: str | None = None) -> str:
    """A short HTML summary, followed by the picture (``svg``, default: rendered now) when there is one.

    Jupyter front ends prefer HTML to SVG, so the picture is embedded here too.

    Examples
    --------
    >>> import torch, tiegraph
    >>> m = torch.nn.Module()
    >>> m.embed = torch.nn.Embedding(8, 4)
    >>> print(tiegraph.build_graph(m, input_embedding="embed")._repr_html_().split("<div>")[1][:60])
    <b>TieGraph</b> Module: 2 module paths, 1 slot, 0 tie groups
    """
    lines = summary(tg)
    head = f"<b>TieGraph</b> {esc(lines[0])}<br/>" + "<br/>".join(esc(line) for line in lines[1:])
    if svg is None:
        svg = repr_svg(tg)
    picture = _XML_PROLOGUE.sub("", svg) if svg else "<i>(no picture: pip install 'tiegraph[render]')</i>"
    return f'<div class="tiegraph"><div>{head}</div>{picture}</div>'
