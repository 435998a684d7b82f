"""What a folder holds, as the consumers' rules read it: config flags at every level and tensor headers.

A folder is read without loading it: ``config.json`` as JSON and the safetensors headers (names, shapes,
dtypes; a sharded folder through its ``model.safetensors.index.json``). Tensor values are read only when the
caller asks (``check_values``), and then only the head and the input embedding. Pickle files are never
opened; the facts say they were not checked.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..errors import TiegraphError

__all__ = ["HEAD_STATES", "FolderFacts", "HeadState", "folder_facts", "tie_flags"]

#: What the files hold at the head's place, compared with the input embedding.
#: ``absent``: no head tensor; ``equal`` / ``different``: a head of the embedding's shape whose values were
#: compared; ``present``: a head of the embedding's shape, values not compared; ``mismatch``: a head whose
#: shape differs from the embedding's (a resized or padded vocabulary); ``quantized``: a head saved in a
#: quantized format (``lm_head.qweight``, ``lm_head.weight_packed``), whose values cannot be compared.
HeadState = Literal["absent", "equal", "different", "present", "mismatch", "quantized"]
HEAD_STATES: tuple[HeadState, ...] = ("absent", "equal", "different", "present", "mismatch", "quantized")

#: Keys a quantized head is saved under instead of ``<head>.weight`` (GPTQ/AWQ, compressed-tensors).
QUANTIZED_HEAD_SUFFIXES = (".qweight", ".weight_packed")

#: Where transformers saves the input embedding and the output head, most specific layout first:
#: (embedding key, head key). The first layout whose embedding key the files hold names both.
LAYOUTS: tuple[tuple[str, str], ...] = (
    ("model.language_model.embed_tokens.weight", "lm_head.weight"),  # VLMs saved by transformers 5
    ("language_model.model.embed_tokens.weight", "language_model.lm_head.weight"),  # VLMs, transformers 4
    ("model.embed_tokens.weight", "lm_head.weight"),  # Llama, Qwen2, Gemma, Mistral, ...
    ("model.decoder.embed_tokens.weight", "lm_head.weight"),  # OPT
    ("transformer.wte.weight", "lm_head.weight"),  # GPT-2, GPT-J
    ("gpt_neox.embed_in.weight", "embed_out.weight"),  # GPT-NeoX, Pythia
    ("model.shared.weight", "lm_head.weight"),  # Bart, Marian
    ("shared.weight", "lm_head.weight"),  # T5
)

#: Tensors beside the head that change its logits (companions), by key suffix after the head's module.
COMPANION_SUFFIXES = (
    ".bias",
    ".weight_scale",
    ".weight_scale_inv",
    ".input_scale",
    ".scales",
    ".qzeros",
    ".g_idx",
)
#: Companions that sit elsewhere in the files, by exact key suffix.
COMPANION_KEYS = ("final_logits_bias",)

#: Files never opened: they are pickles, and unpickling runs code (the checkpoint reader skips them too).
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


class FolderError(TiegraphError, ValueError):
    """A folder or hub id cannot be read as a checkpoint (no config.json, an unreadable header, ...)."""


@dataclass(frozen=True)
class FolderFacts:
    """The facts a consumer's rule reads from a folder (see :func:`folder_facts`).

    Attributes
    ----------
    source
        The folder path, the hub id, or ``"a model in memory"``.
    model_type, architectures
        From ``config.json`` (top level).
    config
        ``config.json`` as a dict.
    flags
        ``tie_word_embeddings`` at every config level that sets it: ``""`` for the top level,
        ``"text_config"`` for the sub-config of that name (nested levels joined with dots).
    embedding, head
        The file keys of the input embedding and of the output head, or None when the files hold none.
    embedding_shape, head_shape
        Their shapes from the headers (None when absent).
    head_state
        One of :data:`HEAD_STATES`.
    companions
        File keys of tensors beside the head that change its logits (``lm_head.bias``,
        ``final_logits_bias``, scales of a quantized head).
    files, skipped
        The safetensors files read; pickle files present and never opened (nothing in them was checked).
    keys
        Every tensor key the safetensors files hold.
    """

    source: str
    model_type: str | None
    architectures: tuple[str, ...]
    config: Mapping[str, Any]
    flags: Mapping[str, bool]
    embedding: str | None
    head: str | None
    embedding_shape: tuple[int, ...] | None
    head_shape: tuple[int, ...] | None
    head_state: HeadState
    companions: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()
    keys: frozenset[str] = field(default_factory=frozenset)

    @property
    def text_model_type(self) -> str | None:
        """The ``model_type`` of the text sub-config when there is one, else the top level's."""
        text = self.config.get("text_config")
        if isinstance(text, Mapping) and isinstance(text.get("model_type"), str):
            return str(text["model_type"])
        return self.model_type


