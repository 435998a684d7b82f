"""The rank side of ``tests/test_distributed.py``: run as ``python tests/_dist_workers.py OUT_DIR``.

Each rank reads ``RANK``, ``WORLD_SIZE`` and ``TIEGRAPH_TEST_STORE`` from its environment, joins a gloo
group through a FileStore at that path (with a timeout; the test pins gloo to loopback), prepares a tied
Llama and a T5 under every wrapper, and writes what it saw to ``OUT_DIR/rank<N>.json`` for the test
process to compare. One run covers every case, so the process group and the imports are paid for once.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import torch
import torch.distributed as dist
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
warnings.filterwarnings("ignore", module=r"(transformers|torch)(\.|$)")

from _ranks import worker_main  # noqa: E402

import tiegraph  # noqa: E402
import tiegraph._walk  # noqa: E402
import tiegraph.distributed  # noqa: E402

SEGMENTS = ("module", "_checkpoint_wrapped_module", "_fsdp_wrapped_module")
LAYERS = {"llama": ("LlamaDecoderLayer",), "t5": ("T5Block",)}


def factory(family: str) -> nn.Module:
    from models import llama_tied, t5

    torch.manual_seed(0)  # the same weights on every rank, as a launcher would load them
    return llama_tied() if family == "llama" else t5()


def layers(model: nn.Module, family: str) -> list[nn.Module]:
    return [m for m in model.modules() if type(m).__name__ in LAYERS[family]]


def is_layer(family: str) -> Callable[[nn.Module], bool]:
    return lambda m: type(m).__name__ in LAYERS[family]


def wrap(kind: str, family: str) -> nn.Module:
    """A fresh model of ``family`` prepared by the wrapper(s) ``kind`` names."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
        apply_activation_checkpointing,
        checkpoint_wrapper,
    )
    from torch.distributed.fsdp import FullyShardedDataParallel, fully_shard
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy
    from torch.nn.parallel import DistributedDataParallel

    model = factory(family)
    if kind == "plain":
        return model
    if kind == "ddp":
        return DistributedDataParallel(model)
    if kind == "ac":
        apply_activation_checkpointing(model, check_fn=is_layer(family))
        return model
    if kind == "ac_whole":
        return checkpoint_wrapper(model)
    if kind == "ddp_ac":
        apply_activation_checkpointing(model, check_fn=is_layer(family))
        return DistributedDataParallel(model)
    if kind in ("fsdp2", "ac_fsdp2"):
        if kind == "ac_fsdp2":
            apply_activation_checkpointing(model, check_fn=is_layer(family))
        unit = "CheckpointWrapper" if kind == "ac_fsdp2" else LAYERS[family][0]
        for module in [m for m in model.modules() if type(m).__name__ == unit]:
            fully_shard(module)
        fully_shard(model)
        return model
    if kind.startswith("fsdp1"):
        # one unit: on rank 1 the embedding lies wholly in rank 0's slice, so its view there is empty
        policy = (
            None if kind == "fsdp1_one_unit" else ModuleWrapPolicy({type(m) for m in layers(model, family)})
        )
        return FullyShardedDataParallel(
            model,
            device_id=torch.device("cpu"),  # FSDP1 on CPU (gloo): device_id=None asks for an accelerator
            use_orig_params=kind != "fsdp1_flat",
            auto_wrap_policy=policy,
        )
    raise ValueError(kind)


