"""Ties an engine keeps by its own means: DeepSpeed's ``TiedLayerSpec`` and Megatron-core's embedding ties.

These ties are not tie groups (slots sharing memory): the engine ties by use or by communication, so the
graph alone sees one slot, or copies on several ranks. The builder records what the engine's own markers
say (:mod:`tiegraph._engine_marks`, plain data kept in the graph's JSON), and the audit reports each as a
tie of its own kind (severity ``info``: nothing is wrong):

- ``deepspeed-tied-layer``: a ``PipelineModule`` builds every ``TiedLayerSpec`` of one key as one module
  (``tied_modules.<key>``) used by each of those layers. Each stage that owns such a layer holds a copy;
  ``tied_comms[key]`` names the ranks, DeepSpeed broadcasts the copy from the lowest rank at start and
  all-reduces the tied gradients every step, so the copies stay equal (verified with DeepSpeed 0.19.8,
  2 gloo CPU ranks: bit-identical after a step).
- ``megatron-argument-tie``: a Megatron-core language model with ``share_embeddings_and_output_weights``
  on one pipeline stage has no output weight (``output_layer.weight is None``); its forward passes the
  word embedding's weight to the output layer as an argument.
- ``megatron-shared-embedding``: with several pipeline stages, the first stage's word embedding and the
  last stage's output weight are copies marked ``shared_embedding = True``; Megatron-core all-reduces
  their gradients over its embedding group.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._engine_marks import KEPT
from .._finding import Finding, finding, kinds
from ..errors import PathNotFoundError

if TYPE_CHECKING:
    from .._view import GraphView

__all__ = ["KINDS", "findings", "replica_ties"]

_CHECK = "watch them with tiegraph.distributed.check_tied_replicas"

#: The kinds of ties an engine keeps, with their sentences.
KINDS: dict[str, str] = kinds(
    {
        "deepspeed-tied-layer": (
            "info",
            "{paths} is the weight of DeepSpeed TiedLayerSpec {key!r}, one module used by layers {layers} of "
            "the PipelineModule; {kept}.",
        ),
        "megatron-argument-tie": (
            "info",
            "{head} holds no weight of its own (share_embeddings_and_output_weights=True, "
            "output_layer.weight is None): Megatron-core passes it {paths} as a forward argument, so the "
            "head and the embedding are one weight and train tied (no tie group: the head has no slot).",
        ),
        "megatron-shared-embedding": (
            "info",
            "{paths} is this pipeline stage's end of Megatron-core's shared embedding "
            "(shared_embedding=True: the first stage's word embedding and the last stage's output weight "
            "are copies); Megatron-core all-reduces their gradients over its embedding group so they stay "
            "equal; " + _CHECK + ".",
        ),
    }
)


def _kept(ranks: list[int]) -> str:
    if len(ranks) > 1:
        return (
            f"the stages on ranks {', '.join(map(str, ranks))} each hold a copy (tied_comms), which "
            "DeepSpeed broadcasts at start and whose gradients it all-reduces every step, so they stay "
            f"equal; {_CHECK}"
        )
    return "this stage holds the only copy, so there is nothing to keep in sync"


def findings(view: GraphView) -> list[Finding]:
    """One finding per kept tie the builder recorded, its slots and modules named canonically."""
    out = []
    for tie in view.engine.get(KEPT) or []:
        names = [_slot_canonical(view, name) for name in tie["slots"]]
        fields = {k: v for k, v in tie.items() if k not in ("kind", "slots")}
        if tie["kind"] == "deepspeed-tied-layer":
            fields["layers"] = ", ".join(map(str, tie["layers"]))
            fields["kept"] = _kept(tie["ranks"])
        if "head" in fields:
            fields["head"] = _module_canonical(view, fields["head"])
        out.append(finding(KINDS, tie["kind"], names, **fields))
    return out


def _slot_canonical(view: GraphView, name: str) -> str:
    try:
        slots = view.resolve(name)
    except PathNotFoundError:  # (a record read back from JSON with another model's names)
        return name
    return next((view.slot_canonical(s) for s in slots if view.slot_name(s) == name), name)


def _module_canonical(view: GraphView, path: str) -> str:
    found = (view.module_canonical(i) for i in range(view.num_modules) if view.module_path(i) == path)
    return next(found, path)


def replica_ties(view: GraphView) -> list[list[str]]:
    """The slot names whose copies live on other ranks, one list per kept tie (for the replica check).

    A ``TiedLayerSpec`` weight has one name on every stage; Megatron-core's shared embedding is the first
    stage's word embedding and the last stage's output weight, so both names are listed.
    """
    out = []
    for tie in view.engine.get(KEPT) or []:
        if tie["kind"] == "deepspeed-tied-layer" and len(tie.get("ranks") or ()) > 1:
            out += [[slot] for slot in tie["slots"]]
        elif tie["kind"] == "megatron-shared-embedding":
            (slot,) = tie["slots"]
            root = next((slot.removesuffix(end) for end in _ENDS if slot.endswith(end)), "")
            out.append(sorted(root + end for end in _ENDS))
    return out


_ENDS = ("embedding.word_embeddings.weight", "output_layer.weight")
