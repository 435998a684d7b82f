"""PEFT flows: adapters on a module whose weight is tied to a module outside it; ``modules_to_save`` copies.

A PEFT tuner layer (LoRA and the others) keeps the module it adapts as ``base_layer``; merging
(``merge_and_unload()``, ``merge_adapter()``) adds the adapter's delta to ``base_layer.weight`` in place. When
that weight shares memory with a slot outside the layer (a tied ``lm_head`` and ``embed_tokens``), the merge
writes the delta into the shared tensor and changes the other module too (peft#2018), unless the adapters
themselves are tied to the other side's (``LoraConfig(ensure_weight_tying=True)``, trainable tokens), so
that both sides carry one delta.

Everything is read from the graph (no model): a tuner layer is a module whose ``base_layer`` child has its
own canonical path (the wrapper rule removed the segment), so a graph reloaded from JSON finds the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._canonical import join
from ._copies import copy_in_use
from ._finding import Finding, finding, kinds

if TYPE_CHECKING:
    from ._declared import Declaration
    from ._view import GraphView

__all__ = ["KINDS", "CopyFacts", "copy_facts", "findings", "original_still_tied", "tuner_layers"]

#: The finding kinds of this room, with the sentence each one says.
KINDS: dict[str, str] = kinds(
    {
        "adapter-on-tied-module": (
            "warning",
            "PEFT adapters on {module} ({cls}) are not tied to anything, but its base weight {base} shares "
            "memory with {others}: merging (merge_and_unload, merge_adapter) writes {module}'s delta into "
            "the shared tensor and changes {outside} too (peft#2018); adapt both with "
            "LoraConfig(ensure_weight_tying=True), leave {module} out of target_modules, or untie it first.",
        ),
    }
)


def tuner_layers(view: GraphView) -> dict[int, int]:
    """Tuner layer module path -> its ``base_layer`` module path.

    A tuner layer is a module with a child path ``<layer>.base_layer`` whose canonical path is the layer's:
    the wrapper rule for PEFT's ``BaseTunerLayer`` (and ``TrainableTokensWrapper``) removed the segment.
    """
    layers: dict[int, int] = {}
    for i in range(view.num_modules):
        parent = view.module_parent(i)
        if (
            parent >= 0
            and view.module_path(i).rsplit(".", 1)[-1] == "base_layer"
            and view.module_canonical(i) == view.module_canonical(parent)
        ):
            layers[parent] = i
    return layers


def findings(view: GraphView) -> list[Finding]:
    """``adapter-on-tied-module`` for every tuner layer whose base weight is tied outside it, alone.

    O(slots x depth).
    """
    layers = tuner_layers(view)
    if not layers:
        return []
    bases = set(layers.values())
    base: dict[int, list[int]] = {layer: [] for layer in layers}  # slots under <layer>.base_layer
    adapter: dict[int, list[int]] = {layer: [] for layer in layers}  # the layer's other slots
    for s in range(view.num_slots):
        below = -1
        i = view.slot_owner(s)
        while i >= 0:
            if i in layers:
                (base if below in bases and layers[i] == below else adapter)[i].append(s)
                break
            below, i = i, view.module_parent(i)
    out: list[Finding] = []
    for layer, slots in base.items():
        if not adapter[layer]:
            continue
        prefix = view.module_path(layer) + "."
        outside = sorted(
            {t for s in slots for t in view.tie_group(s) if not view.slot_name(t).startswith(prefix)}
        )
        if not outside:
            continue
        tied_adapters = any(
            not view.slot_name(t).startswith(prefix) for s in adapter[layer] for t in view.tie_group(s)
        )
        if tied_adapters:
            continue
        module = view.module_canonical(layer)
        base_names = sorted({view.slot_canonical(s) for s in slots if view.tie_group(s)})
        others = sorted({view.slot_canonical(t) for t in outside} - set(base_names))
        if not others:
            continue
        owners = sorted({view.module_belongs(view.slot_owner(t)) for t in outside} - {module})
        out.append(
            finding(
                KINDS,
                "adapter-on-tied-module",
                [*base_names, *others],
                module=module,
                cls=view.module_cls(layer),
                base=", ".join(base_names),
                others=", ".join(others),
                outside=", ".join(owners) or ", ".join(others),
            )
        )
    return out


@dataclass(frozen=True)
class CopyFacts:
    """One PEFT ``ModulesToSaveWrapper``: the copy the forward uses, and what each other copy shares.

    ``module`` is the canonical path, ``path`` the full one; ``uses`` names the copy the forward uses
    (``modules_to_save.<adapter>``, or ``original_module``); ``not_used`` maps every other copy, in the same
    form, to the canonical names of the slots its own slots share memory with (from memory: these copies
    count in no query, see :mod:`tiegraph._copies`). An other end that is itself a copy the forward does not
    use is marked ``(not used)``.
    """

    module: str
    path: str
    uses: str
    not_used: dict[str, list[str]]


def copy_facts(view: GraphView) -> list[CopyFacts]:
    """Every ``ModulesToSaveWrapper`` the build found, as :class:`CopyFacts`, in the order found."""
    out: list[CopyFacts] = []
    for wrapper in view.modules_to_save:
        used = copy_in_use(wrapper)
        copies = ["original_module", *(f"modules_to_save.{name}" for name in wrapper.adapters)]
        uses = "original_module" if used is None else f"modules_to_save.{used}"
        not_used: dict[str, list[str]] = {}
        for name in copies:
            if name != uses:
                not_used[name] = _shared_from_memory(view, join(wrapper.path, name) + ".")
        out.append(CopyFacts(wrapper.canonical, wrapper.path, uses, not_used))
    return out


def original_still_tied(view: GraphView, d: Declaration) -> str:
    """The phrase saying the ``original_module`` an untied copy stands in for is tied ('' when it is not)."""
    tie = d.tie
    for other in (o.tie for o in view.all_declarations):
        if (
            (other.target, other.source) == (tie.target, tie.source)
            and other.status == "tied"
            and "original" in (other.target_copy, other.source_copy)
        ):
            return " and its original_module, which the forward no longer uses, is still tied to it"
    return ""


def _shared_from_memory(view: GraphView, prefix: str) -> list[str]:
    """Canonical names of the slots outside ``prefix`` sharing memory with a slot under it."""
    inside = [s for s in range(view.num_slots) if view.slot_name(s).startswith(prefix)]
    groups = {view.memory_group_of(s) for s in inside}
    found = {
        view.slot_canonical(t) + ("" if view.is_used(t) else " (not used)")
        for t in range(view.num_slots)
        if view.memory_group_of(t) in groups and not view.slot_name(t).startswith(prefix)
    }
    return sorted(found)
