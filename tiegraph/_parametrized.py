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
- ``spectral-normed-tied-weight`` (an error, as ``parametrized-tied-weight`` says of the new
  ``spectral_norm``): the hook-based ``torch.nn.utils.spectral_norm`` keeps the shared Parameter at
  ``<name>_orig`` beside ``<name>_u`` and ``<name>_v`` buffers; that end computes ``W / sigma``, the other
  ``W``. Registering rewrites nothing (measured), so untying ``<name>_orig`` loses nothing.
- ``weight-normed-tied-weight`` (a warning): ``weight_norm`` (``<name>_g``/``<name>_v`` from the hook-based
  one, ``original0``/``original1`` from ``parametrizations.weight_norm``) makes the direction ``v`` a new
  Parameter over the shared bytes (``storage-only-tie`` says what a cast does to that) and computes
  ``g * v / ||v||``: equal to the other end at registration, drifting apart once ``g`` trains (measured: one
  SGD step on ``g``), and NaN in every row where ``v`` is zero (an embedding's padding row).
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
        "spectral-normed-tied-weight": (
            "error",
            "{module} is normalised by the hook-based torch.nn.utils.spectral_norm ({attr}_orig, {attr}_u, "
            "{attr}_v) but {attr}_orig is the tensor tied to {others}: {module}'s forward uses {attr}_orig / "
            "sigma (its largest singular value, estimated from {attr}_u and {attr}_v) while {others} {use} "
            "it undivided, so the tied ends compute different weights; registering rewrote nothing, so to "
            "normalise {module} alone, untie it (model.{module}.{attr}_orig = "
            "torch.nn.Parameter(model.{module}.{attr}_orig.detach().clone()): the bytes are still the "
            "trained ones).",
        ),
        "weight-normed-tied-weight": (
            "warning",
            "{module} computes its {attr} by weight_norm as g * v / ||v|| (g: {g}, v: {v}) and v is the "
            "tensor tied to {others}, which {use} v itself: the tied ends are equal only while g holds the "
            "norm of v, as registering set it, and drift apart once g trains (a row where v is zero, such as "
            "an embedding's padding row, is NaN in {module}'s {attr}); keep it so only if {module} is meant "
            "to learn a scale of its own over the tied direction, else untie it (model.{v} = "
            "torch.nn.Parameter(model.{v}.detach().clone()): v holds the trained bytes, so nothing is lost).",
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
    """Every parametrization whose original is tied to a plain slot; every re-parametrized tied slot.

    Re-parametrized: pruning, the hook-based ``spectral_norm`` and both ``weight_norm`` APIs.
    """
    return _parametrized(view) + _hooked(view)


#: torch's re-parametrizations that keep a tied tensor under a name of their own: (the kept slot's suffix
#: after ``<name>_``, the slots its module holds beside it (suffix, is a Parameter), finding kind). The new
#: ``weight_norm``'s ``original1`` is found by its class (:func:`_kept_by`).
_HOOKED = (
    ("orig", (("mask", False),), "pruned-tied-weight"),
    ("orig", (("u", False), ("v", False)), "spectral-normed-tied-weight"),
    ("v", (("g", True),), "weight-normed-tied-weight"),
)


def _hooked(view: GraphView) -> list[Finding]:
    """A tied slot a re-parametrization keeps, beside the slots it adds on the same module."""
    out = []
    for group in view.groups():
        for s in group:
            found = _kept_by(view, s)
            owner = view.slot_owner(s)
            others = sorted({view.slot_canonical(o) for o in group if view.slot_owner(o) != owner})
            if found is None or not others:
                continue
            kind, module, attr, g = found
            fields = {"module": module, "attr": attr, "others": " and ".join(others)}
            if g >= 0:
                fields.update(g=view.slot_canonical(g), v=view.slot_canonical(s))
            paths = [view.slot_canonical(s), *others]
            out.append(finding(KINDS, kind, paths, use="uses" if len(others) == 1 else "use", **fields))
    return out


def _kept_by(view: GraphView, s: int) -> tuple[str, str, str, int] | None:
    """``(kind, module, parametrized name, weight_norm's g slot or -1)`` for a re-parametrization's slot.

    Slot ``s`` is a tensor one of :data:`_HOOKED` keeps, or ``parametrizations.weight_norm``'s direction
    ``original1``; None for any other slot.
    """
    attr, owner = view.slot_attr(s), view.slot_owner(s)
    base, _, tail = attr.rpartition("_")
    if attr == "original1" and view.module_cls(owner) == "ParametrizationList":
        steps = [
            view.module_cls(i).lstrip("_") for i in range(view.num_modules) if view.module_parent(i) == owner
        ]
        norm = _held(view, owner).get("original0")
        if steps != ["WeightNorm"] or norm is None:  # torch's _WeightNorm
            return None
        name = view.module_canonical(owner).rpartition(".")[2]
        return "weight-normed-tied-weight", view.module_belongs(owner), name, norm[1]
    if not base or all(tail != suffix for suffix, _, _ in _HOOKED):
        return None
    held = _held(view, owner)
    for suffix, beside, kind in _HOOKED:
        if tail == suffix and all(held.get(f"{base}_{b}", (None,))[0] is param for b, param in beside):
            g = held["_".join((base, "g"))][1] if kind == "weight-normed-tied-weight" else -1
            return kind, view.module_belongs(owner), base, g
    return None


def _held(view: GraphView, owner: int) -> dict[str, tuple[bool, int]]:
    """Module path ``owner``'s slots: attribute -> (is a Parameter, slot)."""
    return {
        view.slot_attr(m): (view.is_parameter(m), m)
        for m in range(view.num_slots)
        if view.slot_owner(m) == owner
    }


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