def tie_flags(config: Mapping[str, Any], prefix: str = "") -> dict[str, bool]:
    """``tie_word_embeddings`` at every level of a config dict: level -> value (``""`` is the top level).

    Examples
    --------
    >>> tie_flags({"tie_word_embeddings": False, "text_config": {"tie_word_embeddings": True}})
    {'': False, 'text_config': True}
    """
    out: dict[str, bool] = {}
    if isinstance(config.get("tie_word_embeddings"), bool):
        out[prefix] = bool(config["tie_word_embeddings"])
    for key, value in config.items():
        if isinstance(value, Mapping) and (key.endswith("_config") or "model_type" in value):
            out.update(tie_flags(value, f"{prefix}.{key}" if prefix else key))
    return out


def _saved_head(head: str, keys: frozenset[str]) -> str | None:
    """The key the head is saved under: ``<module>.weight``, or a quantized head's packed weight."""
    if head in keys:
        return head
    module = head.rsplit(".", 1)[0]
    return next((module + s for s in QUANTIZED_HEAD_SUFFIXES if module + s in keys), None)


def _pick_layout(keys: frozenset[str]) -> tuple[str | None, str | None]:
    for embedding, head in LAYOUTS:
        if embedding in keys:
            return embedding, _saved_head(head, keys)
    embeddings = sorted((k for k in keys if k.endswith("embed_tokens.weight")), key=len)
    heads = sorted((k for k in keys if k.endswith("lm_head.weight")), key=len)
    return (embeddings[0] if embeddings else None), (heads[0] if heads else None)


def _companions(keys: frozenset[str], head: str | None) -> tuple[str, ...]:
    module = (head or "lm_head.weight").rsplit(".", 1)[0]
    found = {module + s for s in (*COMPANION_SUFFIXES, *QUANTIZED_HEAD_SUFFIXES) if module + s in keys}
    found.discard(head or "")
    found.update(k for k in keys if k.rsplit(".", 1)[-1] in COMPANION_KEYS)
    return tuple(sorted(found))


