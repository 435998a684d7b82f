"""Whether a consumer reads a folder's config as tied: the levels it reads, then its default."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from ._facts import FolderFacts
from ._rule import Flag

__all__ = ["config_says_tied", "installed_version", "resolve", "text_config"]

#: Keys under which a multimodal config keeps its text (decoder) sub-config, in the order looked at.
TEXT_KEYS = ("text_config", "llm_config", "language_config")
FLAG = "tie_word_embeddings"


def text_config(config: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The text sub-config of a multimodal config, or None."""
    for key in TEXT_KEYS:
        value = config.get(key)
        if isinstance(value, Mapping):
            return value
    return None


def installed_version(package: str) -> str | None:
    """The installed version of a distribution, or None when it is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _major(version: str | None) -> str | None:
    return None if version is None else version.split(".", 1)[0]


def _transformers_value(config: Mapping[str, Any], level: str) -> bool | None:
    """The flag as the installed transformers' config class resolves it (class defaults, post-init rules)."""
    from transformers import CONFIG_MAPPING

    model_type = config.get("model_type")
    if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING:
        return None
    previous = logging.getLogger("transformers").level
    logging.getLogger("transformers").setLevel(logging.ERROR)
    try:
        cfg = CONFIG_MAPPING[model_type].from_dict(dict(config))
        if level == "text":
            cfg = cfg.get_text_config(decoder=True)
        value = getattr(cfg, FLAG, None)
    except Exception:  # a config the installed class refuses: no answer, never a guess
        return None
    finally:
        logging.getLogger("transformers").setLevel(previous)
    return value if isinstance(value, bool) else None


def resolve(flag: Flag, facts: FolderFacts, *, transformers_major: str | None = None) -> bool | None:
    """Whether the consumer reads the config as tied (None: the rule cannot tell).

    ``flag.defaults == "transformers"`` asks the installed transformers when its major version is
    ``transformers_major``; otherwise only explicit keys answer.
    """
    config = facts.config
    text = text_config(config)
    if flag.defaults == "transformers":
        if _major(installed_version("transformers")) == transformers_major:
            return _transformers_value(config, flag.level)
        source: Mapping[str, Any] = text if flag.level == "text" and text is not None else config
        value = source.get(FLAG)
        return value if isinstance(value, bool) else None
    if flag.level == "top" or text is None:
        looked = [config]
    elif flag.level == "text":
        looked = [text]
    else:
        looked = [text, config]
    for level in looked:
        if isinstance(level.get(FLAG), bool):
            return bool(level[FLAG])
    if text is not None and config.get("model_type") in flag.text_defaults:
        return flag.text_defaults[config["model_type"]]
    model_type = looked[0].get("model_type") or config.get("model_type")
    if isinstance(model_type, str) and model_type in flag.defaults:
        return flag.defaults[model_type]
    return flag.fallback


def config_says_tied(facts: FolderFacts) -> bool | None:
    """Whether the config says tied, for the intended head.

    Its explicit keys when they agree, else what the installed transformers resolves (class default),
    else None.
    """
    values = set(facts.flags.values())
    if len(values) == 1:
        return values.pop()
    if "" in facts.flags and not text_config(facts.config):
        return facts.flags[""]
    major = _major(installed_version("transformers"))
    return resolve(Flag(level="top", defaults="transformers"), facts, transformers_major=major)
