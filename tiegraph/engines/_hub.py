"""A hub id, read through ``huggingface_hub`` from the local hub cache (offline: nothing is downloaded)."""

from __future__ import annotations

import re
from pathlib import Path

from ._facts import FolderError

__all__ = ["is_hub_id", "snapshot"]

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def is_hub_id(text: str) -> bool:
    """Whether ``text`` is written as a hub repository id (``org/name``).

    >>> is_hub_id("org/tiny-llama"), is_hub_id("./folder"), is_hub_id("a/b/c")
    (True, False, False)
    """
    return bool(_REPO_ID.match(text))


def snapshot(repo_id: str) -> Path:
    """The local snapshot folder of a hub repository (its ``main`` revision), read from the hub cache only.

    Raises
    ------
    FolderError
        If ``repo_id`` is neither a directory nor a hub id, or the hub cache has no snapshot of it.
    """
    if not is_hub_id(repo_id):
        raise FolderError(f"{repo_id!r} is neither a directory nor a hub id (org/name)")
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        path = snapshot_download(repo_id, local_files_only=True)
    except (LocalEntryNotFoundError, OSError, ValueError) as exc:
        offline = " (HF_HUB_OFFLINE is set)" if constants.HF_HUB_OFFLINE else ""
        raise FolderError(
            f"{repo_id} is not a directory, and the local hub cache {constants.HF_HUB_CACHE} has no snapshot "
            f"of it{offline} ({type(exc).__name__}); tiegraph reads hub ids from the cache only, nothing "
            f"is downloaded: `hf download {repo_id} --include '*.json' '*.safetensors'` first, or give the "
            "folder"
        ) from None
    return Path(path)
