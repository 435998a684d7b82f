"""``--set`` overrides: parsed, checked against a config and applied; :class:`UsageError` for bad input.

Every bad command-line input raises :class:`UsageError` with a one-line message naming the problem (exit 2).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from .._text import did_you_mean, one_line
from ..errors import TiegraphError

__all__ = ["UsageError", "apply_sets", "config_keys", "parse_sets", "parse_value"]

_KEY = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


class UsageError(TiegraphError):
    """Bad command-line input: the message is one line naming the problem (the CLI exits with 2)."""


def parse_value(text: str) -> Any:
    """A ``--set`` value: JSON (``true``, ``3``, ``0.5``, ``null``, ``[1, 2]``, ``"x"``), else the string."""
    lowered = {"True": "true", "False": "false", "None": "null"}.get(text, text)
    try:
        return json.loads(lowered)
    except ValueError:
        return text


def parse_sets(items: Sequence[str]) -> list[tuple[list[str], Any]]:
    """Parse ``key=value`` overrides into (key path, typed value) pairs.

    Examples
    --------
    >>> parse_sets(["num_hidden_layers=2", "text_config.tie_word_embeddings=true", "act=gelu"])
    [(['num_hidden_layers'], 2), (['text_config', 'tie_word_embeddings'], True), (['act'], 'gelu')]
    """
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not _KEY.match(key):
            raise UsageError(f"bad --set {item!r}: expected key=value, e.g. tie_word_embeddings=true")
        out.append((key.split("."), parse_value(value.strip())))
    return out


def config_keys(config: Any) -> list[str]:
    """A config's field names (and the aliases its ``attribute_map`` gives), the private ones left out."""
    keys = set(config.to_dict()) | set(getattr(config, "attribute_map", {}) or {})
    return sorted(k for k in keys if not k.startswith("_"))


def apply_sets(config: Any, sets: Sequence[tuple[list[str], Any]], *, check_only: bool = False) -> None:
    """Set overrides on a config (nested keys walk sub-configs); unknown keys are an error with matches.

    With ``check_only``, only check that every key names a field (nothing is set).
    """
    for path, value in sets:
        target = config
        for i, part in enumerate(path):
            last = i == len(path) - 1
            keys = config_keys(target)
            if not hasattr(target, part) or (not last and not hasattr(getattr(target, part), "to_dict")):
                where = ".".join(path[:i]) or type(config).__name__
                what = "field" if last else "sub-config"
                raise UsageError(
                    f"bad --set {'.'.join(path)}: {where} has no {what} {part!r}" + did_you_mean(part, keys)
                )
            if last and not check_only:
                try:
                    setattr(target, part, value)
                except Exception as exc:  # config validators raise assorted types
                    raise UsageError(f"bad --set {'.'.join(path)}={value!r}: {one_line(exc)}") from None
            elif not last:
                target = getattr(target, part)