def _headers(directory: Path) -> tuple[dict[str, tuple[int, ...]], dict[str, str], list[str]]:
    """Tensor key -> shape and key -> file, from the safetensors headers; the files read."""
    from safetensors import safe_open

    names = sorted(p.name for p in directory.iterdir() if p.is_file())
    shards = [n for n in names if n.endswith(".safetensors")]
    index = next((n for n in names if n.endswith(".safetensors.index.json")), None)
    if index is not None:
        try:
            wanted = sorted(set(json.loads((directory / index).read_text())["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise FolderError(f"unreadable index {directory / index}: {exc}") from None
        absent = [n for n in wanted if n not in shards]
        if absent:
            raise FolderError(f"{directory / index} names shards that are not there: {', '.join(absent)}")
        shards = wanted
    shapes: dict[str, tuple[int, ...]] = {}
    where: dict[str, str] = {}
    for name in shards:
        try:
            with safe_open(str(directory / name), framework="pt") as f:
                for key in f.keys():  # noqa: SIM118 -- safe_open is not a mapping
                    shapes[key] = tuple(f.get_slice(key).get_shape())
                    where[key] = name
        except Exception as exc:
            raise FolderError(f"unreadable safetensors header in {directory / name}: {exc}") from None
    return shapes, where, shards


def _values_equal(directory: Path, where: Mapping[str, str], a: str, b: str) -> bool:
    """Whether two saved tensors hold the same dtype, shape and bytes (reads both)."""
    import torch
    from safetensors import safe_open

    tensors = []
    for key in (a, b):
        with safe_open(str(directory / where[key]), framework="pt") as f:
            tensors.append(f.get_tensor(key))
    x, y = tensors
    return x.dtype == y.dtype and x.shape == y.shape and bool(torch.equal(x, y))


def head_state(
    embedding_shape: tuple[int, ...] | None,
    head_shape: tuple[int, ...] | None,
    equal: bool | None,
    quantized: bool = False,
) -> HeadState:
    """The :data:`HeadState` of a head beside an embedding (``equal`` None: values not compared)."""
    if head_shape is None:
        return "absent"
    if quantized:
        return "quantized"
    if embedding_shape is not None and head_shape != embedding_shape:
        return "mismatch"
    if equal is None:
        return "present"
    return "equal" if equal else "different"


def _read_config(directory: Path) -> dict[str, Any]:
    path = directory / "config.json"
    if not path.is_file():
        raise FolderError(f"no config.json in {directory}: give a folder written by save_pretrained")
    try:
        config = json.loads(path.read_text())
    except ValueError as exc:
        raise FolderError(f"unreadable config.json in {directory}: {exc}") from None
    if not isinstance(config, dict):
        raise FolderError(f"{path} does not hold a JSON object")
    return config


def facts_of(
    source: str,
    config: Mapping[str, Any],
    shapes: Mapping[str, tuple[int, ...]],
    *,
    equal: bool | None = None,
    files: tuple[str, ...] = (),
    skipped: tuple[str, ...] = (),
) -> FolderFacts:
    """Facts from a config dict and the saved tensors' shapes (``equal``: head vs embedding, if compared)."""
    keys = frozenset(shapes)
    embedding, head = _pick_layout(keys)
    e_shape = shapes.get(embedding) if embedding else None
    h_shape = shapes.get(head) if head else None
    architectures = config.get("architectures") or ()
    model_type = config.get("model_type")
    return FolderFacts(
        source=source,
        model_type=model_type if isinstance(model_type, str) else None,
        architectures=tuple(str(a) for a in architectures),
        config=config,
        flags=tie_flags(config),
        embedding=embedding,
        head=head,
        embedding_shape=e_shape,
        head_shape=h_shape,
        head_state=head_state(e_shape, h_shape, equal, quantized=str(head).endswith(QUANTIZED_HEAD_SUFFIXES)),
        companions=_companions(keys, head),
        files=files,
        skipped=skipped,
        keys=keys,
    )


def folder_facts(folder: str | os.PathLike[str], *, check_values: bool = False) -> FolderFacts:
    """Read the facts the consumers' rules read from a folder, or from a hub id through the local hub cache.

    Parameters
    ----------
    folder
        A directory written by ``save_pretrained`` (``config.json`` and ``*.safetensors``), or a hub id
        (``"org/name"``) present in the local hub cache (``HF_HUB_CACHE``); nothing is downloaded.
    check_values
        Also compare the head with the input embedding by value (reads those two tensors only); otherwise a
        head of the embedding's shape is ``present``, not ``equal`` or ``different``.

    Returns
    -------
    FolderFacts

    Raises
    ------
    FolderError
        If the folder has no ``config.json``, a header or the index cannot be read, or a hub id is not in
        the local hub cache.

    Examples
    --------
    >>> import json, tempfile, torch
    >>> from safetensors.torch import save_file
    >>> d = tempfile.mkdtemp()
    >>> config = {"model_type": "llama", "tie_word_embeddings": True}
    >>> _ = open(f"{d}/config.json", "w").write(json.dumps(config))
    >>> save_file({"model.embed_tokens.weight": torch.zeros(8, 4)}, f"{d}/model.safetensors")
    >>> facts = folder_facts(d)
    >>> facts.flags, facts.embedding, facts.head_state
    ({'': True}, 'model.embed_tokens.weight', 'absent')
    """
    directory = Path(folder).expanduser()
    label = str(folder)
    if not directory.is_dir():
        from ._hub import snapshot

        directory = snapshot(str(folder))
    config = _read_config(directory)
    shapes, where, shards = _headers(directory)
    skipped = tuple(sorted(p.name for p in directory.iterdir() if p.name.endswith(PICKLE_SUFFIXES)))
    partial = facts_of(label, config, shapes, files=tuple(shards), skipped=skipped)
    if not (check_values and partial.head and partial.embedding and partial.head_state == "present"):
        return partial
    equal = _values_equal(directory, where, partial.embedding, partial.head)
    return facts_of(label, config, shapes, equal=equal, files=tuple(shards), skipped=skipped)
