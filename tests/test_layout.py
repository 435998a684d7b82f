"""The package's layout, read from its source with :mod:`ast`: every seam runs one way.

- The library never imports the command line (``tiegraph.cli`` sits on top of it).
- No module reads another module's underscored names (``from ._x import _y``, ``_x._y``): a helper two
  modules share is a plain name, in a private module when it is not API. Nor another module's classes'
  underscored attributes (``tg._index`` outside ``graph.py``).
- Private attributes of torch, transformers, accelerate and PEFT (``module._parameters``,
  ``_tied_weights_keys``, ``_hf_hook``) are read only in the modules whose job that is.
- No code narrates history (tiegraph's issue and item numbers, dates, "was" speed figures): the changelog
  and ``benchmarks/RESULTS.md`` remember.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "tiegraph"
ARCHITECTURE = ROOT / "docs" / "architecture.md"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES: dict[str, Path] = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
LIBRARY = sorted(m for m in MODULES if not m.startswith("tiegraph.cli") and m != "tiegraph.__main__")


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _tree(module: str) -> ast.Module:
    return ast.parse(MODULES[module].read_text())


def _resolve(module: str, node: ast.ImportFrom) -> str:
    """The absolute name a ``from ... import`` statement in ``module`` imports from."""
    if not node.level:
        return node.module or ""
    is_package = module in MODULES and MODULES[module].name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    base = package.split(".")[: len(package.split(".")) - node.level + 1]
    return ".".join([*base, *([node.module] if node.module else [])])


def imports(module: str, tree: ast.Module) -> Iterator[tuple[int, str, str | None, str]]:
    """(line, module imported from, name imported or None, local name) for every import in ``module``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, None, alias.asname or alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(module, node)
            for alias in node.names:
                yield node.lineno, source, alias.name, alias.asname or alias.name


def private_reads(module: str, tree: ast.Module) -> list[str]:
    """Where ``module`` reads an underscored name of another tiegraph module: ``line: name``."""
    found = []
    bound: dict[str, str] = {}  # local name -> the tiegraph module it names
    for line, source, name, local in imports(module, tree):
        if name is None:  # import a.b.c [as n]
            if source.startswith("tiegraph"):
                bound[local] = source if local != source.split(".")[0] else source.split(".")[0]
        elif f"{source}.{name}" in MODULES:  # from package import submodule
            bound[local] = f"{source}.{name}"
        elif source in MODULES and _private(name):
            found.append(f"{line}: from {source} import {name}")
    inner = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and id(node) not in inner:
            read = _private_in_chain(node, bound)
            if read:
                found.append(f"{node.lineno}: {read}")
    return sorted(set(found), key=lambda s: int(s.split(":")[0]))


def _private_in_chain(node: ast.Attribute, bound: dict[str, str]) -> str | None:
    """``tiegraph._walk._hidden`` for ``_walk._hidden.x`` (``_walk`` a module), or None: no such read."""
    chain: list[str] = []
    value: ast.expr = node
    while isinstance(value, ast.Attribute):
        chain.insert(0, value.attr)
        value = value.value
    if not isinstance(value, ast.Name) or value.id not in bound:
        return None
    current = bound[value.id]
    for attr in chain:
        if f"{current}.{attr}" not in MODULES:
            return f"{current}.{attr}" if _private(attr) else None
        current = f"{current}.{attr}"
    return None


