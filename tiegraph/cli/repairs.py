"""Generic repairs for default configs that transformers cannot build as they come.

Some model types ship a default config that its own modeling code cannot build (a ``None`` size a real
checkpoint would set, heads that do not divide the hidden size, a flag the class asserts, a composite config
handed to a class that wants one of its parts). The survey then retries with the repairs below, in order,
each one generic (driven by field names, types and the exception, never by the model type), and records
which were needed. None of them touches a tie flag or ``_tied_weights_keys``, so what is tied is what the
model's own code ties.

| repair | what it changes |
|---|---|
| ``own-class`` | the auto class rejects the config: build the mapped class itself (``cls._from_config``) |
| ``sub-config`` | the class wants a part of a composite config: build it from that sub-config |
| ``asserted-flag`` | the class or config asserts a value (```is_decoder=True```, ``x must be 0``): set it |
| ``fill-none`` | a ``None`` size, count, list or map the code reads, or a field it reads that the config
  lacks: filled from its namesake (``decoder_hidden_size`` <- ``hidden_size``), a small count, one
  layer type per layer, or an empty list/map |
| ``heads-divide-hidden`` | attention heads set to the largest divisor of the hidden size not above them |
| ``rope-per-layer-type`` | ``rope_parameters`` given for every entry of ``layer_types`` |
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .._text import one_line
from .overrides import parse_value

__all__ = ["REPAIRS", "Attempt", "RepairFailed", "build_repaired"]

#: Repair name -> what it does, in the order they are tried (shown in ``docs/survey.md``).
REPAIRS: dict[str, str] = {
    "own-class": "the task's auto class rejects the config: build the mapped class itself",
    "sub-config": "the class wants one part of a composite config: build it from that sub-config",
    "asserted-flag": "set the value an assertion or a config validator names (`is_decoder=True`, "
    "`x must be 0`)",
    "fill-none": "fill a None size, count or layer-type list: from its namesake (decoder_hidden_size <- "
    "hidden_size), a small count, one type per layer; a field read from a config that lacks it: from the "
    "config that has it",
    "heads-divide-hidden": "attention heads set to the largest divisor of the hidden size not above them",
    "rope-per-layer-type": "rope_parameters given for every layer type in layer_types",
    "fill-empty": "fill a None string, list or map the code reads: the example its config docstring gives, "
    "else an empty list/map",
}

#: Values for ``None`` counts that have no namesake (a real checkpoint sets them).
_COUNTS = {
    "vocab_size": 1024,
    "num_experts": 4,
    "n_routed_experts": 4,
    "num_local_experts": 4,
    "n_shared_experts": 1,
    "num_experts_per_tok": 1,
    "top_k_experts": 1,
    "n_group": 1,
    "topk_group": 1,
}
#: Suffix -> value for ``None`` fields with no namesake.
_SUFFIXES = (("_budget", 64), ("_ratio", 4), ("_depth", 1), ("_layers", 1))
#: Layer-type lists -> the type every layer gets when the list is missing.
_LAYER_TYPE = {"layer_types": "full_attention", "mlp_layer_types": "dense"}
_DEFAULT_ROPE = {"rope_type": "default", "rope_theta": 10000.0}


@dataclass
class Attempt:
    """How a build went: the repairs applied, the config fields they changed, and the errors on the way."""

    repairs: list[str] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class RepairFailed(Exception):
    """No repair made the model build; ``attempt.errors`` holds every error, the default's first."""

    def __init__(self, attempt: Attempt, exc: BaseException) -> None:
        super().__init__(attempt.errors[0] if attempt.errors else str(exc))
        self.attempt = attempt
        self.last = exc


def _configs(config: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted path, config) for a config and every sub-config under it."""
    yield prefix, config
    for name, value in vars(config).items():
        if not name.startswith("_") and hasattr(value, "to_dict") and hasattr(value, "model_type"):
            yield from _configs(value, f"{prefix}{name}.")


def _annotation(config: Any, name: str) -> str:
    if dataclasses.is_dataclass(config):
        for f in dataclasses.fields(config):
            if f.name == name:
                return str(f.type)
    return ""


def _int(config: Any, name: str) -> int | None:
    value = getattr(config, name, None)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _base_fields() -> frozenset[str]:
    from transformers import PretrainedConfig

    if dataclasses.is_dataclass(PretrainedConfig):
        return frozenset(f.name for f in dataclasses.fields(PretrainedConfig))
    return frozenset(vars(PretrainedConfig()))


_EXAMPLE = r"^\s+{name} \(`[^`]*`.*?\n(?:\s{{5,}}.*\n)*?.*?e\.g\. `([^`]+)`"


def _documented_example(config: Any, name: str) -> Any:
    """The value the config class's docstring gives as an example for ``name`` (``e.g. `"1/4"```), or None."""
    for klass in type(config).__mro__:
        match = re.search(_EXAMPLE.format(name=re.escape(name)), klass.__doc__ or "", re.MULTILINE)
        if match:
            value = parse_value(match.group(1))
            return None if isinstance(value, str) and "..." in value else value
    return None


