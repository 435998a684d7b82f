"""Build models for the command line: transformers model types, checkpoint directories and factories.

Everything here serves :mod:`tiegraph.cli`: models are built on the meta device from configs (no weights
are downloaded, read or allocated), checkpoint directories are read with safetensors (headers only, unless
values are asked for; never unpickled), and command-line wrapping (PEFT, ``torch.compile``) is applied.
Bad input raises :class:`UsageError` with a one-line message naming the problem.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import json
import logging
import os
import re
import sys
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import TiegraphError

if TYPE_CHECKING:
    from torch import nn

    from .graph import TieGraph

__all__ = [
    "TASKS",
    "Built",
    "CheckpointFiles",
    "UsageError",
    "build_spec",
    "check_checkpoint",
    "parse_peft",
    "parse_sets",
    "quiet_libraries",
    "read_checkpoint",
    "wrap",
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

#: The head picked for a model type when neither ``--task`` nor ``--class`` is given: the first task whose
#: mapping knows the type. Encoder-decoders first (Bart is also a causal LM), masked before causal (Bert's
#: causal head is a standalone-decoder variant), the base model last.
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

#: Files never opened: they are pickles, and unpickling runs code.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")

_KEY = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


class UsageError(TiegraphError):
    """Bad command-line input: the message is one line naming the problem (the CLI exits with 2)."""


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


# ---------------------------------------------------------------------------------------------- quiet
def quiet_libraries(verbose: bool) -> None:
    """Silence transformers/peft/torch warnings and logging unless ``verbose``; call before importing them."""
    if verbose:
        return
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore")
    for name in ("transformers", "peft", "torch", "accelerate", "huggingface_hub"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if "transformers" in sys.modules:
        sys.modules["transformers"].logging.set_verbosity_error()


@contextlib.contextmanager
def _stderr_silenced() -> Iterator[None]:
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


# ---------------------------------------------------------------------------------------------- --set
def _parse_value(text: str) -> Any:
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
        out.append((key.split("."), _parse_value(value.strip())))
    return out


def _config_keys(config: Any) -> list[str]:
    keys = set(config.to_dict()) | set(getattr(config, "attribute_map", {}) or {})
    return sorted(k for k in keys if not k.startswith("_"))


def _apply_sets(config: Any, sets: Sequence[tuple[list[str], Any]], *, check_only: bool = False) -> None:
    """Set overrides on a config (nested keys walk sub-configs); unknown keys are an error with matches.

    With ``check_only``, only check that every key names a field (nothing is set).
    """
    for path, value in sets:
        target = config
        for i, part in enumerate(path):
            last = i == len(path) - 1
            keys = _config_keys(target)
            if not hasattr(target, part) or (not last and not hasattr(getattr(target, part), "to_dict")):
                where = ".".join(path[:i]) or type(config).__name__
                what = "field" if last else "sub-config"
                raise UsageError(
                    f"bad --set {'.'.join(path)}: {where} has no {what} {part!r}" + _close(part, keys)
                )
            if last and not check_only:
                try:
                    setattr(target, part, value)
                except Exception as exc:  # config validators raise assorted types
                    raise UsageError(f"bad --set {'.'.join(path)}={value!r}: {_one_line(exc)}") from None
            elif not last:
                target = getattr(target, part)


def _close(word: str, choices: Sequence[str], n: int = 3) -> str:
    matches = difflib.get_close_matches(word, list(choices), n=n, cutoff=0.6)
    return f"; did you mean {', '.join(matches)}?" if matches else ""


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    text = text if text else type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


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
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    return sorted(CONFIG_MAPPING_NAMES)


def _transformers_class(name: str) -> type:
    import transformers
    from torch import nn

    cls = getattr(transformers, name, None) if name.isidentifier() else None
    if not isinstance(cls, type) or not issubclass(cls, nn.Module):
        choices = [n for n in dir(transformers) if n[:1].isupper()]
        raise UsageError(f"--class {name!r} is not a transformers model class" + _close(name, choices))
    return cls


def _pick_class(model_type: str, cls_name: str | None, task: str | None) -> tuple[type, str]:
    """The class to build and the task it came from (``""`` for ``--class``)."""
    if cls_name:
        return _transformers_class(cls_name), ""
    tasks = [task] if task else list(TASK_ORDER)
    for t in tasks:
        name = task_mapping(t).get(model_type)
        if name:
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

                return getattr(transformers, auto).from_config(config, trust_remote_code=trust_remote_code)
            return cls._from_config(config) if hasattr(cls, "_from_config") else cls(config)
    except UsageError:
        raise
    except Exception as exc:
        name = auto if cls is type(None) else getattr(cls, "__name__", auto)
        raise UsageError(f"{name} could not be built from its config: {_one_line(exc)}") from None


def build_model_type(
    model_type: str,
    *,
    cls_name: str | None = None,
    task: str | None = None,
    sets: Sequence[tuple[list[str], Any]] = (),
) -> Built:
    """Build a transformers model type from its default config on the meta device.

    Top-level ``sets`` are passed to the config's constructor (so derived fields follow them); nested keys
    are set on the sub-config afterwards.
    """
    from transformers import AutoConfig

    types = model_types()
    if model_type not in types:
        raise UsageError(f"unknown model type {model_type!r}" + _close(model_type, types, n=5))
    top = {path[0]: value for path, value in sets if len(path) == 1}
    try:
        if top:
            _apply_sets(AutoConfig.for_model(model_type), sets, check_only=True)
        config = AutoConfig.for_model(model_type, **top)
    except UsageError:
        raise
    except Exception as exc:
        raise UsageError(f"the {model_type} config rejects --set {top}: {_one_line(exc)}") from None
    _apply_sets(config, [(p, v) for p, v in sets if len(p) > 1])
    cls, picked = _pick_class(model_type, cls_name, task)
    # Through the task's auto class when picked by task: it passes composite configs' text config on.
    model = _build_meta(cls, config, auto=TASKS[picked][0] if picked else "")
    how = f"task {picked}" if picked else "--class"
    return Built(model, "model-type", model_type, type(model).__name__, f"default {model_type} config, {how}")


# ---------------------------------------------------------------------------------------------- checkpoints
@dataclass
class CheckpointFiles:
    """What a checkpoint directory holds, read from safetensors headers only."""

    directory: Path
    keys: dict[str, str]  # tensor name -> file name
    files: list[str]  # safetensors files read
    skipped: list[str]  # pickle files never opened
    index: str | None = None
    missing_shards: list[str] = field(default_factory=list)
    metadata: dict[str, dict[str, str]] = field(default_factory=dict)


def read_checkpoint(directory: Path) -> CheckpointFiles:
    """Read the tensor names of every safetensors file in a directory (headers only, nothing unpickled).

    A ``*.safetensors.index.json`` names the shards; otherwise every ``*.safetensors`` file is read.

    Raises
    ------
    UsageError
        If a safetensors header cannot be read, or the index is not valid JSON.
    """
    from safetensors import safe_open

    names = sorted(p.name for p in directory.iterdir() if p.is_file())
    skipped = [n for n in names if n.endswith(PICKLE_SUFFIXES)]
    index_name = next((n for n in names if n.endswith(".safetensors.index.json")), None)
    shards = sorted(n for n in names if n.endswith(".safetensors"))
    missing: list[str] = []
    if index_name:
        try:
            weight_map = json.loads((directory / index_name).read_text())["weight_map"]
        except (ValueError, KeyError, TypeError) as exc:
            raise UsageError(
                f"unreadable checkpoint index {directory / index_name}: {_one_line(exc)}"
            ) from None
        wanted = sorted(set(weight_map.values()))
        missing = [n for n in wanted if n not in shards]
        shards = [n for n in wanted if n in shards]
    keys: dict[str, str] = {}
    metadata: dict[str, dict[str, str]] = {}
    for name in shards:
        try:
            with safe_open(str(directory / name), framework="pt") as f:
                for key in f.keys():  # noqa: SIM118 -- safe_open is not a mapping
                    keys[key] = name
                metadata[name] = dict(f.metadata() or {})
        except Exception as exc:
            raise UsageError(
                f"unreadable safetensors header in {directory / name}: {_one_line(exc)}"
            ) from None
    return CheckpointFiles(directory, keys, shards, skipped, index_name, missing, metadata)


def _read_tensor(files: CheckpointFiles, key: str) -> Any:
    from safetensors import safe_open

    with safe_open(str(files.directory / files.keys[key]), framework="pt") as f:
        return f.get_tensor(key)


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

    if not (directory / "config.json").is_file():
        raise UsageError(f"no config.json in {directory}: give a saved checkpoint directory or a model type")
    try:
        config = AutoConfig.from_pretrained(str(directory), trust_remote_code=trust_remote_code)
    except Exception as exc:
        message = _one_line(exc)
        if "trust_remote_code" in message and not trust_remote_code:
            raise UsageError(
                f"{directory} needs its own code (auto_map in config.json); "
                "rerun with --trust-remote-code if you trust it"
            ) from None
        raise UsageError(f"unreadable config.json in {directory}: {message}") from None
    _apply_sets(config, sets)
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


def _file_key(name: str, keys: dict[str, str], prefix: str) -> str | None:
    """The checkpoint key of a canonical slot name (also tried with/without the base model prefix)."""
    if name in keys:
        return name
    if prefix:
        if name.startswith(prefix + ".") and name[len(prefix) + 1 :] in keys:
            return name[len(prefix) + 1 :]
        if f"{prefix}.{name}" in keys:
            return f"{prefix}.{name}"
    return None


def check_checkpoint(
    tg: TieGraph, model: nn.Module, files: CheckpointFiles, *, check_values: bool
) -> tuple[list[str], bool]:
    """Lay the checkpoint's tensors beside the tie groups.

    Returns
    -------
    lines, problem
        Report lines, and whether loading would untie a tie the model makes (two saved copies differ).
    """
    prefix = getattr(model, "base_model_prefix", "") or ""
    keys = files.keys
    lines = [
        f"checkpoint: {files.directory} ({len(keys)} tensors in {len(files.files)} safetensors file"
        f"{'' if len(files.files) == 1 else 's'}{', index ' + files.index if files.index else ''})"
    ]
    if files.skipped:
        lines.append(f"  skipped (pickle, never unpickled): {', '.join(files.skipped)}")
    if files.missing_shards:
        lines.append(f"  shards named by the index but absent: {', '.join(files.missing_shards)}")
    if not files.files:
        lines.append("  no safetensors files: nothing to compare")
        return lines, False
    problem = False
    grouped: set[str] = set()
    for group in tg.tie_groups():
        grouped.update(group)
        present = [(n, k) for n in group if (k := _file_key(n, keys, prefix))]
        absent = [n for n in group if not _file_key(n, keys, prefix)]
        head = f"  tie group {', '.join(group)}:"
        if not present:
            lines.append(f"{head} none saved (transformers initialises the whole group randomly)")
        elif len(present) == 1:
            lines.append(f"{head} saved once as {present[0][1]}; absent {', '.join(absent)} (normal)")
        elif not check_values:
            saved = ", ".join(k for _, k in present)
            lines.append(f"{head} {len(present)} copies saved ({saved}); --check-values compares them")
        else:
            tensors = [_read_tensor(files, k) for _, k in present]
            first = tensors[0]
            same = all(t.shape == first.shape and bool((t == first).all()) for t in tensors[1:])
            saved = ", ".join(k for _, k in present)
            if same:
                lines.append(f"{head} {len(present)} equal copies saved ({saved}); loads tied")
            else:
                problem = True
                lines.append(
                    f"{head} {len(present)} saved copies DIFFER ({saved}): transformers will load them "
                    "untied (and keep the config's tie flag)"
                )
    missing = [
        n
        for n, t in _parameters(tg)
        if t == "parameter" and n not in grouped and not _file_key(n, keys, prefix)
    ]
    if missing:
        shown = ", ".join(missing[:5]) + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else "")
        lines.append(f"  {len(missing)} parameters absent from the files (initialised randomly): {shown}")
    return lines, problem


def _parameters(tg: TieGraph) -> list[tuple[str, str]]:
    """(canonical slot name, tensor kind) for every slot, first occurrence only."""
    seen: dict[str, str] = {}
    for _, data in tg.graph.nodes(data=True):
        if data["kind"] == "slot":
            seen.setdefault(data["canonical"], data["tensor"])
    return list(seen.items())


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
        raise UsageError(f"cannot import {module_name!r}: {_one_line(exc)}") from None
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
        raise UsageError(f"{spec}() raised {type(exc).__name__}: {_one_line(exc)}") from None
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
    """Build what a SPEC names: a checkpoint directory, ``package.module:callable`` or a model type."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return build_checkpoint(
            path, cls_name=cls_name, task=task, sets=sets, trust_remote_code=trust_remote_code
        )
    if path.exists():
        raise UsageError(f"{spec} is a file; give a checkpoint directory (holding config.json)")
    if _FACTORY.match(spec):
        return build_factory(spec, allow_code=allow_code, meta=meta)
    if "/" in spec or os.sep in spec or spec.startswith((".", "~")):
        raise UsageError(f"no such directory: {spec}")
    return build_model_type(spec, cls_name=cls_name, task=task, sets=sets)


