"""Identity ties and storage ties: which ties survive a step that re-creates Parameters.

A tie group's parameters are one Parameter object under several names (an **identity tie**: what
``model.lm_head.weight = model.model.embed_tokens.weight`` and transformers' ``tie_weights()`` make), or
several Parameter objects over shared bytes (a **storage tie**: ``load_state_dict(..., assign=True)`` of a
state dict whose keys hold one tensor, ``nn.Parameter(other.weight)``, accelerate's ``init_empty_weights``,
PEFT's ``ensure_weight_tying``). Every step that re-creates Parameters keeps identity ties only:
``.half()`` and other dtype casts (``Module._apply`` gives each Parameter its own converted tensor), FSDP2
``fully_shard`` and DeepSpeed ZeRO-3 partitioning (one shard per Parameter object).

- ``storage-only-tie`` (a warning): Parameter objects that are the same bytes in the same layout (same
  storage, offset, shape, strides and dtype). Assigning one to the others makes them one Parameter and
  loses nothing, since the bytes are the same.
- ``storage-tie-by-view`` (info): Parameter objects that are different views of shared bytes (transposed,
  sliced: PEFT's ``lora_A.weight = Parameter(lora_embedding_B.t())``). They cannot be one Parameter;
  nothing is wrong now, but a cast or a shard after they were made unties them.

The sharding room's pre-flights reuse these kinds and :func:`storage_ties`: this module imports only
:mod:`tiegraph._finding` (the view under ``TYPE_CHECKING``), so any room can import it without a cycle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from ._finding import Finding, finding, kinds

if TYPE_CHECKING:
    from ._view import GraphView

__all__ = ["KINDS", "StorageTie", "findings", "storage_ties"]

#: The finding kinds of this room, with the sentence each one says.
KINDS: dict[str, str] = kinds(
    {
        "storage-only-tie": (
            "warning",
            "{paths} are {count} Parameter objects over the same bytes, not one Parameter under several "
            "names: the next step that re-creates Parameters (.half() or another dtype cast, FSDP2 "
            "fully_shard, DeepSpeed ZeRO-3) gives each its own copy and unties them; make it one Parameter, "
            "{how} (the bytes are the same, so nothing trained is lost).",
        ),
        "storage-tie-by-view": (
            "info",
            "{paths} share bytes as different views of one storage ({detail}), so they cannot be one "
            "Parameter: a dtype cast (.half(), .to(dtype)), FSDP2 fully_shard or DeepSpeed ZeRO-3 applied "
            "after the views were made gives each its own copy and unties them; cast and shard first{peft}.",
        ),
    }
)


class StorageTie(NamedTuple):
    """Parameter slots of one tie group held by two or more Parameter objects over shared bytes.

    ``objects``: the slots per Parameter object (each list in slot order, the objects in order of their
    first slot). ``alias``: True when every object is the same bytes in the same layout (assigning one to
    the others loses nothing), False when some are different views (transposed, sliced).
    """

    objects: list[list[int]]
    alias: bool


def storage_ties(view: GraphView) -> list[StorageTie]:
    """Per tie group, its Parameter objects that share bytes without being one object.

    A group's parameter slots are split by tensor object; objects of the same layout (same bytes, shape,
    strides and dtype, as the builder kept them: a graph is a record) form one alias set; the objects of
    other layouts, with one object of every alias set, form a view set. Quantized slots (their bytes are
    several tensors), slots an offload hook serves, and buffers are left out. O(slots in tie groups).
    """
    out: list[StorageTie] = []
    for group in view.groups():
        objects: dict[int, list[int]] = {}
        for s in group:
            if (
                view.is_parameter(s)
                and view.quantization(s) is None
                and view.served_from(s) is None  # accelerate's hooks make a new Parameter every forward
                and view.layout(s) is not None
            ):
                objects.setdefault(view.tensor(s).number, []).append(s)
        if len(objects) < 2:
            continue
        layouts: dict[tuple[object, ...], list[list[int]]] = {}
        for slots in objects.values():
            s = slots[0]
            facts = view.tensor(s)
            layouts.setdefault((view.layout(s), facts.shape, facts.dtype), []).append(slots)
        out += [StorageTie(same, True) for same in layouts.values() if len(same) > 1]
        if len(layouts) > 1:
            out.append(StorageTie([same[0] for same in layouts.values()], False))
    return out


def findings(view: GraphView) -> list[Finding]:
    """``storage-only-tie`` per alias set, ``storage-tie-by-view`` per view set (see :func:`storage_ties`)."""
    out: list[Finding] = []
    ie = set(view.input_embedding_slots)
    for tie in storage_ties(view):
        names = [view.slot_canonical(s) for slots in tie.objects for s in slots]
        if tie.alias:
            keep = next((slots for slots in tie.objects if ie & set(slots)), tie.objects[0])
            source = view.slot_canonical(keep[0])
            targets = sorted({view.slot_canonical(slots[0]) for slots in tie.objects if slots is not keep})
            how = "; ".join(f"model.{target} = model.{source}" for target in targets)
            out.append(finding(KINDS, "storage-only-tie", names, count=len(tie.objects), how=how))
        else:
            fields = {"detail": _detail(view, tie), "peft": _peft(view, tie)}
            out.append(finding(KINDS, "storage-tie-by-view", names, **fields))
    return out


def _detail(view: GraphView, tie: StorageTie) -> str:
    """How the views differ: each object's shape, and transposed where it is."""
    parts = []
    for slots in tie.objects:
        facts = view.tensor(slots[0])
        layout = view.layout(slots[0])
        strides = layout[2] if layout else None
        transposed = strides is not None and len(strides) == 2 and strides[0] < strides[1]
        shape = "x".join(map(str, facts.shape)) if facts.shape is not None else "(shape unknown)"
        parts.append(f"{view.slot_canonical(slots[0])} {shape}{' transposed' if transposed else ''}")
    return ", ".join(parts)


def _peft(view: GraphView, tie: StorageTie) -> str:
    """For PEFT adapters (tied by ensure_weight_tying): where in a PEFT flow to cast and shard."""
    adapters = any(
        view.module_canonical(view.slot_owner(s)) != view.module_belongs(view.slot_owner(s))
        for slots in tie.objects
        for s in slots
    )
    if not adapters:
        return ""
    return (
        " (PEFT ties these adapters so on purpose, LoraConfig(ensure_weight_tying=True): cast the base model "
        "before get_peft_model and pass autocast_adapter_dtype=False, since PEFT's own float32 cast of the "
        "adapters of a float16 or bfloat16 model unties them too)"
    )
