"""Build the model a command-line SPEC names: a transformers model type, or ``package.module:callable``.

Models are built on the meta device from configs (no weights are downloaded, read or allocated); ``--set``
overrides (:mod:`tiegraph.cli.overrides`) are applied to them. A checkpoint directory's model is built from
its ``config.json``, and its safetensors headers are read by :mod:`tiegraph._checkpoint`.
Bad input raises :class:`UsageError` with a one-line message naming the problem.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._text import did_you_mean, one_line
from .overrides import UsageError, apply_sets, parse_sets

if TYPE_CHECKING:
    from torch import nn

    from .._checkpoint import CheckpointFiles

__all__ = [
    "TASKS",
    "TASK_ORDER",
    "Built",
    "UsageError",
    "build_checkpoint",
    "build_factory",
    "build_model_type",
    "build_spec",
    "model_types",
    "on_meta",
    "parse_sets",
    "task_mapping",
]

#: ``--task`` name -> (transformers auto class, name of its mapping in ``modeling_auto``).
TASKS: dict[str, tuple[str, str]] = {
    "causal-lm": ("AutoModelForCausalLM", "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES"),
    "seq2seq-lm": ("AutoModelForSeq2SeqLM", "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES"),
    "masked-lm": ("AutoModelForMaskedLM", "MODEL_FOR_MASKED_LM_MAPPING_NAMES"),
    "image-text-to-text": ("AutoModelForImageTextToText", "MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES"),
    "multimodal-lm": ("AutoModelForMultimodalLM", "MODEL_FOR_MULTIMODAL_LM_MAPPING_NAMES"),
    "speech-seq2seq": ("AutoModelForSpeechSeq2Seq", "MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES"),
    "pretraining": ("AutoModelForPreTraining", "MODEL_FOR_PRETRAINING_MAPPING_NAMES"),
    "base": ("AutoModel", "MODEL_MAPPING_NAMES"),
}

#: The head picked for a model type when neither ``--task`` nor ``--class`` is given: its
#: conditional-generation class when it has one (the main generation head of encoder-decoders and VLMs:
#: Whisper's, not its assistant ``WhisperForCausalLM``), else the first task whose mapping knows the type.
#: Encoder-decoders first (Bart is also a causal LM), masked before causal (Bert's causal head is a
#: standalone-decoder variant), the base model last.
TASK_ORDER = (
    "seq2seq-lm",
    "image-text-to-text",
    "masked-lm",
    "causal-lm",
    "multimodal-lm",
    "speech-seq2seq",
    "pretraining",
    "base",
)

_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


@dataclass
class Built:
    """A model built for the command line, and how it was made."""

    model: nn.Module
    kind: str  # "model-type", "checkpoint" or "factory"
    spec: str
    cls: str
    source: str  # one phrase: "default llama config", "config.json of DIR", "pkg.mod:make()"
    checkpoint: CheckpointFiles | None = None
    notes: list[str] = field(default_factory=list)
    overrides: dict[str, Any] = field(default_factory=dict)  # --set key -> value, as applied


_INIT_FUNCTIONS = (
    "uniform_",
    "normal_",
    "trunc_normal_",
    "constant_",
    "zeros_",
    "ones_",
    "eye_",
    "dirac_",
    "xavier_uniform_",
    "xavier_normal_",
    "kaiming_uniform_",
    "kaiming_normal_",
    "orthogonal_",
    "sparse_",
)


def _unchanged(tensor: Any, *args: Any, **kwargs: Any) -> Any:
    return tensor


@contextlib.contextmanager
def on_meta() -> Iterator[None]:
    """Build on the meta device, skipping ``torch.nn.init`` (meta tensors hold no values to initialise).

    ``reset_parameters`` of every ``nn.Linear``/``nn.Embedding`` otherwise runs its init through torch's
    meta decompositions, about a third of the build time of a large default config.
    """
    import torch
    from torch.nn import init

    saved = {name: getattr(init, name) for name in _INIT_FUNCTIONS if hasattr(init, name)}
    try:
        for name in saved:
            setattr(init, name, _unchanged)
        with torch.device("meta"):
            yield
    finally:
        for name, fn in saved.items():
            setattr(init, name, fn)


# ---------------------------------------------------------------------------------------------- model types
def _modeling_auto() -> Any:
    from transformers.models.auto import modeling_auto

    return modeling_auto


def task_mapping(task: str) -> dict[str, str]:
    """Model type -> class name for one task of :data:`TASKS` (first class when a type lists several)."""
    names = getattr(_modeling_auto(), TASKS[task][1], {})
    return {k: (v[0] if isinstance(v, (list, tuple)) else v) for k, v in names.items()}


def model_types() -> list[str]:
    """Every model type transformers knows a config for."""
    from transformers.models.auto.configuration_auto import (  # type: ignore[attr-defined]
        CONFIG_MAPPING_NAMES,
    )

    return sorted(CONFIG_MAPPING_NAMES)


def _transformers_class(name: str) -> type:
    import transformers
    from torch import nn

    cls = getattr(transformers, name, None) if name.isidentifier() else None
    if not isinstance(cls, type) or not issubclass(cls, nn.Module):
        choices = [n for n in dir(transformers) if n[:1].isupper()]
        raise UsageError(f"--class {name!r} is not a transformers model class" + did_you_mean(name, choices))
    return cls


def _pick_class(model_type: str, cls_name: str | None, task: str | None) -> tuple[type, str]:
    """The class to build and the task it came from (``""`` for ``--class``)."""
    if cls_name:
        return _transformers_class(cls_name), ""
    heads = [(t, name) for t in ([task] if task else TASK_ORDER) if (name := task_mapping(t).get(model_type))]
    main = [(t, name) for t, name in heads if name.endswith("ForConditionalGeneration")]
    if heads:
        t, name = (main or heads)[0]
        return _transformers_class(name), t
    known = [t for t in TASK_ORDER if model_type in task_mapping(t)]
    hint = f"; it has {', '.join(known)}" if known else ""
    raise UsageError(f"model type {model_type!r} has no {task} head in transformers{hint}")


def _build_meta(cls: type, config: Any, *, trust_remote_code: bool = False, auto: str = "") -> nn.Module:
    """Instantiate on the meta device (no memory for weights); errors become one-line UsageErrors."""
    try:
        with on_meta():
            if auto:
                import transformers

                model: nn.Module = getattr(transformers, auto).from_config(
                    config, trust_remote_code=trust_remote_code
                )
            else:
                model = cls._from_config(config) if hasattr(cls, "_from_config") else cls(config)
            return model
    except UsageError:
        raise
    except Exception as exc:
        name = auto if cls is type(None) else getattr(cls, "__name__", auto)
        raise UsageError(f"{name} could not be built from its config: {one_line(exc)}") from None


def build_model_type(
    model_type: str,
    *,
    cls_name: str | None = None,
    task: str | None = None,
    sets: Sequence[tuple[list[str], Any]] = (),
) -> Built:
    """Build a transformers model type from its default config on the meta device.

    Top-level ``sets`` are passed to the config's constructor (so derived fields follow them); nested keys
    are set on the sub-config afterwards. Without ``sets``, a default config that does not build is
    repaired as the survey repairs it (:mod:`tiegraph.cli.repairs`), and the source says which repairs.
    """
    from transformers import AutoConfig

    types = model_types()
    if model_type not in types:
        raise UsageError(f"unknown model type {model_type!r}" + did_you_mean(model_type, types, n=5))
    if not sets:
        return _build_default(model_type, cls_name, task)
    top = {path[0]: value for path, value in sets if len(path) == 1}
    try:
        if top:
            apply_sets(AutoConfig.for_model(model_type), sets, check_only=True)
        config = AutoConfig.for_model(model_type, **top)
    except UsageError:
        raise
    except Exception as exc:
        raise UsageError(f"the {model_type} config rejects --set {top}: {one_line(exc)}") from None
    apply_sets(config, [(p, v) for p, v in sets if len(p) > 1])
    cls, picked = _pick_class(model_type, cls_name, task)
    # Through the task's auto class when picked by task: it passes composite configs' text config on.
    model = _build_meta(cls, config, auto=TASKS[picked][0] if picked else "")
    how = _how(model_type, type(model).__name__, picked, task)
    return Built(model, "model-type", model_type, type(model).__name__, f"default {model_type} config, {how}")


def _how(model_type: str, cls_name: str, picked: str, task: str | None) -> str:
    """How the class was chosen: ``--class``, ``--task X``, or the default head and why."""
    if task:
        return f"--task {task}"
    return _why_head(model_type, cls_name, picked) if picked else "--class"


def _build_default(model_type: str, cls_name: str | None, task: str | None) -> Built:
    import transformers

    from .repairs import RepairFailed, build_repaired

    cls, picked = _pick_class(model_type, cls_name, task)
    auto = getattr(transformers, TASKS[picked][0]) if picked else None

    def build(make: Any) -> Any:
        with on_meta():
            return make()

    try:
        model, attempt = build_repaired(model_type, cls, auto, build)
    except RepairFailed as failed:
        raise UsageError(f"{cls.__name__} could not be built from its default config: {failed}") from None
    how = (
        f"--task {task}"
        if task
        else _why_head(model_type, type(model).__name__, picked)
        if picked
        else "--class"
    )
    source = f"default {model_type} config, {how}"
    if attempt.repairs:
        source += f"; repaired ({', '.join(dict.fromkeys(attempt.repairs))}: {'; '.join(attempt.changes)})"
    return Built(model, "model-type", model_type, type(model).__name__, source)


def _why_head(model_type: str, cls_name: str, picked: str) -> str:
    """Why the default head was chosen, naming the others and how to pick one.

    Examples
    --------
    >>> print(_why_head("whisper", "WhisperForConditionalGeneration", "speech-seq2seq"))
    task speech-seq2seq: the main generation head (conditional generation); also causal-lm
    WhisperForCausalLM, base WhisperModel (pick with --task or --class)
    >>> print(_why_head("llama", "LlamaForCausalLM", "causal-lm"))
    task causal-lm: its only generation head; also base LlamaModel (pick with --task or --class)
    """
    others = [(t, n) for t in TASK_ORDER if t != picked and (n := task_mapping(t).get(model_type))]
    others = [(t, n) for t, n in others if n != cls_name]
    if cls_name.endswith("ForConditionalGeneration"):
        why = "the main generation head (conditional generation)"
    elif all(t == "base" for t, _ in others):
        why = "its only generation head"
    else:
        why = "the first in the default order (encoder-decoder, VLM, masked, causal, ...)"
    also = ", ".join(f"{t} {n}" for t, n in others)
    return f"task {picked}: {why}" + (f"; also {also} (pick with --task or --class)" if also else "")


# ---------------------------------------------------------------------------------------------- factories
def build_factory(spec: str, *, allow_code: bool, meta: bool) -> Built:
    """Import ``package.module:callable`` and call it (only with ``allow_code``); it must return a module."""
    from torch import nn

    if not allow_code:
        raise UsageError(f"{spec} runs code from {spec.split(':')[0]}; pass --allow-code if you trust it")
    module_name, _, attr = spec.partition(":")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise UsageError(f"cannot import {module_name!r}: {one_line(exc)}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UsageError(f"{module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise UsageError(f"{spec} is not callable")
    try:
        if meta:
            with on_meta():
                model = obj()
        else:
            model = obj()
    except Exception as exc:
        raise UsageError(f"{spec}() raised {type(exc).__name__}: {one_line(exc)}") from None
    if not isinstance(model, nn.Module):
        raise UsageError(f"{spec}() returned {type(model).__name__}, not a torch.nn.Module")
    where = ", on meta" if meta else ""
    return Built(model, "factory", spec, type(model).__name__, f"{spec}(){where}")


def build_spec(
    spec: str,
    *,
    cls_name: str | None = None,
    task: str | None = None,
    sets: Sequence[tuple[list[str], Any]] = (),
    trust_remote_code: bool = False,
    allow_code: bool = False,
    meta: bool = False,
) -> Built:
    """Build what a SPEC names: a checkpoint directory, ``package.module:callable`` or a model type.

    ``sets`` (``--set``) are recorded in the result (``overrides``, and its ``source`` says them).
    """
    built = _build_spec(
        spec,
        cls_name=cls_name,
        task=task,
        sets=sets,
        trust_remote_code=trust_remote_code,
        allow_code=allow_code,
        meta=meta,
    )
    return _record_sets(built, sets)


def _record_sets(built: Built, sets: Sequence[tuple[list[str], Any]]) -> Built:
    """Say which config values ``--set`` overrode: ``llava config with --set tie_word_embeddings=true, ...``.

    Examples
    --------
    >>> from torch import nn
    >>> built = Built(nn.Module(), "model-type", "llava", "Llava", "default llava config, task causal-lm")
    >>> _record_sets(built, [(["tie_word_embeddings"], True), (["text_config", "vocab_size"], 64)]).source
    'llava config with --set tie_word_embeddings=true --set text_config.vocab_size=64, task causal-lm'
    """
    if not sets:
        return built
    built.overrides = {".".join(path): value for path, value in sets}
    shown = " --set ".join(f"{key}={json.dumps(value)}" for key, value in built.overrides.items())
    head, sep, tail = built.source.partition(", ")
    built.source = f"{head.removeprefix('default ')} with --set {shown}{sep}{tail}"
    return built


def _build_spec(
    spec: str,
    *,
    cls_name: str | None,
    task: str | None,
    sets: Sequence[tuple[list[str], Any]],
    trust_remote_code: bool,
    allow_code: bool,
    meta: bool,
) -> Built:
    path = Path(spec).expanduser()
    if path.is_dir():
        from .adapter import build_adapter, is_adapter

        shadowed = not looks_like_path(spec) and spec in model_types()
        readable = (path / "config.json").is_file() or is_adapter(path)
        if shadowed and not readable:  # a folder that happens to be called "llama"
            built = build_model_type(spec, cls_name=cls_name, task=task, sets=sets)
            built.notes.append(f"ignored the local folder ./{spec} (no config.json): this is the model type")
            return built
        build = build_adapter if is_adapter(path) else build_checkpoint
        built = build(path, cls_name=cls_name, task=task, sets=sets, trust_remote_code=trust_remote_code)
        if shadowed:
            built.notes.append(
                f"{spec} is also a model type: this is the local directory ./{spec} "
                "(run from another folder for the model type)"
            )
        return built
    if path.exists():
        raise UsageError(f"{spec} is a file; give a checkpoint directory (holding config.json)")
    if _FACTORY.match(spec):
        if sets:
            raise UsageError(f"--set overrides a config; {spec} is a factory: set the values in its code")
        return build_factory(spec, allow_code=allow_code, meta=meta)
    if looks_like_path(spec):
        raise UsageError(f"no such directory: {spec}")
    return build_model_type(spec, cls_name=cls_name, task=task, sets=sets)


# ---------------------------------------------------------------------------------------------- checkpoints
def build_checkpoint(
    directory: Path,
    *,
    cls_name: str | None = None,
    task: str | None = None,
    sets: Sequence[tuple[list[str], Any]] = (),
    trust_remote_code: bool = False,
) -> Built:
    """Build a checkpoint directory's model on meta from its ``config.json``; read its safetensors headers."""
    from transformers import AutoConfig

    from .._checkpoint import read_checkpoint

    if not (directory / "config.json").is_file():
        raise UsageError(f"no config.json in {directory}: give a saved checkpoint directory or a model type")
    try:
        config = AutoConfig.from_pretrained(str(directory), trust_remote_code=trust_remote_code)
    except Exception as exc:
        message = one_line(exc)
        if "trust_remote_code" in message and not trust_remote_code:
            raise UsageError(
                f"{directory} needs its own code (auto_map in config.json); "
                "rerun with --trust-remote-code if you trust it"
            ) from None
        raise UsageError(f"unreadable config.json in {directory}: {message}") from None
    apply_sets(config, sets)
    files = read_checkpoint(directory)
    if cls_name or task:
        cls, picked = _pick_class(config.model_type, cls_name, task)
        model = _build_meta(cls, config, auto=TASKS[picked][0] if picked else "")
    else:
        import transformers

        arch = (getattr(config, "architectures", None) or [None])[0]
        cls_obj = getattr(transformers, arch, None) if arch else None
        if isinstance(cls_obj, type):
            model = _build_meta(cls_obj, config)
        elif getattr(config, "auto_map", None) and trust_remote_code:
            auto = next((a for a in config.auto_map if a.startswith("AutoModel")), "AutoModel")
            model = _build_meta(type(None), config, trust_remote_code=True, auto=auto)
        else:
            cls, picked = _pick_class(config.model_type, None, None)
            model = _build_meta(cls, config, auto=TASKS[picked][0])
    return Built(
        model, "checkpoint", str(directory), type(model).__name__, "its config.json", checkpoint=files
    )


def looks_like_path(spec: str) -> bool:
    """A SPEC written as a path (``./x``, ``a/b``, ``~/x``) is never a model type."""
    return "/" in spec or os.sep in spec or spec.startswith((".", "~"))