# ---------------------------------------------------------------------------------------------- wrapping
PEFT_KINDS = ("lora", "lora-tied", "modules-to-save")


def parse_peft(items: Sequence[str]) -> dict[str, list[str]]:
    """Parse ``--peft KIND:MODULE[,MODULE...]`` options into module lists per kind.

    Examples
    --------
    >>> parse_peft(["lora:lm_head,q_proj", "modules-to-save:embed_tokens"])
    {'lora': ['lm_head', 'q_proj'], 'lora-tied': [], 'modules-to-save': ['embed_tokens']}
    """
    out: dict[str, list[str]] = {k: [] for k in PEFT_KINDS}
    for item in items:
        kind, sep, modules = item.partition(":")
        names = [m.strip() for m in modules.split(",") if m.strip()]
        if not sep or kind not in out or not names:
            raise UsageError(
                f"bad --peft {item!r}: expected KIND:MODULE[,MODULE...], KIND one of {', '.join(PEFT_KINDS)}"
            )
        out[kind].extend(n for n in names if n not in out[kind])
    return out


def wrap(model: nn.Module, peft: dict[str, list[str]] | None, compile: bool) -> tuple[nn.Module, list[str]]:
    """Wrap with one PEFT LoRA config (all ``--peft`` options merged), then ``torch.compile``.

    Returns the wrapped model and one phrase per wrapper applied.
    """
    done: list[str] = []
    if peft and any(peft.values()):
        try:
            from peft import LoraConfig, get_peft_model
            from peft.utils.constants import DUMMY_TARGET_MODULES
        except ImportError:
            raise UsageError("--peft needs peft: pip install peft") from None
        targets = peft["lora"] + [m for m in peft["lora-tied"] if m not in peft["lora"]]
        config = LoraConfig(
            r=8,
            target_modules=targets or DUMMY_TARGET_MODULES,
            modules_to_save=peft["modules-to-save"] or None,
            ensure_weight_tying=bool(peft["lora-tied"]),
        )
        try:
            model = get_peft_model(model, config)
        except Exception as exc:
            raise UsageError(f"PEFT could not wrap the model: {_one_line(exc)}") from None
        for kind in PEFT_KINDS:
            if peft[kind]:
                done.append(f"PEFT {kind} on {', '.join(peft[kind])}")
    if compile:
        import torch

        model = torch.compile(model)  # type: ignore[assignment]
        done.append("torch.compile")
    return model, done


