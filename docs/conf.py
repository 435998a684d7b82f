"""Sphinx configuration of tiegraph's documentation site (``python3 dev.py docs``).

Pages are MyST Markdown. Recipes, concepts and the finding kinds are MyST-NB text notebooks executed at
build time, so every example on them runs and a failing cell fails the build. The executed notebooks of
``notebooks/`` are rendered with their stored outputs. The API reference and the command-line reference
are generated here from ``__all__`` and the argparse parser, so neither can drift from the code.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import pkgutil
import re
import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))  # document this checkout, whatever is installed

import tiegraph  # noqa: E402

project = "tiegraph"
author = "the tiegraph authors"
copyright = "the tiegraph authors, Apache-2.0"
release = version = tiegraph.__version__

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "numpydoc",
]

exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints", "jupyter_execute"]
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb"}
suppress_warnings: list[str] = []

# -- MyST and notebooks ------------------------------------------------------------------------------
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3
# Text notebooks (recipes, concepts, findings) run at build time; a cell that raises fails the build.
# The .ipynb files of notebooks/ are stored executed (tests/test_notebooks.py keeps them in sync).
nb_execution_mode = "auto"
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_execution_timeout = 300
nb_execution_excludepatterns = ["notebooks/*"]
nb_merge_streams = True
nb_render_markdown_format = "myst"  # Markdown outputs (tables) parsed like the pages
nb_output_stderr = "remove"  # library import noise (torchao, bitsandbytes), not part of the example
nb_mime_priority_overrides = [("html", "image/svg+xml", 5)]

# -- autodoc and numpydoc ----------------------------------------------------------------------------
autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "none"  # numpydoc's Parameters section says it, in words
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

# -- HTML --------------------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"tiegraph {release}"
html_static_path: list[str] = []
html_theme_options = {"navigation_with_keys": True}

nitpicky = True
# Types from other libraries: no inventories are fetched (the build works offline).
nitpick_ignore_regex = [
    (r"py:.*", r"(torch|nn|networkx|nx|pydot|peft|transformers|accelerate|safetensors|numpy)(\..*)?"),
    (r"py:.*", r"(Path|Sequence|Iterable|Iterator|Mapping|Callable|Any|Literal|Enum)(\..*)?"),
    (r"py:.*", r"(collections\.abc|typing|pathlib|os|argparse|dataclasses|enum)\..*"),
    (r"py:.*", r"tiegraph\._.*"),  # private modules are not documented
    (r"py:meth", r"(.*\.)?__\w+__"),  # special methods (str(), repr()) are described in prose
]


# -- generated pages ---------------------------------------------------------------------------------
GENERATED = DOCS / "api" / "generated"


def public_modules() -> list[str]:
    """``tiegraph`` and every public submodule (no leading underscore) that defines ``__all__``."""
    names = ["tiegraph"]
    for info in sorted(pkgutil.iter_modules(tiegraph.__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            module = importlib.import_module(f"tiegraph.{info.name}")
            if hasattr(module, "__all__"):
                names.append(module.__name__)
    return names


def _directive(obj: object) -> str:
    if inspect.isclass(obj):
        return "autoclass"
    if inspect.isfunction(obj) or inspect.isbuiltin(obj):
        return "autofunction"
    return "autodata"


def _summary(obj: object) -> str:
    """The first paragraph of the docstring as Markdown (reST roles and double backticks made code)."""
    doc = inspect.getdoc(obj) if inspect.isclass(obj) or callable(obj) or inspect.ismodule(obj) else None
    text = (doc or "").strip().split("\n\n")[0].replace("\n", " ")
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"`\1`", text)
    return text.replace("``", "`").replace("|", "\\|")


def documented_names() -> tuple[dict[str, str], dict[str, list[str]]]:
    """Where each public object is documented, and every exported name pointing at it.

    An object is documented once: under the public module that defines it (``ConfigurationError`` under
    ``tiegraph.errors``), else under the first public module exporting it (``TieGraph``, defined in the
    private ``tiegraph._graph``, under ``tiegraph``). Returns ``{exported name: documented name}``
    (``"tiegraph.ConfigurationError": "tiegraph.errors.ConfigurationError"``) and ``{module: [names it
    documents]}``.
    """
    modules = public_modules()
    home: dict[int, str] = {}
    for name in modules:
        module = importlib.import_module(name)
        for attr in module.__all__:
            obj = getattr(module, attr)
            if inspect.ismodule(obj):
                continue
            defined_in = getattr(obj, "__module__", None)
            home_module = importlib.import_module(defined_in) if defined_in in modules else None
            if home_module is not None and attr in home_module.__all__ and getattr(home_module, attr) is obj:
                home.setdefault(id(obj), f"{defined_in}.{attr}")
            home.setdefault(id(obj), f"{name}.{attr}")
    aliases: dict[str, str] = {}
    owned: dict[str, list[str]] = {name: [] for name in modules}
    for name in modules:
        module = importlib.import_module(name)
        for attr in module.__all__:
            obj = getattr(module, attr)
            if inspect.ismodule(obj):
                continue
            aliases[f"{name}.{attr}"] = home[id(obj)]
            if home[id(obj)] == f"{name}.{attr}":
                owned[name].append(attr)
    return aliases, owned


ALIASES, OWNED = documented_names()


def write_api_pages() -> None:
    """One page per public module documenting the objects it owns and linking the ones it re-exports."""
    if GENERATED.exists():
        shutil.rmtree(GENERATED)
    GENERATED.mkdir(parents=True)
    for name in public_modules():
        module = importlib.import_module(name)
        lines = [f"# `{name}`", "", "```{eval-rst}", f".. automodule:: {name}", "   :no-members:", "```", ""]
        elsewhere = [a for a in module.__all__ if a not in OWNED[name]]
        if elsewhere:
            lines += [f"Exported by `{name}`, documented where they are defined:", ""]
            lines += ["| name | summary |", "|---|---|"]
            for attr in elsewhere:
                obj = getattr(module, attr)
                target = obj.__name__ if inspect.ismodule(obj) else ALIASES[f"{name}.{attr}"]
                role = "mod" if inspect.ismodule(obj) else "obj"
                lines.append(f"| {{py:{role}}}`{attr} <{target}>` | {_summary(obj)} |")
            lines.append("")
        for attr in OWNED[name]:
            obj = getattr(module, attr)
            options = ["   :members:", "   :undoc-members:"] if inspect.isclass(obj) else []
            lines += ["```{eval-rst}", f".. {_directive(obj)}:: {name}.{attr}", *options, "```", ""]
        (GENERATED / f"{name}.md").write_text("\n".join(lines))
    index = [
        "# API reference",
        "",
        "Every public name: `tiegraph.__all__` and the `__all__` of each public submodule, from their",
        "docstrings. An object is documented once, in the module that defines it; the others link to it.",
        "",
        "```{toctree}",
        ":maxdepth: 1",
        "",
        *public_modules(),
        "```",
        "",
    ]
    (GENERATED / "index.md").write_text("\n".join(index))


def _find_parser(module: object) -> argparse.ArgumentParser:
    """The module's parser factory: a function taking no arguments whose name says ``parser``."""
    for name, fn in sorted(vars(module).items(), key=lambda item: item[0] != "build_parser"):
        if "parser" in name.lower() and inspect.isfunction(fn):
            required = [p for p in inspect.signature(fn).parameters.values() if p.default is p.empty]
            if not required:
                parser = fn()
                if isinstance(parser, argparse.ArgumentParser):
                    return parser
    raise RuntimeError(
        "tiegraph.cli.parser has no parser factory (a function named *parser* taking no arguments)"
    )


