"""A hub id, read through ``huggingface_hub`` from the local hub cache (offline: nothing is downloaded)."""

from __future__ import annotations

import re
from pathlib import Path

from ._facts import FolderError

__all__ = ["snapshot"]

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def snapshot(repo_id: str) -> Path:
    """The local snapshot folder of a hub repository (its ``main`` revision), read from the hub cache only.

    Raises
    ------
    FolderError
        If ``repo_id`` is neither a directory nor a hub id, or the hub cache has no snapshot of it.
    """
    if not _REPO_ID.match(repo_id):
        raise FolderError(f"{repo_id!r} is neither a directory nor a hub id (org/name)")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        path = snapshot_download(repo_id, local_files_only=True)
    except (LocalEntryNotFoundError, OSError, ValueError) as exc:
        raise FolderError(
            f"{repo_id} is not a directory, and the local hub cache has no snapshot of it "
            f"({type(exc).__name__}); "
            "tiegraph reads hub ids from the cache only: download its config.json and *.safetensors first, "
            "or give the folder"
        ) from None
    return Path(path)