#: Modules whose job is to read other libraries' private attributes, and why.
FOREIGN_PRIVATE_READERS = {
    "tiegraph._walk": "the walk reads nn.Module's dicts (_modules, _parameters, _buffers) and storage keys",
    "tiegraph._tensors": "tensor subclasses and sparse layouts keep their parts in private attributes",
    "tiegraph._storage": "FSDP1 flat parameters keep their views privately",
    "tiegraph._extent": "a DTensor keeps its local shard privately",
    "tiegraph._served": "accelerate's offload hooks live in _hf_hook",
    "tiegraph._sharded": "an FSDP2-sharded model keeps its state and unsharded parameters privately",
    "tiegraph._share": "storage keys fall back to _cdata on a torch without storage identity",
    "tiegraph._canonical": "wrapper segments are the wrappers' private attribute names (_orig_mod, ...)",
    "tiegraph._declaring": "declarations are transformers' _tied_weights_keys",
    "tiegraph._deployed": "a device map is checked against transformers' _no_split_modules",
    "tiegraph.compat._groups": "accelerate's and safetensors' drop-ins key storages as they do",
    "tiegraph.compat._safetensors": "safetensors' drop-in keys storages as it does",
    "tiegraph.compat._patch": "swaps the peers' private helpers for the drop-ins",
    "tiegraph._metadata": "storage keys fall back to _cdata on a torch without storage identity",
    "tiegraph.compat._peft": "PEFT's drop-in keys storages as the build does",
    "tiegraph.engines._facts": "a loaded model's config is read where transformers keeps it",
    "tiegraph.sharding._plan": "a plan names modules as FSDP's wrappers do (_checkpoint_wrapped_module)",
    "tiegraph.sharding._fsdp": "FSDP2 pre-flight reads each module's own parameter dict",
    "tiegraph.sharding._pipeline": "stages are judged on each module's own parameter dict",
    "tiegraph._engine_marks": "a DeepSpeed PipelineModule keeps its layer specs in _layer_specs",
    "tiegraph.cli.parser": "finds a subcommand's parser through argparse's _actions",
    "tiegraph.cli.specs": "builds a model as from_pretrained does, through _from_config",
    "tiegraph.cli.repairs": "repairs read the private fields of configs whose defaults do not build",
}

#: Reads of another module's classes' underscored attributes not yet made plain names: module -> names.
#: Shrinks to empty as the modules that own them get a public (or package-level) way in.
PENDING_ATTRIBUTE_READS: dict[str, set[str]] = {}


#: namedtuple's public methods, underscored so they never clash with a field.
NAMEDTUPLE = {"_replace", "_asdict", "_fields", "_make", "_field_defaults"}

#: Names tiegraph's classes define only to stand in for another library's object (a model's declarations).
MIRRORED = {"_tied_weights_keys"}


def _own_private_attributes(tree: ast.Module) -> set[str]:
    """Underscored attributes a module's classes define: methods, class fields, ``self._x =``, slots."""
    names: set[object] = set()  # (constants in __slots__ may be any literal; only strings are kept)
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    names.add(item.name)
                elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    names.add(item.target.id)
                elif isinstance(item, ast.Assign):
                    names.update(t.id for t in item.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            if isinstance(node.value, ast.Name) and node.value.id == "self":
                names.add(node.attr)
        elif isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "__slots__" for t in node.targets):
            names.update(c.value for c in ast.walk(node.value) if isinstance(c, ast.Constant))
        elif (
            isinstance(node, ast.Attribute)
            and node.attr == "__dict__"
            and getattr(node.value, "id", "") == "self"
        ):
            names.update(
                c.value for c in ast.walk(tree) if isinstance(c, ast.Constant)
            )  # lazily filled slots
    return {n for n in names if isinstance(n, str) and _private(n)} - MIRRORED


OWN = {m: _own_private_attributes(_tree(m)) for m in MODULES}
ALL_OWN = set().union(*OWN.values())
IDENTIFIER = re.compile(r"_[A-Za-z]\w*")


def attribute_reads(module: str, tree: ast.Module) -> set[str]:
    """Underscored attributes ``module`` reads on objects other than ``self``/``cls`` and its own modules.

    ``x._name`` counts, and so does a string that is an underscored identifier (``getattr(x, "_name")``,
    ``attrgetter("_name")``, a table of attribute names).
    """
    modules = {local for _, _, _, local in imports(module, tree)}
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            owner = node.value.id if isinstance(node.value, ast.Name) else None
            if owner not in ("self", "cls") and owner not in modules:
                found.add(node.attr)
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and IDENTIFIER.fullmatch(node.value)
        ):
            found.add(node.value)  # getattr(x, "_name"), attrgetter("_name"), a table of names
    return {name for name in found if _private(name)} - NAMEDTUPLE