def write_cli_page() -> None:
    """The command-line reference, from the argparse parser itself: it cannot drift from the code."""
    from tiegraph.cli import parser as cli_parser

    parser = _find_parser(cli_parser)
    lines = [
        "# Command line",
        "",
        "Generated from the `tiegraph` command's own argparse parser. `python -m tiegraph` is the same.",
        "Exit codes: 0 success; 1 with `--strict` when the audit found an error or a warning not",
        "accepted; 2 bad usage or input, with one line on stderr naming it; 3 an internal error (`-v` shows",
        "the traceback).",
        "",
        "```text",
        parser.format_help().rstrip(),
        "```",
        "",
    ]
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for action in subs:
        for command, sub in action.choices.items():
            lines += [f"## `tiegraph {command}`", "", "```text", sub.format_help().rstrip(), "```", ""]
            rows = [
                (", ".join(f"`{o}`" for o in a.option_strings) or f"`{a.metavar or a.dest}`", a)
                for a in sub._actions
                if not isinstance(a, argparse._HelpAction)
            ]
            lines += ["| argument | value | default | what it does |", "|---|---|---|---|"]
            for flag, a in rows:
                if a.nargs == 0:
                    value = ""
                elif a.choices:
                    value = " \\| ".join(f"`{c}`" for c in a.choices)
                else:
                    value = f"`{a.metavar or a.dest.upper()}`"
                default = "" if a.default in (None, False, [], argparse.SUPPRESS) else f"`{a.default}`"
                text = (a.help or "").replace("|", "\\|")
                lines.append(f"| {flag} | {value} | {default} | {text} |")
            lines.append("")
    (GENERATED / "cli.md").write_text("\n".join(lines))


