"""Canonical names: which path segments wrapper rules remove, and the one model root.

Rules match a module by its *type* (never by ``hasattr``: ``PeftModel`` and ``OptimizedModule`` forward
unknown attributes to the model inside them), so a segment called ``module`` or ``model`` is removed for
being a wrapper's child, never for its name. Classes are looked up lazily in ``sys.modules``: a package that
was never imported cannot have produced a module of its type, so tiegraph never imports peft, accelerate or
torch.distributed just to check. :data:`RULES` holds the rules in force; :mod:`tiegraph.naming` is the
public way to add one.

Canonical names are then relative to the one model root, if there is exactly one (:class:`Namer`): a
user's container around one model is a prefix dropped from canonical names; with several model roots side
by side (a DPO policy and reference) nothing is dropped and the input embedding is not guessed.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from itertools import compress
from typing import TYPE_CHECKING, Literal

from torch import nn

if TYPE_CHECKING:
    from ._index import Index

__all__ = ["RULES", "Namer", "Resolver", "WrapperRule", "current_resolver", "is_model_root_type", "join"]

Action = Literal["drop", "drop-next", "adapter"]


@dataclass(frozen=True)
class WrapperRule:
    """How a wrapper class names the module it wraps.

    Parameters
    ----------
    cls
        The wrapper class, or ``"package.module:QualName"`` resolved lazily (only if already imported).
    drop
        Child names removed from canonical paths (the child *is* the wrapped module).
    drop_next
        Child names removed together with the one segment below them (``modules_to_save.<adapter>``).
    adapters
        If true, every other child of the wrapper belongs to it: its canonical path keeps its segments,
        but the model module it belongs to is the wrapper's (``lm_head.lora_A.default`` -> ``lm_head``).
    """

    cls: type[nn.Module] | str
    drop: tuple[str, ...] = ()
    drop_next: tuple[str, ...] = ()
    adapters: bool = False

    def resolve(self) -> type[nn.Module] | None:
        """The wrapper class, or None when its package has not been imported."""
        if not isinstance(self.cls, str):
            return self.cls
        module_name, parts = self._where
        obj: object = sys.modules.get(module_name)
        for part in parts:
            if obj is None:  # (its package not imported: the usual case, and no AttributeError to make)
                return None
            obj = getattr(obj, part, None)
        return obj if isinstance(obj, type) else None

    @functools.cached_property
    def _where(self) -> tuple[str, tuple[str, ...]]:
        module_name, _, qualname = str(self.cls).partition(":")
        return module_name, tuple(qualname.split("."))


#: The wrapper rules in force: the built-in ones, then those :func:`tiegraph.register_wrapper` added.
RULES: list[WrapperRule] = [
    WrapperRule("torch._dynamo.eval_frame:OptimizedModule", drop=("_orig_mod",)),
    WrapperRule("torch.nn.parallel.distributed:DistributedDataParallel", drop=("module",)),
    WrapperRule("torch.nn.parallel.data_parallel:DataParallel", drop=("module",)),
    WrapperRule("deepspeed.runtime.engine:DeepSpeedEngine", drop=("module",)),  # and PipelineEngine
    WrapperRule(
        "torch.distributed.fsdp.fully_sharded_data_parallel:FullyShardedDataParallel",
        drop=("_fsdp_wrapped_module",),
    ),
    WrapperRule(
        "torch.distributed.algorithms._checkpoint.checkpoint_wrapper:ActivationWrapper",
        drop=("_checkpoint_wrapped_module",),
    ),
    WrapperRule("peft.peft_model:PeftModel", drop=("base_model",)),
    WrapperRule("peft.mixed_model:PeftMixedModel", drop=("base_model",)),
    WrapperRule("peft.tuners.tuners_utils:BaseTuner", drop=("model",)),
    WrapperRule("peft.tuners.tuners_utils:BaseTunerLayer", drop=("base_layer",), adapters=True),
    WrapperRule(
        "peft.utils.other:ModulesToSaveWrapper", drop=("original_module",), drop_next=("modules_to_save",)
    ),
    WrapperRule("peft.utils.other:TrainableTokensWrapper", drop=("token_adapter", "base_layer")),
]


@dataclass(frozen=True)
class TypeRule:
    """The merged rules for one concrete module type (cached per build)."""

    is_wrapper: bool
    actions: dict[str, Action]
    adapters: bool


_PLAIN = TypeRule(False, {}, False)


class Resolver:
    """Answers "what does this module's type do to its children's names", cached per type."""

    def __init__(self) -> None:
        self._classes: list[tuple[type, WrapperRule]] = []
        for rule in RULES:
            klass = rule.resolve()
            if klass is not None:
                self._classes.append((klass, rule))
        self._cache: dict[type, TypeRule] = {}
        self._roots: dict[type, bool] = {}

    def is_root(self, kind: type) -> bool:
        """A non-wrapper model type (see :func:`is_model_root_type`), cached per type."""
        found = self._roots.get(kind)
        if found is None:
            found = self._roots[kind] = not self.rule_for(kind).is_wrapper and is_model_root_type(kind)
        return found

    def rule_for(self, kind: type) -> TypeRule:
        """Merged rule for a module type (``_PLAIN`` when no wrapper rule applies)."""
        found = self._cache.get(kind)
        if found is not None:
            return found
        actions: dict[str, Action] = {}
        adapters = False
        matched = False
        for klass, rule in self._classes:
            if issubclass(kind, klass):
                matched = True
                for name in rule.drop:
                    actions[name] = "drop"
                for name in rule.drop_next:
                    actions[name] = "drop-next"
                adapters = adapters or rule.adapters
        found = TypeRule(True, actions, adapters) if matched else _PLAIN
        self._cache[kind] = found
        return found


_CURRENT: list[tuple[object, Resolver]] = []


def current_resolver() -> Resolver:
    """A :class:`Resolver` for the rules in force and the wrapper classes imported now.

    It is reused across builds while neither changes (its per-type caches are what make naming cheap on
    the second build).
    """
    key = tuple((rule, rule.resolve()) for rule in RULES)
    if _CURRENT and _CURRENT[0][0] == key:
        return _CURRENT[0][1]
    resolver = Resolver()
    _CURRENT[:] = [(key, resolver)]
    return resolver


def join(prefix: str, name: str) -> str:
    """Join two dotted path parts, either of which may be empty."""
    if not prefix:
        return name
    if not name:
        return prefix
    return f"{prefix}.{name}"


def is_model_root_type(kind: type) -> bool:
    """True for types that define a model's own namespace.

    Those are transformers models and anything with ``get_input_embeddings`` on its class.
    """
    modeling_utils = sys.modules.get("transformers.modeling_utils")
    if modeling_utils is not None:
        pretrained = getattr(modeling_utils, "PreTrainedModel", None)
        if isinstance(pretrained, type) and issubclass(kind, pretrained):
            return True
    return callable(getattr(kind, "get_input_embeddings", None))


class Namer:
    """Canonical names by wrapper type, computed on demand for the places a query asks about.

    The model root rule (DESIGN.md, Naming): the *model roots* are the outermost non-wrapper modules whose
    class is a transformers ``PreTrainedModel`` or has ``get_input_embeddings`` (distinct objects, none
    under another). With exactly one, the prefix above it is dropped from canonical names
    (a user's container around one model); with several side by side (a DPO policy and reference), nothing
    is dropped and the input embedding is not guessed (:attr:`roots` lists them for the message).
    """

    def __init__(self, index: Index) -> None:
        self.index: Index | None = index  # until attach(): the index then holds this namer, not both ways
        self.types: list[type] = index.m_type or []  # per module path
        self.resolver = current_resolver()
        n = len(index.m_parent)
        self.raw: list[tuple[str, str, bool, bool] | None] = [None] * n  # canon, belongs, chained, drop-next
        self.prefix = ""
        plist = sys.modules.get("torch.nn.utils.parametrize")
        self.parametrization_list = getattr(plist, "ParametrizationList", None)
        self.roots = self.model_roots(index)
        self.root = self.roots[0] if len(self.roots) == 1 else -1

    def attach(self) -> None:
        """Make the index name its places through this namer; record the model root(s).

        The namer lets its index go (the index passes itself to every call), so an index and its namer form
        no reference cycle and a graph is freed as soon as it is dropped.
        """
        index = self.index
        assert index is not None, "a namer is attached once"
        self.index = None
        index.name_with(self.module_names, self.slot_name)
        index.model_roots = [index.path_of(i) for i in self.roots]
        index.model_root = index.model_roots[0] if self.root >= 0 else None
        if self.root >= 0:
            self.prefix = self.raw_names(index, self.root)[0]

    def model_roots(self, index: Index) -> list[int]:
        """First path of every outermost model root (non-wrapper, model type, no model root above it)."""
        types = self.types
        is_root = self.resolver.is_root
        if types and is_root(types[0]):  # the model itself (every other path lies under it): no scan
            return [0]
        verdict = {kind: is_root(kind) for kind in set(types)}
        if not any(verdict.values()):
            return []
        candidates = list(compress(range(len(types)), map(verdict.__getitem__, types)))
        flagged = set(candidates)
        parent, object_of = index.m_parent, index.object_of
        roots: list[int] = []
        seen: set[int] = set()
        for i in candidates:
            p = parent[i]
            while p >= 0 and p not in flagged:
                p = parent[p]
            if p < 0 and object_of(i) not in seen:
                seen.add(object_of(i))
                roots.append(i)
        return roots

    def raw_names(self, index: Index, i: int) -> tuple[str, str, bool, bool]:
        """Names with wrapper segments removed, before dropping the prefix above the model root."""
        raw = self.raw
        found = raw[i]
        if found is not None:
            return found
        chain = []
        j = i
        while j >= 0 and raw[j] is None:
            chain.append(j)
            j = index.m_parent[j]
        types = self.types
        for j in reversed(chain):
            parent = index.m_parent[j]
            if parent < 0:
                raw[j] = ("", "", False, False)
                continue
            pcanon, pbelongs, chained, pdrop = raw[parent]  # type: ignore[misc]
            name = index.m_name[j]
            rule = self.resolver.rule_for(types[parent])
            action = rule.actions.get(name)
            if pdrop or action == "drop":
                raw[j] = (pcanon, pbelongs, chained, False)
            elif action == "drop-next":
                raw[j] = (pcanon, pbelongs, chained, True)
            elif (
                chained
                or rule.adapters
                or (name == "parametrizations" and issubclass(types[j], nn.ModuleDict))
            ):
                raw[j] = (join(pcanon, name), pbelongs, True, False)
            else:
                canon = join(pcanon, name)
                raw[j] = (canon, canon, False, False)
        return raw[i]  # type: ignore[return-value]

    def strip(self, name: str) -> str:
        """``name`` relative to the one model root (unchanged when there is none, or several)."""
        prefix = self.prefix
        if not prefix:
            return name
        if name == prefix:
            return ""
        if name.startswith(prefix) and name[len(prefix)] == ".":
            return name[len(prefix) + 1 :]
        return name

    def module_names(self, index: Index, i: int) -> tuple[str, str]:
        """Canonical path of module path ``i`` and of the model module it belongs to."""
        canon, belongs, _, _ = self.raw_names(index, i)
        return self.strip(canon), self.strip(belongs)

    def slot_name(self, index: Index, s: int) -> str:
        """Canonical name of slot ``s``."""
        owner = index.owner_of(s)
        attr = index.s_attr[s]
        plist = self.parametrization_list
        parent = index.m_parent
        if (
            attr == "original"
            and plist is not None
            and issubclass(self.types[owner], plist)
            and parent[owner] >= 0
            and parent[parent[owner]] >= 0
        ):
            # torch.nn.utils.parametrize keeps the real tensor at <module>.parametrizations.<name>.original
            return join(index.canon_of(parent[parent[owner]]), index.m_name[owner])
        return join(index.canon_of(owner), attr)