class RecordOps(TorchDispatchMode):
    """Every aten/c10d op that runs while active (building a graph must run none: no gather, no copy)."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # torch leaves it unannotated
        self.ops: list[str] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


def memory(model: nn.Module) -> list[tuple[str, int, int, int]]:
    """(name, id of the tensor holding memory, its data pointer, storage size) of every parameter."""
    out = []
    for name, p in model.named_parameters(remove_duplicate=False):
        local = getattr(p, "_local_tensor", p)
        out.append((name, id(local), local.untyped_storage().data_ptr(), local.untyped_storage().nbytes()))
    return out


def observe(model: nn.Module, **kwargs: Any) -> dict[str, Any]:
    """Build the graph of ``model`` on this rank and record the answers and the no-copy evidence."""
    before = memory(model)
    with warnings.catch_warnings(record=True) as caught, RecordOps() as recorder:
        warnings.simplefilter("always")
        tg = tiegraph.build_graph(model, **kwargs)
        groups = tg.tie_groups()
    G = tg.graph
    slot_types = sorted({type(p).__name__ for p in model.parameters()})
    out: dict[str, Any] = {
        "groups": groups,
        "groups_full": tg.tie_groups(full_paths=True),
        "tied": tg.tied_to_input_embedding(),
        "tied_full": tg.tied_to_input_embedding(full_paths=True),
        "embedding": tg.input_embedding(),
        "root_cls": type(model).__name__,
        "param_types": slot_types,
        "segments": sorted(
            {seg for _, d in G.nodes(data=True) if d["kind"] == "slot" for seg in d["name"].split(".")}
            & set(SEGMENTS)
        ),
        "canonical_segments": sorted(
            {seg for _, d in G.nodes(data=True) if d["kind"] == "slot" for seg in d["canonical"].split(".")}
            & set(SEGMENTS)
        ),
        "shapes": {d["canonical"]: list(d["shape"]) for _, d in G.nodes(data=True) if d["kind"] == "slot"},
        "ops": recorder.ops,
        "memory_unchanged": memory(model) == before,
        "warnings": [(str(w.message), w.filename) for w in caught if "FlatParameter" in str(w.message)],
    }
    try:
        out["audit"] = sorted((f.kind, list(f.paths)) for f in tg.audit())
        out["declared"] = sorted((d.target, d.source, d.status) for d in tg.declared_ties())
    except Exception as error:  # declared/audit are reported, not fatal, so the other cases still run
        out["audit"] = out["declared"] = f"{type(error).__name__}: {error}"
    return out


def disagreements(model: nn.Module, **kwargs: Any) -> list[dict[str, Any]]:
    found = tiegraph.distributed.check_ranks_agree(model, **kwargs)
    return [
        {"kind": d.kind, "value": d.value, "ranks": list(d.ranks), "missing": list(d.missing), "text": str(d)}
        for d in found
    ]


def run(rank: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    kinds = (
        "plain",
        "ddp",
        "ac",
        "ac_whole",
        "ddp_ac",
        "fsdp2",
        "ac_fsdp2",
        "fsdp1_orig",
        "fsdp1_one_unit",
        "fsdp1_flat",
    )
    for family in ("llama", "t5"):
        for kind in kinds:
            model = wrap(kind, family)
            seen = observe(model)
            seen["agree"] = disagreements(model)
            results[f"{family}/{kind}"] = seen

    # FSDP1 registers its FlatParameter next to the original views (torch's own helper, as it does for
    # use_orig_params=False): it is a container and must not merge the unit's parameters into one group.
    from torch.distributed.fsdp import FullyShardedDataParallel
    from torch.distributed.fsdp._unshard_param_utils import _deregister_flat_param, _register_flat_param

    model = wrap("fsdp1_orig", "llama")
    assert isinstance(model, FullyShardedDataParallel)
    _register_flat_param(model, model)
    results["llama/fsdp1_flat_registered"] = observe(model)
    _deregister_flat_param(model, model)

    # the core's FSDP1 handling, switched off: what a plain storage walk would say (the regression pinned)
    def no_views(_modules: object) -> tiegraph._storage.FlatViews:
        return tiegraph._storage.FlatViews({}, set())

    with mock.patch.object(tiegraph._walk, "flat_param_views", no_views):
        results["llama/fsdp1_one_unit_without_flat_views"] = observe(wrap("fsdp1_one_unit", "llama"))
        model = wrap("fsdp1_orig", "llama")
        assert isinstance(model, FullyShardedDataParallel)
        _register_flat_param(model, model)
        results["llama/fsdp1_flat_registered_without_flat_views"] = observe(model)

    # one rank unties its head after wrapping: every rank must get the same finding
    ddp = wrap("ddp", "llama")
    fsdp = wrap("fsdp2", "llama")
    if rank == 1:
        for head in (ddp.get_submodule("module.lm_head"), fsdp.get_submodule("lm_head")):
            head.weight = nn.Parameter(head.get_parameter("weight").detach().clone())
    results["untie/ddp"] = disagreements(ddp)
    results["untie/fsdp2"] = disagreements(fsdp)
    results["untie/fsdp2_subgroup"] = disagreements(fsdp, group=dist.new_group([0, 1]))
    # one rank fails to build: the others must not hang, and all see the error
    bad = {"input_embedding": "no.such.module"} if rank == 1 else {}
    results["error/rank1"] = disagreements(wrap("plain", "llama"), **bad)

    # a tie group split across devices (the head moved to meta) is an audit finding, wrapped or not
    for kind in ("ddp", "fsdp2"):
        model = wrap(kind, "llama")
        head = model.get_submodule("module.lm_head" if kind == "ddp" else "lm_head")
        head.weight = nn.Parameter(torch.empty(head.get_parameter("weight").shape, device="meta"))
        results[f"split/{kind}"] = observe(model)
    return results


if __name__ == "__main__":
    worker_main(run)