def copy_notebooks() -> None:
    """The executed notebooks of ``notebooks/`` into the source tree (Sphinx reads only below docs/)."""
    target = DOCS / "notebooks"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir()
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        shutil.copy2(notebook, target / notebook.name)


def _module_sections_as_rubrics(_app, what, _name, _obj, _options, lines) -> None:  # type: ignore[no-untyped-def]
    """numpydoc leaves module docstrings alone: their ``Examples`` headings would become page sections."""
    if what != "module":
        return
    for i in range(len(lines) - 1):
        title, rule = lines[i], lines[i + 1]
        if (
            title.strip()
            and rule.strip()
            and set(rule.strip()) == {"-"}
            and len(rule.strip()) >= len(title.strip())
        ):
            lines[i], lines[i + 1] = f".. rubric:: {title.strip()}", ""


def _resolve_alias(app, env, node, contnode):  # type: ignore[no-untyped-def]
    """Resolve ``tiegraph.TieGraph``, ``TieGraph.graph`` or ``diff`` to where the object is documented."""
    if node.get("refdomain") != "py":
        return None
    from sphinx.util.nodes import make_refnode

    domain = env.get_domain("py")
    target = node["reftarget"].lstrip(".~")
    here = node.get("py:module") or ""
    candidates = [target, f"{here}.{target}", *(f"{m}.{target}" for m in public_modules())]
    for candidate in candidates:
        parts = candidate.split(".")
        for cut in range(len(parts), 0, -1):
            head = ".".join(parts[:cut])
            if head in ALIASES:
                full = ".".join([ALIASES[head], *parts[cut:]])
                if full in domain.objects:
                    entry = domain.objects[full]
                    return make_refnode(
                        app.builder, node["refdoc"], entry.docname, entry.node_id, contnode, full
                    )
                break
    if node["refdoc"].startswith("api/generated/"):
        # A docstring naming something private or misspelt: shown as code, listed at the end of the build.
        # Hand-written pages stay strict (nitpicky): their broken references fail the build.
        UNRESOLVED_IN_DOCSTRINGS.add(f"{node.get('py:module') or ''}: {node['reftarget']}")
        return contnode
    return None


UNRESOLVED_IN_DOCSTRINGS: set[str] = set()


def _report_unresolved(_app, _exception):  # type: ignore[no-untyped-def]
    if UNRESOLVED_IN_DOCSTRINGS:
        from sphinx.util import logging

        names = ", ".join(sorted(UNRESOLVED_IN_DOCSTRINGS))
        logging.getLogger(__name__).info(f"references in docstrings left unlinked (not public): {names}")


def setup(app):  # type: ignore[no-untyped-def]
    app.connect("autodoc-process-docstring", _module_sections_as_rubrics)
    app.connect("missing-reference", _resolve_alias)
    app.connect("build-finished", _report_unresolved)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


write_api_pages()
write_cli_page()
copy_notebooks()
os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
# The notebook kernels are children of this process: they import this checkout's tiegraph too.
os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
