"""Pipeline stages: which tie groups a stage split puts on several stages, where nothing keeps them equal.

Each pipeline stage holds its own copy of every parameter it uses. A tie whose ends land on different
stages becomes two (or more) tensors trained by different ranks. ``torch.distributed.pipelining`` does not
sync them (checked here: manual ``PipelineStage`` and the ``pipeline()`` tracer, GPipe on 2 gloo CPU
ranks, torch 2.13.0; after one step the copies differ). Engines that do sync them: DeepSpeed's
``PipelineModule`` when both ends are built from one ``TiedLayerSpec`` (it all-reduces the tied gradients
over ``tied_comms``), and Megatron-core's embedding group (``share_embeddings_and_output_weights``).

Stage modules keep the full model's names (the ``pipeline()`` tracer's ``GraphModule`` stages do; a manual
stage made by deleting modules does too), so slots are matched by name and a stage without the input
embedding is just a stage.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from .._finding import Finding, finding, kinds
from ..errors import PathNotFoundError, TiegraphError

__all__ = ["KINDS", "check_stage_split", "stage_slots"]

#: The stage pre-flight's finding kind.
KINDS: dict[str, str] = kinds(
    {
        "stage-split-tie": (
            "error",
            "{paths} are one weight, but the stage split puts it on {count} stages ({where}); each stage "
            "trains its own copy and torch.distributed.pipelining syncs nothing, so they drift apart from "
            "the first step (verified with torch 2.13.0, GPipe on 2 gloo CPU ranks); keep the tied modules "
            "on one stage, or all-reduce the tied gradients across those stages' ranks yourself (DeepSpeed's "
            "TiedLayerSpec and Megatron-core's embedding group do this), and watch the copies with "
            "tiegraph.distributed.check_tied_replicas.",
        ),
    }
)


def _leaf_order(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Modules that own parameters, in registration order (the forward order of a decoder stack)."""
    return [(p, m) for p, m in model.named_modules() if m._parameters]


def _point(value: Any) -> str:
    name = str(getattr(value, "name", value)).lower()
    if name not in ("beginning", "end"):
        raise TiegraphError(
            f"a split_spec value is SplitPoint.BEGINNING or SplitPoint.END (or 'beginning' / 'end'), not "
            f"{value!r}"
        )
    return name


def _from_split_spec(model: nn.Module, spec: Mapping[str, Any]) -> list[list[str]]:
    leaves = _leaf_order(model)
    cuts = set()
    for path, value in spec.items():
        under = [i for i, (p, _) in enumerate(leaves) if p == path or p.startswith(path + ".")]
        if not under:
            raise PathNotFoundError(
                f"the split_spec names {path!r}, which holds no parameters of the model (or is no module); "
                "name a module as model.named_modules() does"
            )
        cuts.add(under[0] if _point(value) == "beginning" else under[-1] + 1)
    stages: list[list[str]] = [[]]
    for i, (path, _) in enumerate(leaves):
        if i in cuts and stages[-1]:
            stages.append([])
        stages[-1].append(path)
    return stages


def _module_slots(model: nn.Module, item: Any) -> list[str]:
    if isinstance(item, nn.Module) and not any(item is m for m in model.modules()):
        return [name for name, _ in item.named_parameters(remove_duplicate=False)]  # a stage module
    path = item if isinstance(item, str) else next((p for p, m in model.named_modules() if m is item), None)
    if path is None:
        raise PathNotFoundError("a stage lists a module that is not part of the model")
    try:
        module = model.get_submodule(path)
    except AttributeError:
        raise PathNotFoundError(f"a stage names {path!r}, which is not a module of the model") from None
    prefix = path + "." if path else ""
    return [prefix + name for name, _ in module.named_parameters(remove_duplicate=False)]


def stage_slots(model: nn.Module, stages: Any) -> list[set[str]]:
    """The parameter names each stage holds, as the full model names them.

    ``stages`` is a ``Pipe`` from ``torch.distributed.pipelining.pipeline()``, a ``split_spec`` mapping
    (module path -> ``SplitPoint``; stages follow the order modules are registered in), or a sequence with
    one entry per stage: a stage module (its own parameter names) or a list of module paths or modules.
    """
    if hasattr(stages, "get_stage_module") and hasattr(stages, "num_stages"):
        modules = [stages.get_stage_module(i) for i in range(stages.num_stages)]
        return [{n for n, _ in m.named_parameters(remove_duplicate=False)} for m in modules]
    if isinstance(stages, Mapping):
        stages = _from_split_spec(model, stages)
    if not isinstance(stages, Sequence) or isinstance(stages, str) or len(stages) < 2:
        raise TiegraphError(
            "stages are a pipeline() Pipe, a split_spec mapping, or a list with one entry per stage (at "
            f"least two), not {type(stages).__name__}"
        )
    out = []
    for stage in stages:
        items = stage if isinstance(stage, (list, tuple)) else [stage]
        out.append({slot for item in items for slot in _module_slots(model, item)})
    return out


def check_stage_split(model: nn.Module, stages: Any) -> list[Finding]:
    """Findings for the tie groups whose ends a pipeline stage split puts on different stages.

    Parameters
    ----------
    model
        The whole model (any device; meta works: no tensor data is read).
    stages
        A ``Pipe`` from ``torch.distributed.pipelining.pipeline()``, the ``split_spec`` you would pass it,
        or one entry per stage: the stage module, or a list of the model's module paths or modules.

    Returns
    -------
    list of Finding
        One ``stage-split-tie`` per tie group held by two or more stages, saying which stage holds which
        slot and what keeps the copies equal (nothing, in ``torch.distributed.pipelining``).

    Examples
    --------
    >>> import torch, tiegraph.sharding
    >>> m = torch.nn.Module()
    >>> m.embed, m.body, m.head = torch.nn.Embedding(8, 4), torch.nn.Linear(4, 4), torch.nn.Linear(4, 8)
    >>> m.head.weight = m.embed.weight
    >>> found = tiegraph.sharding.check_stage_split(m, {"body": "beginning"})
    >>> [(f.kind, f.paths) for f in found]
    [('stage-split-tie', ('embed.weight', 'head.weight'))]
    >>> tiegraph.sharding.check_stage_split(m, [["embed", "head"], ["body"]])
    []
    """
    from .._build import build_graph

    if not isinstance(model, nn.Module):
        raise TypeError(f"check_stage_split expects a torch.nn.Module, got {type(model).__name__}")
    held = stage_slots(model, stages)
    found = []
    for group in build_graph(model).tie_groups(full_paths=True):
        where = [(i, sorted(set(group) & slots)) for i, slots in enumerate(held)]
        where = [(i, names) for i, names in where if names]
        if len(where) >= 2:
            text = "; ".join(f"stage {i}: {', '.join(names)}" for i, names in where)
            found.append(finding(KINDS, "stage-split-tie", group, count=len(where), where=text))
    return found
