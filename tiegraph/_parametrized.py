"""A parametrization registered on one end of a tie: the ends compute different weights.

``torch.nn.utils.parametrize.register_parametrization(model.lm_head, "weight", p)`` on a tied head keeps the
shared Parameter as ``lm_head.parametrizations.weight.original`` (the tie in memory is intact) but the head's
forward now computes ``p(W)`` while the embedding uses ``W`` itself. And registering runs ``p.right_inverse``
on the shared tensor and sets the original to its result (``set_``), so the other end holds that from then on:
with ``orthogonal`` (every ``orthogonal_map``), measured with the pinned torch on a tiny tied Llama, the
embedding changed by more than its own largest value, and neither ``remove_parametrizations`` mode brings
the trained values back. ``spectral_norm``'s ``right_inverse`` returns ``W`` unchanged (nothing rewritten);
``weight_norm`` keeps its norm and direction as new Parameters (``storage-only-tie`` reports those).

- ``parametrized-tied-weight`` (an error): one end of a tie group is a parametrization's single original,
  another end is a plain slot.
- ``pruned-tied-weight`` (a warning): the same with ``torch.nn.utils.prune``, whose hook keeps the tensor at
  ``<name>_orig`` beside a ``<name>_mask`` buffer: the pruned end computes ``W * mask``, the other ``W``, and
  ``prune.remove`` writes the mask into the shared tensor (measured: the embedding is pruned too).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._finding import Finding, finding, kinds

if TYPE_CHECKING:
    from ._view import GraphView

__all__ = ["KINDS", "findings"]

#: Parametrizations whose right_inverse returns its input unchanged: registering them rewrites nothing
#: (class names without their leading underscore: torch's ``_SpectralNorm``).
_UNCHANGED = frozenset({"SpectralNorm"})

KINDS: dict[str, str] = kinds(
    {
        "parametrized-tied-weight": (
            "error",
            "{module} computes its {attr} through a parametrization ({classes}) but the tensor under it is "
            "tied to {others}: {module}'s forward uses {classes}(W) while {others} {use} W itself, so the "
            "tied ends compute different weights{rewrite}; to parametrize {module} alone, untie it first "
            "({recover}model.{module}.{attr} = torch.nn.Parameter(model.{module}.{attr}.detach().clone()), "
            "then register_parametrization).",
        ),
        "pruned-tied-weight": (
            "warning",
            "{module} is pruned (torch.nn.utils.prune: {attr}_orig and {attr}_mask) but {attr}_orig is the "
            "tensor tied to {others}: {module}'s forward uses {attr}_orig * {attr}_mask while {others} {use} "
            "it unmasked, so the tied ends compute different weights, and "
            "prune.remove(model.{module}, {attr!r}) would write the mask into the shared tensor, pruning "
            "{others} as well; to prune {module} alone, untie it first (model.{module}.{attr}_orig = "
            "torch.nn.Parameter(model.{module}.{attr}_orig.detach().clone()): the bytes are still the "
            "trained ones); to prune both ends, prune.remove is what does it.",
        ),
    }
)

#: What registering did to the shared tensor, and how to get the trained W back: right_inverse rewrote it,
#: left it as it was, or the graph cannot tell (read back from JSON, no classes).
_REWRITTEN = (
    "; registering it also set the shared tensor to {cls}.right_inverse(W) (register_parametrization "
    "set_()s the original to it), so {others} now {hold} right_inverse's output, not the trained values, "
    "and neither remove_parametrizations mode brings them back",
    "restore the trained weights from the checkpoint or a copy taken before registering, then ",
)
_KEPT = (
    "",
    "torch.nn.utils.parametrize.remove_parametrizations(model.{module}, {attr!r}, leave_parametrized=False) "
    "gives back W as trained, then ",
)
_UNKNOWN = (
    "; registering it also set the shared tensor to right_inverse(W) where the parametrization has one "
    "(register_parametrization set_()s the original to it), so {others} may {hold_base} right_inverse's "
    "output, not the trained values",
    "restore W: remove_parametrizations(model.{module}, {attr!r}, leave_parametrized=False) where "
    "right_inverse left it unchanged, else the checkpoint, then ",
)


def findings(view: GraphView) -> list[Finding]:
    """Every parametrization whose original is tied to a plain slot; every pruned slot tied to another."""
    return _parametrized(view) + _pruned(view)


def _pruned(view: GraphView) -> list[Finding]:
    """``pruned-tied-weight``: a tied ``<name>_orig`` beside a ``<name>_mask`` buffer on its module."""
    out = []
    for group in view.groups():
        for s in group:
            base, _, tail = view.slot_attr(s).rpartition("_")
            if tail != "orig" or not base or not _has_mask(view, s, base):
                continue
            owner = view.slot_owner(s)
            others = sorted({view.slot_canonical(o) for o in group if view.slot_owner(o) != owner})
            if not others:
                continue
            module = view.module_belongs(owner)
            found = finding(
                KINDS,
                "pruned-tied-weight",
                [view.slot_canonical(s), *others],
                module=module,
                attr=base,
                others=" and ".join(others),
                use="uses" if len(others) == 1 else "use",
            )
            out.append(found)
    return out


def _has_mask(view: GraphView, s: int, base: str) -> bool:
    """Whether slot ``s``'s module holds ``<base>_mask`` (pruning's; the old spectral_norm has none)."""
    owner, mask = view.slot_owner(s), "_".join((base, "mask"))
    return any(view.slot_owner(m) == owner and view.slot_attr(m) == mask for m in range(view.num_slots))


def _parametrized(view: GraphView) -> list[Finding]:
    lists = {i for i in range(view.num_modules) if view.module_cls(i) == "ParametrizationList"}
    if not lists:
        return []
    out = []
    for group in view.groups():
        originals = [s for s in group if view.slot_owner(s) in lists and view.slot_attr(s) == "original"]
        plain = [s for s in group if view.module_cls(view.slot_owner(s)) != "ParametrizationList"]
        if not originals or not plain:
            continue
        others = sorted({view.slot_canonical(s) for s in plain})
        for s in originals:
            out.append(_finding(view, s, others))
    return out


def _finding(view: GraphView, s: int, others: list[str]) -> Finding:
    plist = view.slot_owner(s)
    steps = [i for i in range(view.num_modules) if view.module_parent(i) == plist]
    classes = [view.module_cls(i) for i in steps]
    inverses = [view.module_defines(i, "right_inverse") for i in steps]
    name = view.slot_canonical(s)
    module, _, attr = name.rpartition(".")
    one = len(others) == 1
    fields = {"others": " and ".join(others), "module": module, "attr": attr}
    fields.update(hold="holds" if one else "hold", hold_base="hold", use="uses" if one else "use")
    pairs = zip(inverses, classes, strict=True)
    rewriting = [c for has, c in pairs if has and c.lstrip("_") not in _UNCHANGED]
    said = _UNKNOWN if None in inverses else _REWRITTEN if rewriting else _KEPT
    return finding(
        KINDS,
        "parametrized-tied-weight",
        [name, *others],
        classes=" then ".join(classes) or "a parametrization",
        rewrite=said[0].format(cls=rewriting[0] if rewriting else "", **fields),
        recover=said[1].format(**fields),
        **fields,
    )
