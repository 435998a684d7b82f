"""FSDP2 pre-flight: what a plan of ``fully_shard`` calls does to each tie group, before any call runs.

The rules (each checked by running the plan for real with ``fully_shard`` on 2 gloo CPU ranks, values
compared after an SGD step with a tied and an untied single-process model; see :data:`VERIFIED`):

- an **identity tie** (one Parameter under several names) survives when one call takes all its owners;
  split across calls it raises ``ValueError: Parameter ... is shared with a parameter already managed by
  another FSDP group`` at the first forward when one call covers every group holding it (a root call),
  and otherwise trains silently untied (an end no call takes stays a plain, unsynced Parameter);
- a **storage tie** (several Parameter objects over the same bytes) is always lost: each Parameter is
  copied into its own sharded tensor, even inside one call (the kinds of :mod:`tiegraph._identity`,
  ``storage-only-tie``, or ``storage-tie-by-view`` for a contiguous view such as a slice);
- a **view tie** whose view is not contiguous (a transposed weight) is refused at the ``fully_shard``
  call that takes it (``NotImplementedError: FSDP does not support non-contiguous parameters``).

Nothing here reads tensor data: a meta model gives the same answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from .. import _identity
from .._build import build_graph
from .._finding import Finding, finding, kinds
from ._plan import Call, assign, resolve

__all__ = ["KINDS", "VERIFIED", "Outcome", "check_shard_plan", "fixed_plan", "outcomes"]

#: Where and on what the rules were checked against torch itself.
VERIFIED = "torch 2.13.0, fully_shard on 2 gloo CPU ranks"

#: The FSDP2 pre-flight's finding kinds, with the sentence each one says.
KINDS: dict[str, str] = kinds(
    {
        "fsdp-split-tie-raises": (
            "error",
            "{paths} are one Parameter, but the plan splits it ({where}) and {covering} covers both, so "
            "torch raises 'ValueError: Parameter ... is shared with a parameter already managed by another "
            "FSDP group' at the first forward; {fix} (rule verified with {verified}).",
        ),
        "fsdp-split-tie-unties": (
            "error",
            "{paths} are one Parameter, but the plan splits it ({where}) and no call covers both, so each "
            "end gets its own copy and training goes on silently untied; {fix} (rule verified with "
            "{verified}).",
        ),
        "fsdp-view-tie-refused": (
            "error",
            "{view} is a non-contiguous view of {paths_other} (a view tie): {call} refuses it with "
            "'NotImplementedError: FSDP does not support non-contiguous parameters'; make them one Parameter "
            "and transpose in the forward, or leave the view's module out of fully_shard (ignored_params=) "
            "(rule verified with {verified}).",
        ),
    }
)


@dataclass(frozen=True)
class Outcome:
    """What the plan does to one tie group.

    Attributes
    ----------
    group
        The group's slot names (as the model names them), sorted.
    verdict
        ``kept``, ``raises`` (at the first forward), ``unties`` (trains silently untied) or ``refused``
        (the ``fully_shard`` call raises).
    finding
        The finding that explains it, or None when the tie is kept.
    """

    group: tuple[str, ...]
    verdict: str
    finding: Finding | None


@dataclass(frozen=True)
class _End:
    """One slot of a tie group: its owner module, its Parameter and the call that takes it (or None)."""

    slot: str
    module: nn.Module
    param: nn.Parameter
    call: int | None


def _ends(model: nn.Module, group: list[str], owner: dict[int, int]) -> list[_End]:
    ends = []
    for slot in group:
        path, _, attr = slot.rpartition(".")
        module = model.get_submodule(path)
        param = module._parameters.get(attr)
        if param is not None:
            ends.append(_End(slot, module, param, owner.get(id(module))))
    return ends


def _covering(calls: list[Call], taken: set[int]) -> Call | None:
    """The first call whose modules' subtrees hold the modules of every call in ``taken``."""
    for call in calls:
        under = {id(m) for root in call.modules for m in root.modules()}
        if all(id(m) in under for index in taken for m in calls[index].modules):
            return call
    return None


def _where(ends: list[_End], calls: list[Call]) -> str:
    parts = []
    for end in ends:
        held = calls[end.call].text if end.call is not None else "no call, a plain Parameter"
        parts.append(f"{end.slot}: {held}")
    return "; ".join(dict.fromkeys(parts))


def _owner_paths(model: nn.Module, ends: list[_End]) -> list[str]:
    first: dict[int, str] = {}
    for path, module in model.named_modules(remove_duplicate=False):
        first.setdefault(id(module), path)
    owners = {id(e.module) for e in ends}
    return [path for key, path in first.items() if key in owners]  # in model order: embedding first


