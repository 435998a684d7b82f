"""pytest plugin (``-p devtools.conformance.plugin``): put tiegraph's drop-in in the peer helper's place.

The swap happens in ``pytest_configure``, before any test module is collected, so a test file that
imports the helper by name gets the drop-in; no test file is edited. ``TIEGRAPH_CONFORMANCE_HELPER``:
``peer`` (leave the peer's own helper), ``tiegraph`` (the drop-in in its default mode) or ``truth``
(the drop-in answering from memory alone). ``TIEGRAPH_CONFORMANCE_PEER`` names the peer.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

_STACK = contextlib.ExitStack()


def pytest_configure(config: Any) -> None:  # noqa: ARG001 -- pytest's hook signature
    """Enter :func:`tiegraph.compat.patched` for the chosen peer and mode (before collection)."""
    helper = os.environ.get("TIEGRAPH_CONFORMANCE_HELPER", "peer")
    peer = os.environ.get("TIEGRAPH_CONFORMANCE_PEER", "")
    if helper == "peer":
        return
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


def pytest_collection_modifyitems(items: list[Any]) -> None:
    """Add the run's warning filter (``TIEGRAPH_CONFORMANCE_IGNORE``) to every test, in every mode."""
    ignore = os.environ.get("TIEGRAPH_CONFORMANCE_IGNORE")
    if ignore:
        import pytest

        for item in items:
            item.add_marker(pytest.mark.filterwarnings(ignore))


def pytest_unconfigure(config: Any) -> None:  # noqa: ARG001 -- pytest's hook signature
    """Restore the peer's helper."""
    _STACK.close()
