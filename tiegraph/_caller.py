"""Where a warning should point: the first frame outside tiegraph, however deep the call came from."""

from __future__ import annotations

import os
import sys

__all__ = ["outside_stacklevel"]

_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def outside_stacklevel() -> int:
    """The ``stacklevel`` for ``warnings.warn`` that names the caller's code, not tiegraph's.

    Counted from the function that calls this (and then ``warnings.warn``): a fixed number breaks as soon
    as a public entry point reaches the warning through one more or one fewer internal call
    (``build_graph`` and the :mod:`tiegraph.compat` drop-ins reach the builder at different depths).

    Examples
    --------
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as seen:
    ...     warnings.simplefilter("always")
    ...     warnings.warn("here", stacklevel=outside_stacklevel())
    >>> seen[0].filename.startswith(_PACKAGE)
    False
    """
    frame = sys._getframe(1)
    level = 1
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame = frame.f_back
        level += 1
    return level