def test_the_modules_are_found() -> None:
    """The checks below read real files: the package, its cli and its private modules are all there."""
    assert {"tiegraph", "tiegraph.cli", "tiegraph._graph", "tiegraph._index", "tiegraph.cli.specs"} <= set(
        MODULES
    )
    assert "tiegraph.cli.specs" not in LIBRARY


@pytest.mark.parametrize("module", LIBRARY)
def test_the_library_never_imports_the_command_line(module: str) -> None:
    """The command line sits on top: ``tiegraph.cli`` imports the library, never the other way."""
    found = list(imports(module, _tree(module)))
    bad = [f"{line}: {source}" for line, source, _, _ in found if source.startswith("tiegraph.cli")]
    bad += [
        f"{line}: {source}.{name}" for line, source, name, _ in found if (source, name) == ("tiegraph", "cli")
    ]
    assert bad == [], f"{module} imports the command line"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_reads_another_modules_private_names(module: str) -> None:
    """A shared helper is a plain name (in a private module if it is not API), never another's ``_name``."""
    assert private_reads(module, _tree(module)) == []


def test_the_checks_can_fail() -> None:
    """Each way of reaching for a private name is seen: imported, read through a module, through a chain."""
    source = (
        "from ._index import _private, Index\n"
        "from . import _walk\n"
        "import tiegraph.cli\n"
        "_walk._hidden\n"
        "_walk.public\n"
        "tiegraph._walk._deep.attr\n"
        "tiegraph.cli.specs.looks_like_path\n"
    )
    tree = ast.parse(source)
    assert private_reads("tiegraph.probe", tree) == [
        "1: from tiegraph._index import _private",
        "4: tiegraph._walk._hidden",
        "6: tiegraph._walk._deep",
    ]
    assert [s for _, s, _, _ in imports("tiegraph.probe", tree) if s.startswith("tiegraph.cli")] == [
        "tiegraph.cli"
    ]
    reads = attribute_reads(
        "tiegraph.probe", ast.parse("tg._index\nself._mine\ngetattr(m, '_hf_hook')\nm.weight\n")
    )
    assert reads == {"_index", "_hf_hook"}


def test_the_architecture_page_names_every_module_once() -> None:
    """``docs/architecture.md`` draws the map one line per module: none missing, none that is gone."""
    rows = re.findall(r"^\| \*{0,2}`(tiegraph/[\w/]+\.py)`", ARCHITECTURE.read_text(), flags=re.MULTILINE)
    files = sorted(str(p.relative_to(ROOT)) for p in MODULES.values())
    assert len(rows) == len(set(rows))
    assert sorted(rows) == files


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_reads_another_modules_private_attributes(module: str) -> None:
    """``tg._index`` is ``graph.py``'s business: another module asks through a plain name."""
    theirs = (attribute_reads(module, _tree(module)) & ALL_OWN) - OWN[module]
    assert theirs <= PENDING_ATTRIBUTE_READS.get(module, set())


def test_the_pending_list_only_shrinks() -> None:
    """Every entry of the pending list is still needed: one fixed is one removed."""
    for module, names in PENDING_ATTRIBUTE_READS.items():
        assert names <= (attribute_reads(module, _tree(module)) & ALL_OWN) - OWN[module], module


@pytest.mark.parametrize("module", sorted(MODULES))
def test_other_libraries_private_attributes_are_read_where_that_is_the_job(module: str) -> None:
    """``_parameters``, ``_hf_hook``, ``_tied_weights_keys``: only in the modules listed with a reason."""
    foreign = attribute_reads(module, _tree(module)) - ALL_OWN
    if module not in FOREIGN_PRIVATE_READERS:
        assert foreign == set()


def test_every_listed_reader_still_reads() -> None:
    """The allow-list names only modules that still need it."""
    for module in FOREIGN_PRIVATE_READERS:
        assert attribute_reads(module, _tree(module)) - ALL_OWN, module


HISTORY = re.compile(
    r"\b[Ii]ssues? #?\d+(?:\.\d+)?|\btiegraph#\d+"  # issue 15, Issue 12.11, (issue 2, item 3), issues 7
    r"|(?P<before>[A-Za-z`'\"*#]\S*)\s\([1-9]\d?\.[1-9]\d?(?:, [1-9]\d?\.[1-9]\d?)*\)"  # wording (12.11)
    r"|\b20\d\d-[01]\d-[0-3]\d\b"  # a date
    r"|\bwas \d+(?:\.\d+)?x\b"  # a "was" speed figure
)