def _fill_value(config: Any, name: str) -> Any:
    """The value a ``None`` (or absent) size, count or layer-type list gets; None when no rule covers it."""
    hidden, heads = _int(config, "hidden_size"), _int(config, "num_attention_heads")
    if name == "rope_theta":
        rope = getattr(config, "rope_parameters", None) or {}
        return rope.get("rope_theta", 10000.0) if isinstance(rope, dict) else 10000.0
    if name.endswith("dropout"):
        return 0.0
    if name in _LAYER_TYPE:
        layers = _int(config, "num_hidden_layers")
        return [_LAYER_TYPE[name]] * layers if layers else None
    if name.endswith("head_dim"):
        return _int(config, "head_dim") or (hidden // heads if hidden and heads else None)
    if name.endswith("kv_heads") or name == "num_key_value_heads":
        return _int(config, "num_key_value_heads") or heads
    if name.endswith(("n_heads", "num_heads")):
        return heads or 1
    if name in _COUNTS:
        return _COUNTS[name]
    for cut in range(1, name.count("_") + 1):  # namesake: the longest suffix that is an int field
        namesake = name.split("_", cut)[-1]
        if _int(config, namesake):
            return _int(config, namesake)
    for suffix, value in _SUFFIXES:
        if name.endswith(suffix):
            return value
    return None


def _empty_value(config: Any, name: str) -> Any:
    """The value a ``None`` field typed as a string, list or map gets: its documented example, else empty."""
    example = _documented_example(config, name)
    if example is not None:
        return example
    kind = _annotation(config, name)
    return {} if kind.startswith("dict") else [] if kind.startswith("list") else None


def _set(config: Any, name: str, value: Any, where: str, changes: list[str]) -> None:
    try:
        setattr(config, name, value)
    except Exception:  # a strict config refused the value: the repair does not apply
        return
    changes.append(f"{where}{name}={value!r}")


# ---------------------------------------------------------------------------------------------- repairs
@dataclass
class _State:
    model_type: str
    cls: type
    auto: Any  # the task's auto class, or None
    overrides: dict[str, Any] = field(default_factory=dict)
    config: Any = None
    sub: str = ""  # dotted path of the sub-config to build from


def _own_class(state: _State, exc: BaseException) -> list[str]:
    if state.auto is None or "Unrecognized configuration class" not in str(exc):
        return []
    state.auto = None
    return [f"{state.cls.__name__}._from_config"]


def _sub_config(state: _State, _exc: BaseException) -> list[str]:
    wanted = getattr(state.cls, "config_class", None)
    if state.config is None or wanted is None or isinstance(state.config, wanted) or state.sub:
        return []
    for path, sub in _configs(state.config):
        if path and isinstance(sub, wanted):
            state.sub, state.auto = path.rstrip("."), None
            return [f"config.{state.sub}"]
    return []


_ASSERTED = (
    re.compile(r"`(\w+)\s*=\s*(\w+)`"),  # make sure that `is_decoder=True`
    re.compile(r"\b(\w+) must be (-?\w+), got\b"),  # hidden_size_per_layer_input must be 0, got 256
)


def _asserted_flag(state: _State, exc: BaseException) -> list[str]:
    changes: list[str] = []
    for pattern in _ASSERTED:
        for name, text in pattern.findall(str(exc)):
            value = parse_value(text)
            if state.config is None:  # the config constructor itself refused: pass it the value
                changes.extend(_override(state, name, value))
                continue
            for path, config in _configs(state.config):
                if hasattr(config, name) and getattr(config, name) != value:
                    _set(config, name, value, path, changes)
    return changes


def _override(state: _State, name: str, value: Any) -> list[str]:
    """Pass ``name=value`` to the config constructor, at the top or in the sub-config that has the field."""
    from transformers import CONFIG_MAPPING

    config_class = CONFIG_MAPPING[state.model_type]
    if hasattr(config_class, name) and state.overrides.get(name, object()) != value:
        state.overrides[name] = value
        return [f"{name}={value!r}"]
    defaults = getattr(config_class, "sub_configs_defaults", None) or {}
    for sub, sub_class in (getattr(config_class, "sub_configs", None) or {}).items():
        nested = dict(state.overrides.get(sub) or {})
        default_type = getattr(defaults.get(sub), "model_type", None)
        if (
            isinstance(default_type, str) and default_type in CONFIG_MAPPING and not hasattr(sub_class, name)
        ):  # AutoConfig: the default's
            sub_class = CONFIG_MAPPING[default_type]
            nested.setdefault("model_type", default_type)
        if hasattr(sub_class, name) and nested.get(name, object()) != value:
            nested[name] = value
            state.overrides[sub] = nested
            return [f"{sub}.{name}={value!r}"]
    return []


_MISSING = re.compile(r"'(\w+)' object has no attribute '(\w+)'")


def _fill(state: _State, exc: BaseException, rule: Callable[[Any, str], Any]) -> list[str]:
    if state.config is None:
        return []
    changes: list[str] = []
    base = _base_fields()
    tree = list(_configs(state.config))
    missing = _MISSING.search(str(exc)) if isinstance(exc, AttributeError) else None
    for path, config in tree:
        if missing and type(config).__name__ == missing.group(1) and not hasattr(config, missing.group(2)):
            name = missing.group(2)  # read from a config that lacks it: another config's value, else a rule
            value = next((getattr(c, name) for _, c in tree if getattr(c, name, None) is not None), None)
            value = rule(config, name) if value is None else value
            if value is not None:
                _set(config, name, value, path, changes)
        for name, value in list(vars(config).items()):
            if value is None and not name.startswith("_") and name not in base:
                filled = rule(config, name)
                if filled is not None:
                    _set(config, name, filled, path, changes)
    return changes


def _fill_none(state: _State, exc: BaseException) -> list[str]:
    return _fill(state, exc, _fill_value)


def _fill_empty(state: _State, exc: BaseException) -> list[str]:
    return _fill(state, exc, _empty_value)


def _largest_divisor(n: int, at_most: int) -> int:
    return next(d for d in range(min(n, at_most), 0, -1) if n % d == 0)


def _heads_divide_hidden(state: _State, _exc: BaseException) -> list[str]:
    changes: list[str] = []
    for path, config in _configs(state.config) if state.config is not None else ():
        hidden, heads = _int(config, "hidden_size"), _int(config, "num_attention_heads")
        if hidden and heads and hidden % heads:
            heads = _largest_divisor(hidden, heads)
            _set(config, "num_attention_heads", heads, path, changes)
            kv = _int(config, "num_key_value_heads")
            if kv and heads % kv:
                _set(config, "num_key_value_heads", _largest_divisor(heads, kv), path, changes)
    return changes


def _rope_per_layer_type(state: _State, _exc: BaseException) -> list[str]:
    changes: list[str] = []
    for path, config in _configs(state.config) if state.config is not None else ():
        types = getattr(config, "layer_types", None)
        rope = getattr(config, "rope_parameters", None)
        if not isinstance(types, list) or not isinstance(rope, dict) or all(t in rope for t in types):
            continue
        base = rope if "rope_type" in rope else _DEFAULT_ROPE
        _set(config, "rope_parameters", {t: dict(base) for t in dict.fromkeys(types)}, path, changes)
    return changes


_REPAIR_FUNCTIONS: dict[str, Callable[[_State, BaseException], list[str]]] = {
    "own-class": _own_class,
    "sub-config": _sub_config,
    "asserted-flag": _asserted_flag,
    "fill-none": _fill_none,
    "heads-divide-hidden": _heads_divide_hidden,
    "rope-per-layer-type": _rope_per_layer_type,
    "fill-empty": _fill_empty,
}


def build_repaired(
    model_type: str, cls: Any, auto: Any, build: Callable[[Callable[[], Any]], Any], *, rounds: int = 8
) -> tuple[Any, Attempt]:
    """Build ``cls`` from the default config of ``model_type``, repairing the config while it fails.

    Parameters
    ----------
    model_type, cls, auto
        The model type, the class to build and the task's auto class (None: build ``cls`` itself).
    build
        Runs a zero-argument constructor in the build context (e.g. on meta) and returns the model.
    rounds
        At most this many repairs are applied.

    Returns
    -------
    model, attempt
        The model, and the repairs applied (empty when the default config built).

    Raises
    ------
    RepairFailed
        When no repair applies to the last error, or ``rounds`` repairs were not enough.
    """
    from transformers import AutoConfig

    state = _State(model_type, cls, auto)
    attempt = Attempt()
    last: BaseException = RuntimeError("no build was tried")
    for _ in range(rounds + 1):
        try:
            if state.config is None:  # first round, or the constructor refused its defaults
                state.config = AutoConfig.for_model(model_type, **state.overrides)
            config = state.config
            for part in state.sub.split(".") if state.sub else ():
                config = getattr(config, part)
            maker = state.auto.from_config if state.auto is not None else cls._from_config
            return build(functools.partial(maker, config)), attempt
        except Exception as exc:
            last = exc
            attempt.errors.append(f"{type(exc).__name__}: {one_line(exc)}")
            if isinstance(exc, ImportError):  # a missing package: no config repair brings it
                raise RepairFailed(attempt, exc) from exc
            for name, repair in _REPAIR_FUNCTIONS.items():
                changed = repair(state, exc)
                if changed:
                    attempt.repairs.append(name)
                    attempt.changes.extend(changed)
                    break
            else:
                raise RepairFailed(attempt, exc) from exc
    raise RepairFailed(attempt, last)
