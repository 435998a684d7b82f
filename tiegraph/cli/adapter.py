"""A saved PEFT adapter directory as a SPEC: find its base model locally, never download it.

A directory holding ``adapter_config.json`` (and no ``config.json``) is an adapter, not a model: it names
its base in ``base_model_name_or_path``. The base is used when it is a local checkpoint directory or
already in the local Hugging Face cache; the adapter's config is then applied to it on the meta device
(``get_peft_model``: the adapter's structure decides the ties, its weights are not read). The cache is
read with transformers' ``cached_file(..., local_files_only=True)``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._text import one_line
from .specs import Built, UsageError

__all__ = ["ADAPTER_CONFIG", "build_adapter", "find_base", "is_adapter"]

ADAPTER_CONFIG = "adapter_config.json"


def is_adapter(directory: Path) -> bool:
    """True for a PEFT adapter directory: ``adapter_config.json`` and no ``config.json``."""
    return (directory / ADAPTER_CONFIG).is_file() and not (directory / "config.json").is_file()


def read_adapter_config(directory: Path) -> dict[str, Any]:
    """The adapter's ``adapter_config.json`` as a dict (plain JSON, nothing unpickled)."""
    try:
        data = json.loads((directory / ADAPTER_CONFIG).read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"unreadable {ADAPTER_CONFIG} in {directory}: {one_line(exc)}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{directory / ADAPTER_CONFIG} is not a JSON object")
    return data


def find_base(base: str, directory: Path, revision: str | None = None) -> tuple[Path, str] | None:
    """Where the base model's ``config.json`` is, without downloading: ``(folder, how it was found)``.

    A local directory (absolute, or relative to the working directory or to the adapter directory), else
    the snapshot in the local Hugging Face cache; None when neither has it.
    """
    for candidate in (Path(base).expanduser(), directory / base):
        if (candidate / "config.json").is_file():
            return candidate, f"the local directory {candidate}"
    from transformers.utils import cached_file  # type: ignore[attr-defined]

    try:  # local_files_only: the cache is read, the network never
        found = cached_file(base, "config.json", revision=revision, local_files_only=True)
    except Exception:  # not cached, or not a valid repo id: it names nothing in the cache
        return None
    if isinstance(found, str):
        return Path(found).parent, "the local Hugging Face cache"
    return None


def build_adapter(
    directory: Path,
    *,
    cls_name: str | None = None,
    task: str | None = None,
    sets: Sequence[tuple[list[str], Any]] = (),
    trust_remote_code: bool = False,
) -> Built:
    """Build the adapter's base on meta from its local config and wrap it with the adapter's PEFT config.

    Raises
    ------
    UsageError
        Naming the base model when it is neither a local directory nor in the local Hugging Face cache,
        or when peft is not installed.
    """
    data = read_adapter_config(directory)
    base = data.get("base_model_name_or_path")
    kind = str(data.get("peft_type") or "PEFT")
    if not base:
        raise UsageError(
            f"{directory} is a PEFT {kind} adapter ({ADAPTER_CONFIG}) that names no base model "
            "(base_model_name_or_path); inspect the base model with --peft instead"
        )
    found = find_base(str(base), directory, data.get("revision"))
    if found is None:
        raise UsageError(
            f"{directory} is a PEFT {kind} adapter over the base model {base}, which is neither a local "
            "directory nor in the local Hugging Face cache (tiegraph never downloads); download it first "
            f"(huggingface-cli download {base}) or inspect the base: tiegraph inspect DIR --peft ..."
        )
    base_dir, where = found
    try:
        from peft import PeftConfig, get_peft_model
    except ImportError:
        raise UsageError(
            f"{directory} is a PEFT {kind} adapter over {base}; inspecting it needs peft: pip install peft"
        ) from None
    from .specs import build_checkpoint

    built = build_checkpoint(
        base_dir, cls_name=cls_name, task=task, sets=sets, trust_remote_code=trust_remote_code
    )
    try:
        config = PeftConfig.from_pretrained(str(directory))
        model = get_peft_model(built.model, config)
    except Exception as exc:
        raise UsageError(
            f"PEFT could not apply the adapter in {directory} to {base}: {one_line(exc)}"
        ) from None
    note = f"{directory} is a PEFT {kind} adapter over {base}, found in {where}"
    return Built(
        model,
        "adapter",
        str(directory),
        built.cls,
        f"PEFT {kind} adapter over {base}",
        checkpoint=built.checkpoint,
        notes=[*built.notes, note],
    )
