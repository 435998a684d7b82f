"""A plan of ``fully_shard`` calls, read from what users write, and which call takes which module.

A plan is the ordered list of ``fully_shard`` calls: each call is a module, a module path, or a list of
them (one FSDP group over several modules). A mapping naming layer classes (the
``transformer_layer_cls_to_wrap`` of the Trainer's ``fsdp_config``, accelerate's
``fsdp_transformer_layer_cls_to_wrap`` / ``transformer_cls_names_to_wrap``) is expanded into the calls
accelerate 1.15's ``fsdp2_prepare_model`` makes from it.

Which call takes a module follows torch's ``_get_managed_modules``: a call walks down from its modules and
stops at any module an earlier call already sharded; the parameters of the modules it reaches are its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from .._sharded import call_text
from ..errors import PathNotFoundError, TiegraphError

__all__ = ["Call", "assign", "resolve"]

#: The mapping keys that name the layer classes of a wrap policy (Trainer, accelerate config, plugin).
LAYER_KEYS = (
    "transformer_layer_cls_to_wrap",
    "fsdp_transformer_layer_cls_to_wrap",
    "transformer_cls_names_to_wrap",
)


@dataclass(frozen=True)
class Call:
    """One ``fully_shard`` call: its modules (one or several) and their primary paths."""

    modules: tuple[nn.Module, ...]
    paths: tuple[str, ...]

    @property
    def text(self) -> str:
        """The call as a user writes it, e.g. ``fully_shard([model.model.embed_tokens, model.lm_head])``."""
        return call_text(self.paths)


def _paths(model: nn.Module) -> dict[int, str]:
    paths: dict[int, str] = {}
    for path, module in model.named_modules(remove_duplicate=False):
        paths.setdefault(id(module), path)
    return paths


def _one(model: nn.Module, item: Any, paths: dict[int, str]) -> nn.Module:
    if isinstance(item, str):
        try:
            return model.get_submodule(item)
        except AttributeError:
            raise PathNotFoundError(
                f"the shard plan names {item!r}, which is not a module of the model; use a path that "
                "model.named_modules() yields, or pass the module itself"
            ) from None
    if isinstance(item, nn.Module):
        if id(item) not in paths:
            raise PathNotFoundError(
                f"the shard plan holds a {type(item).__name__} that is not a submodule of the model; pass "
                "modules of the same model object the plan is checked against"
            )
        return item
    raise TiegraphError(
        f"a shard plan call takes a module, a module path or a list of them, not {type(item).__name__} "
        f"({item!r:.60})"
    )


def _call(model: nn.Module, item: Any, paths: dict[int, str]) -> Call:
    items = list(item) if isinstance(item, (list, tuple)) else [item]
    if not items:
        raise TiegraphError("a shard plan call is an empty list; give it at least one module")
    modules = tuple(dict.fromkeys(_one(model, i, paths) for i in items))
    return Call(modules, tuple(paths[id(m)] for m in modules))


def resolve(model: nn.Module, plan: Any) -> list[Call]:
    """The plan's calls, in order; a bare module or path is one call, a mapping a wrap policy."""
    paths = _paths(model)
    if isinstance(plan, Mapping):
        items: Iterable[Any] = _accelerate_calls(model, plan)
    elif isinstance(plan, (str, nn.Module)):
        items = [plan]
    elif isinstance(plan, Iterable):
        items = list(plan)
    else:
        raise TiegraphError(
            f"a shard plan is a list of fully_shard calls or a mapping naming layer classes "
            f"({', '.join(LAYER_KEYS)}), not {type(plan).__name__}"
        )
    calls = [_call(model, item, paths) for item in items]
    if not calls:
        raise TiegraphError("the shard plan holds no fully_shard call")
    return calls


def _class_names(plan: Mapping[str, Any]) -> list[str]:
    version = plan.get("fsdp_version", 2)
    if str(version) != "2":
        raise TiegraphError(
            f"the plan says fsdp_version={version!r}; check_shard_plan models FSDP2 (fully_shard) only"
        )
    for key in LAYER_KEYS:
        if key in plan:
            value = plan[key]
            names = value.split(",") if isinstance(value, str) else list(value)
            return [str(n).strip() for n in names if str(n).strip()]
    raise TiegraphError(
        f"a shard plan mapping names its layer classes under one of {', '.join(LAYER_KEYS)}; "
        f"got the keys {', '.join(map(str, plan)) or 'none'}"
    )


def _bottom_up(model: nn.Module) -> list[nn.Module]:
    """accelerate's ``get_module_children_bottom_up``, without the model itself."""
    stack, ordered = [model], []
    while stack:
        current = stack.pop()
        stack.extend(child for _, child in current.named_children())
        ordered.append(current)
    return ordered[::-1][:-1]


