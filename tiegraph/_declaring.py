"""Build step: read every ``_tied_weights_keys`` in the module tree and expand it against the slot names.

:func:`capture_declarations` runs inside :func:`tiegraph.build_graph` (the walk flags the declaring
modules; their raw declarations and config flags are captured) and, on the first read of
``index.declared``, the captured declarations are expanded against the slot names and each declared pair
is recorded as a :class:`tiegraph._declared.Declaration` (the records, and what a declaration is, are in
:mod:`tiegraph._declared`).

Where declarations come from (every distinct module object of the tree, nested submodels included):

- transformers 5 ``PreTrainedModel`` with a dict: expanded by transformers' own
  ``PreTrainedModel.get_expanded_tied_weights_keys`` (names, module names, regexes), run over the
  *canonical* names of the slots under the declaring module taken from the index, so wrapped models
  (PEFT, ``torch.compile``, DDP) match without a second walk. The declaring module's own
  ``config.tie_word_embeddings`` gates it exactly as transformers does (missing flag: off); a gated-off
  declaration is still recorded, with status ``gated-off``.
- transformers 4 style lists on any module (targets tied to the input embedding; re-parametrized: carriers).
- any other ``nn.Module`` with a ``_tied_weights_keys`` dict (and a ``PreTrainedModel`` that overrides
  ``get_expanded_tied_weights_keys``): keys are parameter names, module names or regexes relative to that
  module, resolved by tiegraph (a module or regex key pairs the slots under it with the source's slots of
  the same remaining name, ``heads.1.weight`` with ``heads.0.weight``; a re-parametrized name: its carrier).

Attributes are read from the module's own instance ``__dict__`` and class, never through ``getattr`` on
the instance: ``PeftModel`` and ``OptimizedModule`` forward unknown attributes to the model inside them.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from types import SimpleNamespace
from typing import Any

from torch import nn

from ._canonical import join
from ._copies import copy_prefixes
from ._declared import Declaration, DeclaredTie
from ._index import Index
from ._records import CopyWrapper, TieConfig
from ._reparametrized import carrier, embedding_name

__all__ = ["capture_declarations"]

_TIED = "_tied_weights_keys"


# ---------------------------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class _Declaring:
    """What the build captures of one declaring module; expanded against the slot names on first use."""

    module: int  # its first module path
    raw: dict[str, str] | list[str]
    is_pretrained: bool
    by_transformers: bool  # a dict expanded by transformers' own get_expanded_tied_weights_keys
    flag: bool | None  # its own config.tie_word_embeddings
    listed_in: dict[str, Any] | None  # all_tied_weights_keys where the model offers it
    root_relative: bool


def capture_declarations(
    index: Index,
    modules: list[nn.Module],
    declaring: list[int],
    root: int,
    instances: Callable[[type], list[int]],
) -> None:
    """At build: record the tie flags and PEFT copies in the index, and capture every declaration raw.

    ``declaring`` are the module paths whose instance or class holds ``_tied_weights_keys`` (found by the
    builder's walk); ``instances(cls)`` gives the module paths whose module is a ``cls``. The declarations
    are expanded against the index's slot names when ``index.declared`` is first read (no model needed).
    """
    model = modules[root] if root >= 0 else modules[0]
    root_config = model.__dict__.get("config")
    index.tie_config = flags = _config_flags(root_config)
    copies = _modules_to_save(index, modules, instances)
    seen: set[int] = set()
    firsts: list[int] = []
    for i in declaring:
        number = index.object_of(i)
        if number not in seen:
            seen.add(number)
            firsts.append(i)
    found = _declaring([modules[i] for i in firsts])
    if not found:  # (nothing to expand: index.declared reads as empty)
        return
    root_keys = model.__dict__.get("all_tied_weights_keys")
    root_path = index.path_of(root) if root >= 0 else ""
    base, expander = _transformers_base(), _expander()
    captured: list[_Declaring] = []
    for number, raw in found:
        i = firsts[number]
        module = modules[i]
        own = module.__dict__
        pretrained = base is not None and isinstance(module, base)
        expanded_by = type(module).get_expanded_tied_weights_keys if pretrained else None  # type: ignore[attr-defined]
        by_transformers = isinstance(raw, dict) and pretrained and expanded_by is expander
        config = own.get("config")
        keys: object = root_keys if _under(index.path_of(i), root_path) else None
        if not isinstance(keys, dict):
            keys = own.get("all_tied_weights_keys")
        # the root's flag was read already, from the same config object
        flag = flags.tie_word_embeddings if config is root_config else _flag(config)
        # copies: a graph records the declarations as they were at build (transformers edits them in place)
        listed = dict(keys) if isinstance(keys, dict) else None
        captured.append(_Declaring(i, raw, pretrained, by_transformers, flag, listed, root_keys is keys))
    index.declared_filler = partial(_expand, captured, copies)


def _expand(captured: list[_Declaring], copies: list[tuple[str, str]], index: Index) -> None:
    """Expand the captured declarations against the index's slot names, recording each declared pair."""
    for declaring in captured:
        reader = _Reader(index, declaring, copies)
        if isinstance(declaring.raw, dict):
            pairs = (
                reader.expand_transformers(declaring.raw)
                if declaring.by_transformers
                else reader.expand_plain(declaring.raw)
            )
        else:
            pairs = reader.expand_list(declaring.raw)
        reader.record(pairs, declaring.listed_in, declaring.root_relative)


def _under(path: str, prefix: str) -> bool:
    return not prefix or path == prefix or path.startswith(prefix + ".")


def _declaring(objects: list[nn.Module]) -> list[tuple[int, dict[str, str] | list[str]]]:
    """``(object number, raw declaration)`` of every module with its own ``_tied_weights_keys``.

    Read from the instance ``__dict__``, else the class (the first class of its MRO that holds the name);
    never through ``getattr``. The result is a new plain dict or list (:func:`_plain`).
    """
    out: list[tuple[int, dict[str, str] | list[str]]] = []
    for number, module in enumerate(objects):
        found = module.__dict__.get(_TIED, _TIED)
        if found is _TIED:
            found = None
            for kind in type(module).__mro__:
                held = kind.__dict__
                if _TIED in held:
                    found = held[_TIED]
                    break
        if found:
            raw = _plain(found)
            if raw:
                out.append((number, raw))
    return out


def _plain(found: object) -> dict[str, str] | list[str] | None:
    """A declaration as plain strings: a dict target -> source, or a list of targets."""
    if isinstance(found, dict):
        return {str(k): str(v) for k, v in found.items()}
    if isinstance(found, (set, frozenset)):
        return sorted(str(k) for k in found)
    if isinstance(found, (list, tuple)):
        return [str(k) for k in found]
    return None


def _transformers_base() -> type | None:
    module = sys.modules.get("transformers.modeling_utils")
    found = getattr(module, "PreTrainedModel", None)
    return found if isinstance(found, type) else None


def _expander() -> Any:
    base = _transformers_base()
    return getattr(base, "get_expanded_tied_weights_keys", None)


def _config_flags(config: object) -> TieConfig:
    """The root model's ``tie_word_embeddings`` and, for composite models, its text config's."""
    out = TieConfig()
    if config is None:
        return out
    out.config = type(config).__name__
    out.tie_word_embeddings = _flag(config)
    get_text = getattr(config, "get_text_config", None)
    if callable(get_text):
        try:
            text = get_text()
        except Exception:  # a config's own code may raise anything
            text = None
        if text is not None and text is not config:
            out.text_tie_word_embeddings = _flag(text)
    return out


def _flag(config: object) -> bool | None:
    value = getattr(config, "tie_word_embeddings", None)
    return None if value is None else bool(value)


def _modules_to_save(
    index: Index, modules: list[nn.Module], instances: Callable[[type], list[int]]
) -> list[tuple[str, str]]:
    """``(path prefix, copy kind)`` for every PEFT ``ModulesToSaveWrapper`` copy, recorded in the index."""
    peft_other = sys.modules.get("peft.utils.other")
    wrapper = getattr(peft_other, "ModulesToSaveWrapper", None)
    if not isinstance(wrapper, type):
        return []
    found: list[CopyWrapper] = []
    seen: set[int] = set()
    for i in instances(wrapper):
        if index.object_of(i) in seen:
            continue
        seen.add(index.object_of(i))
        module = modules[i]
        disabled = bool(getattr(module, "disable_adapters", False))
        try:
            active = [] if disabled else [str(a) for a in getattr(module, "active_adapters", ())]
        except Exception:  # peft internals may change
            active = []
        copies = getattr(module, "modules_to_save", None)
        names = [str(n) for n in copies] if isinstance(copies, nn.ModuleDict) else []
        found.append(CopyWrapper(index.path_of(i), index.belongs_of(i), active, names))
    index.modules_to_save = found
    return copy_prefixes(found)


class _Names:
    """Stands in for a ``PreTrainedModel`` in transformers' expansion: names from the index, flag forced on.

    ``get_expanded_tied_weights_keys`` reads only ``_tied_weights_keys``, ``config.tie_word_embeddings`` and
    the names of ``named_parameters``/``named_buffers``; giving it canonical names makes wrapped models
    expand as the unwrapped model would, and forcing the flag lets a gated-off declaration be expanded too.
    """

    def __init__(self, mapping: dict[str, str], names: Callable[[bool], list[str]]) -> None:
        self._tied_weights_keys = mapping
        self.config = SimpleNamespace(tie_word_embeddings=True)
        self._names = names  # names(True): parameters, names(False): buffers; asked only for regexes

    def named_parameters(self, *args: Any, **kwargs: Any) -> Iterator[tuple[str, None]]:
        return ((name, None) for name in self._names(True))

    def named_buffers(self, *args: Any, **kwargs: Any) -> Iterator[tuple[str, None]]:
        return ((name, None) for name in self._names(False))


# A declared pair before it is recorded: slots (-1: none), raw names, unresolved or carried names, note.
_Pair = tuple[int, int, tuple[str, str], tuple[str, str], str]


class _Reader:
    """Resolves one declaring module's declarations against the slots under it."""

    def __init__(self, index: Index, declaring: _Declaring, copies: list[tuple[str, str]]) -> None:
        self.index = index
        self.module = module = declaring.module
        self.path = index.m_path[module]
        self.canon = index.canon_of(module)
        self.copies = copies
        self.is_pretrained = declaring.is_pretrained
        self.style = "dict"
        self.expanded_by = "tiegraph"
        self.flag = declaring.flag
        # transformers: getattr(config, "tie_word_embeddings", False); plain modules: off only when said so
        self.gated = not self.flag if self.is_pretrained else self.flag is False
        self._names: dict[str, list[int]] | None = None
        self._by_full: dict[str, int] | None = None

    # ------------------------------------------------------------------ names under the module
    @property
    def names(self) -> dict[str, list[int]]:
        """Every slot under the module by its canonical name relative to the module (named on first use)."""
        if self._names is None:
            index = self.index
            prefix = self.path + "." if self.path else ""
            cprefix = self.canon + "." if self.canon else ""
            names: dict[str, list[int]] = {}
            for s in index.slots_under(self.module):
                canon = index.slot_canon_of(s)
                if not cprefix:
                    rel = canon
                elif canon.startswith(cprefix):
                    rel = canon[len(cprefix) :]
                else:
                    rel = index.s_name[s][len(prefix) :]
                names.setdefault(rel, []).append(s)
            self._names = names
        return self._names

    def named(self, rel: str) -> list[int]:
        """Slots whose canonical name relative to the module is ``rel``.

        Fast path: the slot at the plain full path, when its canonical name is ``rel`` (no wrapper renames
        it), so a plain declaration costs a few canonical names, not the whole model's.
        """
        if self._names is None:
            if self._by_full is None:
                index = self.index
                self._by_full = {index.s_name[s]: s for s in index.slots_under(self.module)}
            s = self._by_full.get(join(self.path, rel))
            if s is not None and self.index.slot_canon_of(s) == join(self.canon, rel):
                return [s]
        return self.names.get(rel, [])

    def _param_names(self, params: bool) -> list[str]:
        is_param = self.index.s_param
        return [rel for rel, slots in self.names.items() if is_param[slots[0]] == params]

    # ------------------------------------------------------------------ expansion
    def expand_transformers(self, mapping: dict[str, str]) -> list[_Pair]:
        """transformers' own expansion over the canonical names under the declaring module."""
        self.expanded_by = "transformers"
        expand = _expander()
        origin: dict[str, tuple[str, str]] = {}
        failed: dict[tuple[str, str], str] = {}
        parts: dict[str, str] = {}
        for target, source in mapping.items():
            try:
                part = expand(_Names({target: source}, self._param_names), all_submodels=False)
            except (ValueError, re.error) as error:
                failed[(target, source)] = str(error).split("\n", 1)[0]
                continue
            for key, value in part.items():
                origin[key] = (target, source)
                parts[key] = value
        good = {t: s for t, s in mapping.items() if (t, s) not in failed}
        try:
            expanded = expand(_Names(good, self._param_names), all_submodels=False)
        except (ValueError, re.error):
            expanded = parts
        pairs: list[_Pair] = []
        for (target, source), why in failed.items():
            pairs.append(
                (-1, -1, (target, source), (target, source), f"transformers cannot expand it: {why}")
            )
        for target, source in expanded.items():
            raw = origin.get(target, (target, source))
            pairs.extend(self._pairs_by_name(target, source, raw))
        return pairs

    def expand_plain(self, mapping: dict[str, str]) -> list[_Pair]:
        """Names, module names and regexes resolved by tiegraph; pairs matched by the remaining name."""
        pairs: list[_Pair] = []
        for target, source in mapping.items():
            targets, sources = self._match(target), self._match(source)
            if not targets or not sources:  # one end re-parametrized, or a name that names nothing
                pairs.extend(self._pairs_by_name(target, source, (target, source)))
                continue
            by_rest: dict[str, str] = {}
            for name, rest in sources:
                by_rest.setdefault(rest, name)
            for name, rest in targets:
                match = by_rest.get(rest)
                if match is None and len(sources) == 1:
                    match = sources[0][0]
                if match is None:
                    note = f"no slot of {source!r} ends like {name!r}"
                    pairs.append((-1, -1, (target, source), (name, join(source, rest.lstrip("."))), note))
                else:
                    pairs.extend(self._pairs_by_name(name, match, (target, source)))
        return pairs

    def expand_list(self, targets: list[str]) -> list[_Pair]:
        """transformers 4 lists: each target is tied to the input embedding's slot of the same attribute."""
        self.style = "list"
        idx = self.index
        embedding = idx.ie_slots
        pairs: list[_Pair] = []
        for target in targets:
            raw = (target, "<input embedding>")
            matches = self._match(target)
            if not matches:  # re-parametrized, or a name that names nothing
                pairs.extend(self._carried(target, raw) or [(-1, -1, raw, raw, self._nothing(target))])
                continue
            if not embedding:
                why = idx.ie_note or "the model has no input embedding"
                pairs.append((-1, -1, raw, raw, f"a list declares ties to the input embedding, but {why}"))
                continue
            for name, _ in matches:
                attr = name.rsplit(".", 1)[-1]
                source = next((s for s in embedding if idx.s_attr[s] == attr), -1)
                if source < 0 and len(embedding) == 1:
                    source = embedding[0]
                if source < 0:  # the embedding's re-parametrized, or it has no such attribute
                    note = f"the input embedding has no {attr!r} to tie {name!r} to"
                    pairs.extend(self._carried(name, raw) or [(-1, -1, raw, (name, raw[1]), note)])
                    continue
                pairs.extend((t, source, raw, ("", ""), "") for t in self.named(name))
        return pairs

    def _carried(self, target: str, raw: tuple[str, str]) -> list[_Pair]:
        """A list's target and its input-embedding end, through their carriers ([]: they do not resolve)."""
        source = embedding_name(self.index, self.canon, target.rpartition(".")[2])
        pairs = self._pairs_by_name(target, source, raw) if source is not None else []
        return pairs if all(t >= 0 for t, *_ in pairs) else []

    def _pairs_by_name(self, target: str, source: str, raw: tuple[str, str]) -> list[_Pair]:
        targets, sources = self.named(target), self.named(source)
        declared = (target, source) if bool(targets) != bool(sources) else ("", "")  # re-parametrized
        targets = targets or carrier(self.index, target, sources, self.names, self.named)
        sources = sources or carrier(self.index, source, targets, self.names, self.named)
        if not targets or not sources:
            missing = target if not targets else source
            return [(-1, -1, raw, (target, source), self._nothing(missing))]
        return [(t, s, raw, declared, "") for t in targets for s in sources]

    def _match(self, key: str) -> list[tuple[str, str]]:
        """``(name, rest)`` for the names ``key`` names: exactly, as a module prefix, or as a regex."""
        if self.named(key):
            return [(key, "")]
        dotted = key + "."
        found = [(name, name[len(key) :]) for name in self.names if name.startswith(dotted)]
        if found:
            return found
        try:
            pattern = re.compile(key)
        except re.error:
            return []
        out = []
        for name in self.names:
            match = pattern.match(name)
            if match and (match.end() == len(name) or name[match.end()] == "."):
                out.append((name, name[match.end() :]))
        return out

    def _nothing(self, key: str) -> str:
        where = repr(self.canon) if self.canon else "the model"
        return f"{key!r} names no parameter, buffer or module under {where}"

    # ------------------------------------------------------------------ recording
    def record(self, pairs: list[_Pair], listed_in: dict[str, Any] | None, root_relative: bool) -> None:
        idx = self.index
        t_root, s_tensor = idx.t_root, idx.s_tensor
        by: dict[str, Any] = {
            "declared_by": idx.belongs_of(self.module),
            "declared_by_path": self.path,
            "declared_by_cls": idx.m_cls[self.module],
            "flag": self.flag,
        }
        for target, source, raw, unresolved, note in pairs:
            if target < 0 or source < 0:
                tie = DeclaredTie(
                    target=join(self.canon, unresolved[0]),
                    source=join(self.canon, unresolved[1]),
                    target_path=join(self.path, unresolved[0]),
                    source_path=join(self.path, unresolved[1]),
                    declared_as=raw,
                    status="unresolved",
                    note=note,
                    **by,
                )
                idx.declared.append(Declaration(tie, style=self.style, expanded_by=self.expanded_by))
                continue
            shares = t_root[s_tensor[target]] == t_root[s_tensor[source]]
            status = "gated-off" if self.gated else "tied" if shares else "not-tied"
            listed: bool | None = None
            if listed_in is not None:  # a re-parametrized target is listed under its declared name
                key = join(self.canon, unresolved[0]) if unresolved[0] else idx.slot_canon_of(target)
                if not root_relative:
                    key = (
                        key[len(self.canon) + 1 :] if self.canon and key.startswith(self.canon + ".") else key
                    )
                listed = key in listed_in
            tie = DeclaredTie(
                target=idx.slot_canon_of(target),
                source=idx.slot_canon_of(source),
                target_path=idx.s_name[target],
                source_path=idx.s_name[source],
                declared_as=raw,
                status=status,
                shares=shares,
                listed=listed,
                target_copy=self._copy(idx.s_name[target]),
                source_copy=self._copy(idx.s_name[source]),
                **by,
            )
            idx.declared.append(
                Declaration(tie, target, source, style=self.style, expanded_by=self.expanded_by)
            )

    def _copy(self, name: str) -> str:
        for prefix, kind in self.copies:
            if name.startswith(prefix):
                return kind
        return ""