def _without(call: Call, ids: set[int]) -> Call:
    kept = [(m, p) for m, p in zip(call.modules, call.paths, strict=True) if id(m) not in ids]
    return Call(tuple(m for m, _ in kept), tuple(p for _, p in kept))


def _has_root(calls: list[Call]) -> bool:
    return any(not path for call in calls for path in call.paths)


def _related(path: str, owners: list[str]) -> bool:
    """Whether module ``path`` is one of ``owners``, above one or below one."""
    return any(not path or path == o or o.startswith(path + ".") or path.startswith(o + ".") for o in owners)


def _fixed_calls(model: nn.Module, calls: list[Call], owners: list[str]) -> list[Call]:
    """``calls`` with the owners of one split tie moved into one call (and a root call if none)."""
    modules = [model.get_submodule(p) for p in owners]
    ids = {id(m) for m in modules}
    rest = [_without(c, ids) for c in calls]
    if "" in owners:  # a Parameter on the root module itself: every end goes to the root call
        out = [c for c in rest if c.modules]
        return out if _has_root(out) else [*out, Call((model,), ("",))]
    first = next((i for i, c in enumerate(calls) if any(_related(p, owners) for p in c.paths)), len(calls))
    out = [c for c in rest[:first] if c.modules]
    out.append(Call(tuple(modules), tuple(owners)))
    out += [c for c in rest[first:] if c.modules]
    return out if _has_root(out) else [*out, Call((model,), ("",))]


def _fix_text(model: nn.Module, calls: list[Call], owners: list[str]) -> str:
    fixed = _fixed_calls(model, calls, owners)
    group = next((c for c in fixed if c.paths == tuple(owners)), None)
    dropped = [c.text for c in calls if all(p in owners for p in c.paths)]
    parts = [f"shard their modules in one call, {group.text}" if group else "leave them to the root call"]
    if dropped:
        parts.append(f"in place of {' and '.join(dropped)}")
    if not _has_root(calls):
        parts.append("and add the root call fully_shard(model) after all others")
    elif group:
        parts.append(f"before {fixed[fixed.index(group) + 1].text}")
    return ", ".join(parts)


def _identity_outcome(
    model: nn.Module, calls: list[Call], ends: list[_End]
) -> tuple[str, str, dict[str, Any]]:
    taken = {e.call for e in ends}
    if len(taken) == 1:
        return "kept", "", {}
    fields = {"where": _where(ends, calls), "fix": _fix_text(model, calls, _owner_paths(model, ends))}
    held = {t for t in taken if t is not None}
    covering = _covering(calls, held) if None not in taken and len(held) > 1 else None
    if covering is not None:
        return "raises", "fsdp-split-tie-raises", {**fields, "covering": covering.text}
    return "unties", "fsdp-split-tie-unties", fields


def _layout(param: nn.Parameter) -> tuple[object, ...]:
    return (tuple(param.shape), param.stride(), param.storage_offset(), param.dtype)


def _storage_finding(ends: list[_End], group: tuple[str, ...]) -> Finding:
    """The identity room's kind for several Parameter objects over shared bytes: fully_shard unties them."""
    if len({_layout(e.param) for e in ends}) == 1:
        source = next((e for e in ends if isinstance(e.module, nn.Embedding)), ends[0])
        targets = [e for e in ends if e is not source]
        how = "; ".join(f"model.{e.slot} = model.{source.slot}" for e in targets)
        return finding(_identity.KINDS, "storage-only-tie", group, count=len(ends), how=how)
    detail = ", ".join(f"{e.slot} {'x'.join(map(str, e.param.shape))}" for e in ends)
    return finding(_identity.KINDS, "storage-tie-by-view", group, detail=detail, peft="")


def _outcome(model: nn.Module, calls: list[Call], ends: list[_End]) -> Outcome:
    group = tuple(sorted(e.slot for e in ends))
    params = {id(e.param): e for e in ends}
    verified = {"verified": VERIFIED}
    for end in ends:
        if end.call is not None and not end.param.is_contiguous():
            others = [e.slot for e in ends if e.slot != end.slot]
            found = finding(
                KINDS,
                "fsdp-view-tie-refused",
                group,
                view=end.slot,
                paths_other=" and ".join(others),
                call=calls[end.call].text,
                **verified,
            )
            return Outcome(group, "refused", found)
    if all(e.call is None for e in ends):
        return Outcome(group, "kept", None)
    if len(params) > 1:
        return Outcome(group, "unties", _storage_finding(list(params.values()), group))
    verdict, kind, fields = _identity_outcome(model, calls, ends)
    return Outcome(group, verdict, finding(KINDS, kind, group, **fields, **verified) if kind else None)


