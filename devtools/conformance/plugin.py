"""pytest plugin (``-p devtools.conformance.plugin``): put tiegraph's drop-in in the peer helper's place.

The swap happens in ``pytest_configure``, before any test module is collected, so a test file that
imports the helper by name gets the drop-in; no test file is edited. ``TIEGRAPH_CONFORMANCE_HELPER``:
``peer`` (leave the peer's own helper), ``tiegraph`` (the drop-in in its default mode) or ``truth``
(the drop-in answering from memory alone). ``TIEGRAPH_CONFORMANCE_PEER`` names the peer.

In every mode the helper in place is wrapped in a counter, and when ``TIEGRAPH_CONFORMANCE_CALLS`` names a
file, the number of calls each test made (setup, call and teardown; junit's ``classname::name``) is
written there: the tests in which the helper's answer was used.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

_STACK = contextlib.ExitStack()
#: peer -> (package, module defining the helper, helper name)
HELPERS = {
    "peft": ("peft", "peft.utils.other", "_get_module_names_tied_with_embedding"),
    "accelerate": ("accelerate", "accelerate.utils.modeling", "find_tied_parameters"),
    "safetensors": ("safetensors.torch", "safetensors.torch", "_find_shared_tensors"),
}
_CALLS: dict[str, int] = {}
_CURRENT: list[str] = [""]


def pytest_configure(config: Any) -> None:  # noqa: ARG001 -- pytest's hook signature
    """Enter :func:`tiegraph.compat.patched` for the chosen peer and mode (before collection), count calls."""
    helper = os.environ.get("TIEGRAPH_CONFORMANCE_HELPER", "peer")
    peer = os.environ.get("TIEGRAPH_CONFORMANCE_PEER", "")
    if helper != "peer":
        from tiegraph.compat import patched

        truth = helper == "truth"
        _STACK.enter_context(
            patched(
                peft=peer == "peft",
                accelerate=peer == "accelerate",
                safetensors=peer == "safetensors",
                config_false_wins=not truth,
                split=None if truth else "layout",
                exact=truth,
            )
        )
    if peer in HELPERS:
        _STACK.enter_context(_counted(*HELPERS[peer]))


@contextlib.contextmanager
def _counted(package: str, defining: str, name: str) -> Iterator[None]:
    """Wrap the helper now in place (the peer's or the drop-in) in a per-test call counter."""
    importlib.import_module(package)
    inner = getattr(importlib.import_module(defining), name)

    @functools.wraps(inner)
    def counted(*args: Any, **kwargs: Any) -> Any:
        _CALLS[_CURRENT[0]] = _CALLS.get(_CURRENT[0], 0) + 1
        return inner(*args, **kwargs)

    _point(name, inner, counted)
    try:
        yield
    finally:
        _point(name, counted, inner)


def _point(name: str, old: Any, new: Any) -> None:
    """Every loaded module's ``name`` that is ``old`` becomes ``new``."""
    for module in list(sys.modules.values()):
        namespace = getattr(module, "__dict__", None)
        if isinstance(namespace, dict) and namespace.get(name) is old:
            namespace[name] = new


def pytest_collection_modifyitems(items: list[Any]) -> None:
    """Add the run's warning filter (``TIEGRAPH_CONFORMANCE_IGNORE``) to every test, in every mode."""
    ignore = os.environ.get("TIEGRAPH_CONFORMANCE_IGNORE")
    if ignore:
        for item in items:
            item.add_marker(pytest.mark.filterwarnings(ignore))


def junit_name(nodeid: str) -> str:
    """``classname::name`` as pytest's junit report names the test with this node id."""
    path, bracket, params = nodeid.partition("[")
    names = path.split("::")
    names[0] = re.sub(r"\.py$", "", names[0].replace("/", "."))
    names[-1] += bracket + params
    return f"{'.'.join(names[:-1])}::{names[-1]}"


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: Any) -> None:
    """Calls from here until the next test are this test's."""
    _CURRENT[0] = junit_name(item.nodeid)


def pytest_unconfigure(config: Any) -> None:  # noqa: ARG001 -- pytest's hook signature
    """Restore the peer's helper; write the calls per test."""
    _STACK.close()
    target = os.environ.get("TIEGRAPH_CONFORMANCE_CALLS")
    if target:
        _CALLS.pop("", None)  # (collection and session fixtures)
        Path(target).write_text(json.dumps(_CALLS, indent=1, sort_keys=True) + "\n")
