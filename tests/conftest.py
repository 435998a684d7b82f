"""Shared fixtures: build a graph and check its invariants, a gloo process group, a hang guard.

``tests/`` is put on ``sys.path`` here so test modules import the helpers beside them
(``from models import MODELS``, ``from invariants import check_invariants``).
"""

from __future__ import annotations

import os
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from torch import nn

_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

from invariants import check_invariants  # noqa: E402

import tiegraph  # noqa: E402

BuildFn = Callable[..., "tiegraph.TieGraph"]


def build_checked(model: nn.Module, **kwargs: Any) -> tiegraph.TieGraph:
    """``tiegraph.build_graph(model, **kwargs)``, then the suite-wide invariant check on the result."""
    tg = tiegraph.build_graph(model, **kwargs)
    check_invariants(model, tg)
    return tg


@pytest.fixture(scope="session")
def build() -> BuildFn:
    """The one way tests build a graph: every graph built in the suite goes through ``check_invariants``."""
    return build_checked


@pytest.fixture(scope="session")
def process_group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A single-rank gloo process group (CPU, world_size=1) over a FileStore; destroyed at teardown."""
    import torch.distributed as dist

    if dist.is_initialized():  # someone else's group: use it, leave it alone
        yield
        return
    store = dist.FileStore(os.fspath(tmp_path_factory.mktemp("gloo") / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def call_with_timeout(fn: Callable[[], Any], seconds: float) -> Any:
    """Run ``fn()`` in a daemon thread; fail the test if it has not returned after ``seconds``.

    Returns what ``fn`` returned and re-raises what it raised, so ``pytest.raises`` works around it. A hung
    call is left running in its daemon thread (it cannot be killed) but the test fails fast instead of
    hanging the suite.
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # re-raised in the test's thread
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True, name="tiegraph-timeout")
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"call did not return within {seconds} s (hang)")
    if "error" in box:
        raise box["error"]
    return box.get("value")


@pytest.fixture(scope="session")
def with_timeout() -> Callable[[Callable[[], Any], float], Any]:
    """:func:`call_with_timeout` as a fixture."""
    return call_with_timeout


@pytest.fixture(autouse=True)
def _quiet_model_warnings() -> Iterator[None]:
    """transformers and peft warn about tiny configs and tied embeddings; the tests are about neither."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"(transformers|peft)(\.|$)")
        yield
