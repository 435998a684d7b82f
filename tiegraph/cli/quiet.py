"""Keep the command line's output to what tiegraph says: library warnings, logging and C-level stderr."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator

__all__ = ["quiet_libraries", "stderr_silenced"]


def quiet_libraries(verbose: bool) -> None:
    """Silence transformers/peft/torch warnings and logging unless ``verbose``; call before importing them.

    This covers what torchao prints when it is imported (transformers imports it to build a model): its
    ``Failed to load .../torchao/_C_mxfp8...so`` lines (the ``torchao`` logger) and torch's pytree warnings
    about torchao's ``KernelPreference`` enums (the ``torch`` logger); ``tests/test_quiet.py`` pins it.
    """
    if verbose:
        return
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore")
    import torch  # noqa: F401  (torch sets its loggers' levels when imported: ours must come after)

    for name in (
        "transformers",
        "peft",
        "torch",
        "accelerate",
        "huggingface_hub",
        "torchao",
        "bitsandbytes",
        "hqq",
    ):
        logging.getLogger(name).setLevel(logging.ERROR)
    if "transformers" in sys.modules:
        sys.modules["transformers"].logging.set_verbosity_error()


@contextlib.contextmanager
def stderr_silenced() -> Iterator[None]:
    """Silence file descriptor 2 (C libraries such as Fontconfig print there directly)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