def count_parameters(model: nn.Module) -> int:
    """Number of elements in the model's distinct parameters (meta tensors included; no data read)."""
    return sum(p.numel() for p in model.parameters())


def human_count(n: int) -> str:
    """``6738415616`` -> ``'6.74B'``.

    Examples
    --------
    >>> human_count(6738415616), human_count(1200), human_count(12)
    ('6.74B', '1.20K', '12')
    """
    for unit, size in (("T", 10**12), ("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


# ---------------------------------------------------------------------------------------------- summaries
def summarise(tg: TieGraph) -> dict[str, Any]:
    """Plain-data answers of one graph: input embedding, tied targets, tie groups, declarations, findings.

    ``declared`` and ``findings`` are None when the installed tiegraph has no audit.
    """
    from .errors import NoInputEmbeddingError

    out: dict[str, Any] = {"input_embedding": tg.input_embedding()}
    try:
        out["tied_to_input_embedding"] = tg.tied_to_input_embedding()
    except NoInputEmbeddingError:
        out["tied_to_input_embedding"] = None
    out["tie_groups"] = tg.tie_groups()
    try:
        declared = tg.declared_ties()
        findings = tg.audit()
    except ImportError:  # tiegraph.declared / tiegraph.audit not installed
        out["declared"] = out["findings"] = None
        return out
    out["declared"] = [_plain(d, ("target", "source", "declared_by", "status")) for d in declared]
    out["findings"] = [_plain(f, ("kind", "paths", "message")) for f in findings]
    return out


def _plain(obj: Any, names: Sequence[str]) -> dict[str, Any]:
    out = {}
    for name in names:
        value = getattr(obj, name, None)
        if isinstance(value, tuple):
            value = list(value)
        out[name] = value
    if out.get("message") is None and "message" in names:
        out["message"] = str(obj)
    return out
