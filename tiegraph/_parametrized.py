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
    """``parametrized-tied-weight`` for every parametrization whose original is tied to a plain slot."""
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
