"""What every runner shares: the loop over the manifest, the classification, capturing warnings.

Runners execute inside an engine's own venv, so this module uses only the standard library and numpy.
A runner calls ``main(engine, version, load)`` where ``load(entry)`` loads one folder with the real engine
and returns a :class:`Loaded` (the head and embedding as float32 arrays, or ``None`` where the engine
holds none), or raises: an exception is the cell's ``load-error``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import re
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# A captured line counts as a warning about the head when it names the head, the tie or the word
# embeddings (whole words): a missing vision tower is not a warning about the head.
HEAD_WORDS = re.compile(
    r"\b(lm_head|tie|tied|tying|tie_word_embeddings|output\.weight|token_embd|embed_tokens"
    r"|word embeddings)\b",
    re.IGNORECASE,
)


@dataclass
class Loaded:
    """What the engine holds after loading one folder."""

    head: np.ndarray | None
    embedding: np.ndarray | None = None
    bias: np.ndarray | None = None
    has_bias_slot: bool = False
    note: str = ""
    extra_lines: list[str] = field(default_factory=list)


def kept_gguf(folder: str) -> Path:
    """Where the converter's runner keeps the GGUF it wrote from ``folder`` (beside it, not inside); the
    llama.cpp runtime's runner loads it when its ``.sha256`` file is :func:`folder_digest` of the folder.
    """
    return Path(folder.rstrip("/") + ".gguf")


def folder_digest(folder: str) -> str:
    """The sha256 of a folder's files (names and bytes): what a kept GGUF was converted from."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).iterdir() if p.is_file()):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def same(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    """Equal values (tolerant of a float16 round trip); differing row counts compare their common rows."""
    if a is None or b is None or a.ndim != b.ndim or a.shape[1:] != b.shape[1:]:
        return False
    rows = min(a.shape[0], b.shape[0])
    return bool(np.allclose(a[:rows], b[:rows], rtol=1e-3, atol=1e-3))


def classify(loaded: Loaded, ref: dict[str, np.ndarray]) -> tuple[str, str]:
    """The outcome label of one cell and a note (shapes, equalities) that explains it."""
    emb, head = ref["embedding"], ref.get("head")
    notes = []
    if head is not None and same(head, emb):
        notes.append("the folder's head equals its embedding")
    if loaded.head is not None and loaded.head.shape[0] not in (
        emb.shape[0],
        *(() if head is None else (head.shape[0],)),
    ):
        notes.append(f"loaded head rows {loaded.head.shape[0]}")
    if head is not None and head.shape[0] != emb.shape[0]:
        notes.append(f"folder embedding rows {emb.shape[0]}, head rows {head.shape[0]}")
    replaced = (
        loaded.embedding is not None and not same(loaded.embedding, emb) and same(loaded.embedding, head)
    )
    if loaded.head is None:
        label = "neither"
        notes.append("the engine holds no head tensor")
    elif replaced:
        label = "embedding-replaced"
    elif same(loaded.head, emb):
        label = "embedding"
    elif same(loaded.head, head):
        label = "folder-head"
    else:
        label = "neither"
        notes.append("the head matches neither tensor of the folder (random and uninitialised look alike)")
    if loaded.embedding is not None and not replaced and not same(loaded.embedding, emb):
        notes.append("the loaded embedding differs from the folder's")
    return label, "; ".join(notes)


def bias_outcome(loaded: Loaded, ref: dict[str, np.ndarray]) -> str | None:
    """For a folder with ``lm_head.bias``: ``kept``, ``dropped`` (no bias slot) or ``changed``."""
    if "bias" not in ref:
        return None
    if loaded.bias is None:
        return "dropped"
    return "kept" if same(loaded.bias[None], ref["bias"][None]) else "changed"


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.name}: {record.getMessage()}")


@contextlib.contextmanager
def captured(loggers: tuple[str, ...] = ("",)) -> Iterator[list[str]]:
    """Collect Python warnings, warning log records and stderr written while loading."""
    lines: list[str] = []
    handler = _Lines()
    for name in loggers:
        logging.getLogger(name).addHandler(handler)
    err = io.StringIO()
    try:
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stderr(err):
            warnings.simplefilter("always")
            yield lines
    finally:
        for name in loggers:
            logging.getLogger(name).removeHandler(handler)
        lines += [f"warning: {w.message}" for w in caught] + handler.lines
        lines += [line for line in err.getvalue().splitlines() if line.strip()]


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def head_warnings(lines: list[str], folder: str = "") -> list[str]:
    """The captured lines that speak about the head or the tie (colours dropped, the folder as <folder>)."""
    plain = [ANSI.sub("", line) for line in lines]  # colour codes glue to words: strip them first
    said = [line for line in plain if HEAD_WORDS.search(line) and 'File "' not in line]
    return [(line.replace(folder, "<folder>") if folder else line)[:300] for line in said]


def cell(engine: str, version: str, entry: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """One row of the measured table (the schema the hand-off shares)."""
    row = {
        "engine": engine,
        "engine_version": version,
        "arch": entry["arch"],
        "situation": entry["situation"],
        "head": None,
        "warns": None,
        "note": "",
        "ran": True,
        "why_not": None,
    }
    row.update(fields)
    return row


def run_one(
    engine: str,
    version: str,
    entry: dict[str, Any],
    load: Callable[[dict[str, Any]], Loaded],
    loggers: tuple[str, ...],
) -> dict[str, Any]:
    """Load one folder with the engine and classify what its head holds."""
    ref = dict(np.load(entry["ref"]))
    with captured(loggers) as lines:
        try:
            loaded: Loaded | None = load(entry)
            error = ""
        except Exception as exc:  # the engine's own failure is the measurement
            loaded, error = None, f"{type(exc).__name__}: {exc}"
    if loaded is None:  # an error is loud: it counts as a warning
        note = "load failed: " + ANSI.sub("", error).replace(entry["folder"], "<folder>")[:400]
        said = head_warnings(lines, entry["folder"])[:6]
        return cell(engine, version, entry, head="load-error", warns=True, note=note, lines=said)
    label, note = classify(loaded, ref)
    said = head_warnings(lines + loaded.extra_lines, entry["folder"])
    row = cell(
        engine,
        version,
        entry,
        head=label,
        warns=bool(said),
        note="; ".join(filter(None, [note, loaded.note])),
    )
    row["lines"] = said[:6]
    bias = bias_outcome(loaded, ref)
    if bias is not None:
        row["bias"] = bias
    return row


def main(
    engine: str,
    version: str,
    load: Callable[[dict[str, Any]], Loaded],
    skip: Callable[[dict[str, Any]], str | None] | None = None,
    loggers: tuple[str, ...] = ("",),
) -> None:
    """``runner.py MANIFEST OUT [arch/situation ...]``: measure every (or the named) folder into OUT."""
    manifest = json.loads(Path(sys.argv[1]).read_text())
    out = Path(sys.argv[2])
    wanted = set(sys.argv[3:])
    rows: list[dict[str, Any]] = []
    for entry in manifest:
        if wanted and f"{entry['arch']}/{entry['situation']}" not in wanted:
            continue
        why = skip(entry) if skip is not None else None
        if why is not None:
            rows.append(cell(engine, version, entry, ran=False, why_not=why))
        else:
            rows.append(run_one(engine, version, entry, load, loggers))
        print(json.dumps(rows[-1]), file=sys.__stdout__, flush=True)
        out.write_text(json.dumps(rows, indent=1) + "\n")