def _final_norm(model: nn.Module) -> nn.Module | None:
    prefix = getattr(model, "base_model_prefix", "")
    base = getattr(model, prefix, None) if prefix else model
    norms = (
        [m for _, m in base.named_children() if "Norm" in type(m).__name__]
        if isinstance(base, nn.Module)
        else []
    )
    return norms[-1] if norms else None


def _embeddings(model: nn.Module) -> tuple[nn.Module | None, nn.Module | None]:
    found = []
    for getter in ("get_input_embeddings", "get_output_embeddings"):
        try:
            module = getattr(model, getter, lambda: None)()
        except Exception:  # a model without one: accelerate's getattr default, same outcome
            module = None
        found.append(module if isinstance(module, nn.Module) else None)
    return found[0], found[1]


def _accelerate_calls(model: nn.Module, plan: Mapping[str, Any]) -> list[Any]:
    """The calls accelerate 1.15's ``fsdp2_prepare_model`` makes for a layer-class wrap policy."""
    names = set(_class_names(plan))
    classes = {type(m).__name__ for m in model.modules()}
    if missing := sorted(names - classes):
        raise TiegraphError(
            f"the wrap policy names {', '.join(missing)}, which no module of the model is "
            f"(accelerate raises 'Could not find the transformer layer class'); classes here include "
            f"{', '.join(sorted(classes)[:8])}"
        )
    calls: list[Any] = []
    done: set[int] = set()
    for module in _bottom_up(model):
        inner = getattr(module, "_checkpoint_wrapped_module", module)
        if type(inner).__name__ in names and id(module) not in done:
            calls.append(module)
            done.add(id(module))
    embed, head = _embeddings(model)
    tied = (
        embed is not None
        and head is not None
        and getattr(embed, "weight", None) is getattr(head, "weight", 0)
    )
    if not tied and embed is not None and id(embed) not in done:
        calls.append(embed)
        done.add(id(embed))
    tail = (_final_norm(model), embed, head) if tied else (_final_norm(model), head)
    if kept := [m for m in tail if m is not None and id(m) not in done]:
        calls.append(kept)
    return [*calls, model]


def assign(calls: list[Call]) -> dict[int, int]:
    """``id(module) -> index of the call that takes its own parameters``; absent: no call takes it."""
    owner: dict[int, int] = {}
    sharded: set[int] = set()
    for index, call in enumerate(calls):
        for module, path in zip(call.modules, call.paths, strict=True):
            if id(module) in owner:
                earlier = calls[owner[id(module)]]
                raise TiegraphError(
                    f"call {index + 1} of the shard plan, {call.text}, shards {path or 'the model'}, which "
                    f"call {owner[id(module)] + 1}, {earlier.text}, already took; fully_shard goes from "
                    "the innermost modules out, so call it on inner modules before the modules above them"
                )
        roots = {id(m) for m in call.modules}
        stack = list(call.modules)
        while stack:
            module = stack.pop()
            if id(module) in owner or (id(module) in sharded and id(module) not in roots):
                continue
            owner[id(module)] = index
            stack.extend(module.children())
        sharded |= roots
    return owner


def parse_plan(model: nn.Module, text: str) -> Any:
    """A plan written on the command line: ``;`` between calls, ``,`` between the modules of one call.

    ``root`` is the model itself, ``each:CLASS[,CLASS]`` one call per module of those classes (in model
    order), and ``policy:CLASS[,CLASS]`` alone stands for a layer-class wrap policy (see :func:`resolve`).

    Examples
    --------
    >>> import torch
    >>> m = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU(), torch.nn.Linear(2, 2))
    >>> parse_plan(m, "each:Linear; root") == [m[0], m[2], m]
    True
    >>> parse_plan(m, "0,2;root")[0], parse_plan(m, "policy:Linear")
    (['0', '2'], {'transformer_layer_cls_to_wrap': ['Linear']})
    """
    text = text.strip()
    if text.startswith("policy:"):
        return {"transformer_layer_cls_to_wrap": [n.strip() for n in text[7:].split(",") if n.strip()]}
    calls: list[Any] = []
    for part in (p.strip() for p in text.split(";")):
        if part.startswith("each:"):
            names = {n.strip() for n in part[5:].split(",")}
            found = [m for m in model.modules() if type(m).__name__ in names]
            if not found:
                raise TiegraphError(f"the shard plan's {part!r} matches no module of the model")
            calls += found
        elif part == "root":
            calls.append(model)
        elif part:
            items = [p.strip() for p in part.split(",") if p.strip()]
            calls.append(items if len(items) > 1 else items[0])
    return calls