def outcomes(model: nn.Module, plan: Any) -> list[Outcome]:
    """What ``plan`` does to every tie group of ``model``'s parameters (see :func:`check_shard_plan`)."""
    if not isinstance(model, nn.Module):
        kind = type(model)
        raise TypeError(
            f"check_shard_plan expects a torch.nn.Module, got {kind.__module__}.{kind.__qualname__}"
        )
    calls = resolve(model, plan)
    owner = assign(calls)
    found = []
    for group in build_graph(model).tie_groups(full_paths=True):
        ends = _ends(model, group, owner)
        if len(ends) >= 2:
            found.append(_outcome(model, calls, ends))
    return found


def check_shard_plan(model: nn.Module, plan: Any) -> list[Finding]:
    """Findings for the tie groups a plan of FSDP2 ``fully_shard`` calls would split or lose.

    Parameters
    ----------
    model
        The model before sharding, on any device (a meta model works: no tensor data is read).
    plan
        The ``fully_shard`` calls in the order they will run, innermost first: each a module, a module
        path (``"model.layers.0"``) or a list of them (one call over several modules); the root call
        (``model`` or ``""``) may be there or not. Or a mapping naming layer classes, as the Trainer's
        ``fsdp_config`` (``transformer_layer_cls_to_wrap``) and accelerate's FSDP2 config
        (``fsdp_transformer_layer_cls_to_wrap``) give it: it stands for the calls accelerate 1.15 makes.

    Returns
    -------
    list of Finding
        One per tie group the plan breaks: ``fsdp-split-tie-raises`` (torch raises at the first forward),
        ``fsdp-split-tie-unties`` (trains silently untied), ``storage-only-tie`` (several Parameter
        objects over one storage: always lost), ``fsdp-view-tie-refused`` (``fully_shard`` refuses a
        non-contiguous view). Each message names the calls and the grouping that fixes it.

    Raises
    ------
    TypeError
        If ``model`` is not an ``nn.Module``.
    PathNotFoundError
        If the plan names a module the model does not have.
    TiegraphError
        If the plan is malformed (not calls, an empty call, an outer module sharded before an inner one).

    Examples
    --------
    >>> import torch, tiegraph
    >>> m = torch.nn.Module()
    >>> m.embed, m.body, m.head = torch.nn.Embedding(8, 4), torch.nn.Linear(4, 4), torch.nn.Linear(4, 8)
    >>> m.head.weight = m.embed.weight
    >>> tiegraph.check_shard_plan(m, ["body", m])
    []
    >>> [f.kind for f in tiegraph.check_shard_plan(m, ["embed", m])]
    ['fsdp-split-tie-raises']
    >>> print(tiegraph.check_shard_plan(m, ["embed", "head"])[0].message)  # doctest: +ELLIPSIS
    embed.weight and head.weight are one Parameter, but the plan splits it
    (embed.weight: fully_shard(model.embed); head.weight: fully_shard(model.head)) and no call covers
    both, so each end gets its own copy and training goes on silently untied; shard their modules in one
    call, fully_shard([model.embed, model.head]), in place of fully_shard(model.embed) and
    fully_shard(model.head), and add the root call fully_shard(model) after all others (rule verified
    with torch 2.13.0, fully_shard on 2 gloo CPU ranks).
    """
    return [o.finding for o in outcomes(model, plan) if o.finding is not None]


def fixed_plan(model: nn.Module, plan: Any) -> list[nn.Module | list[nn.Module]]:
    """``plan`` with every split identity tie's modules moved into one call, ready to apply.

    Examples
    --------
    >>> import torch
    >>> m = torch.nn.Module()
    >>> m.embed, m.head = torch.nn.Embedding(8, 4), torch.nn.Linear(4, 8)
    >>> m.head.weight = m.embed.weight
    >>> fixed = fixed_plan(m, ["embed", m])
    >>> fixed[0] == [m.embed, m.head], fixed[1] is m
    (True, True)
    """
    calls = resolve(model, plan)
    for out in outcomes(model, plan):
        if out.verdict in ("raises", "unties") and out.finding and out.finding.kind.startswith("fsdp-split"):
            owner = assign(calls)
            ends = _ends(model, list(out.group), owner)
            calls = _fixed_calls(model, calls, _owner_paths(model, ends))
    return [list(c.modules) if len(c.modules) > 1 else c.modules[0] for c in calls]