#: A parenthesised ``N.M`` after one of these names, or after a file's name, is its version: ``PEFT (0.21)``,
#: ``modeling_utils.py (4.57)``. After anything else it is an item of a tiegraph issue: ``wording (12.11)``.
VERSIONED = {"python", "torch", "pytorch", "transformers", "peft", "accelerate", "safetensors", "networkx"}
VERSIONED |= {"pydot", "pygraphviz", "graphviz", "bitsandbytes", "torchao", "quanto", "hqq", "numpy"}
VERSIONED |= {"deepspeed", "megatron", "vllm", "mlx", "gguf", "onnx", "jupytext", "pytest", "sphinx"}
FILE_SUFFIXES = (".py", ".toml", ".txt", ".json", ".md")


def history(text: str) -> list[str]:
    """The history ``text`` narrates: tiegraph issue and item numbers, dates, "was" speed figures.

    Other projects' issues (``peft#2777``) and versions (``PEFT (0.21)``) are not history.
    """
    found = []
    for match in HISTORY.finditer(text):
        before = (match.group("before") or "").strip("`'\"*").lower()
        if before in VERSIONED or before.endswith(FILE_SUFFIXES):
            continue
        found.append(match.group(0))
    return found


#: The code a reader meets: the package, its tests, the benchmarks, the dev tools, the docs' and notebooks'
#: scripts, the examples and dev.py.
CODE = sorted(
    [
        *PACKAGE.rglob("*.py"),
        *(ROOT / "tests").rglob("*.py"),
        *(ROOT / "benchmarks").rglob("*.py"),
        *(ROOT / "devtools").rglob("*.py"),
        *(ROOT / "docs").glob("*.py"),
        *(ROOT / "notebooks").glob("*.py"),
        *(ROOT / "examples").glob("*.py"),
        ROOT / "dev.py",
    ]
)


#: Text and the history :func:`history` finds in it: each form code has used, and what is not history.
SAMPLES = [
    ("# --- wording (12.11)", ["wording (12.11)"]),
    ("new users tripped on (12.7, 12.10): each", ["on (12.7, 12.10)"]),
    ("Design (issue 15): eager", ["issue 15"]),
    ("Issue 12.11: storages said 't0'", ["Issue 12.11"]),
    ("assertions (issue 11, item 2), and", ["issue 11"]),
    ("see issues 7 and 10", ["issues 7"]),
    ("fixed in tiegraph#15", ["tiegraph#15"]),
    ("measured 2026-12-07 on CI", ["2026-12-07"]),
    ("the build (was 1.44x) is", ["was 1.44x"]),
    ("Real PEFT (0.21) wrappers", []),
    ("Read from ``transformers/modeling_utils.py`` (4.57): from_pretrained", []),
    ("transformers (5.24) and Python (3.12)", []),
    ("changes the other module too (peft#2777)", []),
    ("see transformers#44861 and peft#2018", []),
    ("torch.arange(6.0) + x.add_(1.0) + (1.5, 2.5)", []),
    ("Tie groups (1) over 80 layers (16.3B)", []),
]


@pytest.mark.parametrize("path", CODE, ids=[str(p.relative_to(ROOT)) for p in CODE])
def test_code_does_not_narrate_history(path: Path) -> None:
    """No dates, tiegraph issue numbers or "was" speed figures in code: ``docs/changelog.md`` remembers.

    Other projects' issues stay where they explain a rule (``peft#2777``). This file is read down to its
    last section, the check itself and its samples.
    """
    text = path.read_text()
    if path == Path(__file__).resolve():
        text = text.partition("\nHISTORY = re.compile(")[0]
    assert history(text) == []


@pytest.mark.parametrize(("text", "found"), SAMPLES)
def test_the_history_check_can_fail(text: str, found: list[str]) -> None:
    """Each way code has narrated tiegraph's history is seen; versions and other projects' issues are not."""
    assert history(text) == found
