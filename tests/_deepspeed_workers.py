"""The rank side of ``tests/test_sharding_deepspeed.py``: ``python tests/_deepspeed_workers.py OUT_DIR``.

Runs in DeepSpeed's cached venv (``python3 dev.py sharding test deepspeed``), on 2 gloo CPU ranks with
``DS_ACCELERATOR=cpu``. Three cases, each with the real DeepSpeed:

- ``identity``: a tiny tied Llama (one Parameter under ``embed_tokens.weight`` and ``lm_head.weight``)
  through ``deepspeed.initialize`` with ZeRO-3, before and after an SGD step;
- ``storage``: the same model with a storage-only tie (``lm_head.weight = nn.Parameter(embed.weight)``):
  the pre-flight on the unpartitioned model, the audit after partitioning, and the values after a step
  (gathered with ``deepspeed.zero.GatheredParameters``), to show the split is real;
- ``pipeline``: a ``PipelineModule`` of 2 stages whose first and last layers are one ``TiedLayerSpec``,
  one ``train_batch``, then the replica check.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

warnings.filterwarnings("ignore")

import models  # noqa: E402  (tests/ is this script's directory)
from models import HIDDEN, VOCAB  # noqa: E402

import tiegraph  # noqa: E402
import tiegraph.distributed  # noqa: E402
import tiegraph.sharding  # noqa: E402


def llama(storage_tie: bool = False) -> nn.Module:
    torch.manual_seed(0)
    model = models.llama(tie_word_embeddings=True)
    if storage_tie:  # a second Parameter object over the embedding's bytes
        model.lm_head.weight = nn.Parameter(model.model.embed_tokens.weight)
    return model


def zero3(model: nn.Module) -> Any:
    import deepspeed

    config = {
        "train_batch_size": 2 * dist.get_world_size(),
        "train_micro_batch_size_per_gpu": 2,
        "zero_optimization": {"stage": 3},
        "zero_allow_untested_optimizer": True,  # torch's SGD: exact, no C++ optimizer to compile
        "steps_per_print": 10**9,
    }
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
    return engine


def llama_step(engine: Any) -> None:
    ids = (torch.arange(12).reshape(2, 6) + dist.get_rank()) % VOCAB
    loss = engine(input_ids=ids, labels=ids).loss
    engine.backward(loss)
    engine.step()


def seen(model: nn.Module) -> dict[str, Any]:
    """What tiegraph says of a model: tie groups, findings, and shape and placement of the tied slots."""
    tg = tiegraph.build_graph(model)
    nodes = {d["canonical"]: d for _, d in tg.graph.nodes(data=True) if d.get("kind") == "slot"}
    ends = ("model.embed_tokens.weight", "lm_head.weight")
    return {
        "groups": tg.tie_groups(),
        "tied": tg.tied_to_input_embedding(),
        "findings": [[f.kind, list(f.paths), f.message] for f in tg.audit()],
        "facts": {n: [list(nodes[n]["shape"]), nodes[n]["dtype"], nodes[n]["placement"]] for n in ends},
        "json_findings": [f.kind for f in tiegraph.TieGraph.from_json(tg.to_json()).audit()],
    }


def identity_case() -> dict[str, Any]:
    engine = zero3(llama())
    module = engine.module
    embed, head = module.model.embed_tokens.weight, module.lm_head.weight
    out: dict[str, Any] = {
        "placeholder": [list(embed.data.shape), embed.data_ptr(), int(embed.ds_id), int(head.ds_id)],
        "engine": seen(engine),
        "module": seen(module),
    }
    llama_step(engine)
    out["after_step"] = seen(engine)
    return out


def storage_case() -> dict[str, Any]:
    import deepspeed

    model = llama(storage_tie=True)
    out: dict[str, Any] = {
        "preflight": [[f.kind, list(f.paths), f.message] for f in tiegraph.sharding.check_zero3(model)]
    }
    engine = zero3(model)
    module = engine.module
    embed, head = module.model.embed_tokens.weight, module.lm_head.weight
    out["ds_ids"] = [int(embed.ds_id), int(head.ds_id)]
    out["after"] = seen(engine)
    llama_step(engine)
    with deepspeed.zero.GatheredParameters([embed, head]):
        out["max_diff_after_step"] = float((embed.data - head.data).abs().max())
    return out


def pipeline_case() -> dict[str, Any]:
    import deepspeed
    from deepspeed.pipe import LayerSpec, PipelineModule, TiedLayerSpec

    def head(module: nn.Embedding, hidden: torch.Tensor) -> torch.Tensor:
        return hidden @ module.weight.t()

    def loss_fn(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(logits.reshape(-1, VOCAB), target.reshape(-1))

    torch.manual_seed(0)
    layers = [
        TiedLayerSpec("embed", nn.Embedding, VOCAB, HIDDEN),
        LayerSpec(nn.Linear, HIDDEN, HIDDEN),
        LayerSpec(nn.Tanh),
        LayerSpec(nn.Linear, HIDDEN, HIDDEN),
        TiedLayerSpec("embed", nn.Embedding, VOCAB, HIDDEN, forward_fn=head),
    ]
    pipe = PipelineModule(layers=layers, num_stages=2, loss_fn=loss_fn, partition_method="uniform")
    config = {
        "train_batch_size": 4,
        "train_micro_batch_size_per_gpu": 2,
        "gradient_accumulation_steps": 2,
        "steps_per_print": 10**9,
    }
    optimizer = torch.optim.SGD(pipe.parameters(), lr=0.5)
    engine, *_ = deepspeed.initialize(model=pipe, optimizer=optimizer, config=config)
    ties = [["tied_modules.embed.weight"]]
    weight = pipe.tied_modules.embed.weight
    out: dict[str, Any] = {
        "tied_comms": {k: list(v["ranks"]) for k, v in pipe.tied_comms.items()},
        "params": sorted(n for n, _ in pipe.named_parameters(remove_duplicate=False)),
        "findings": [[f.kind, list(f.paths), f.message] for f in tiegraph.build_graph(engine).audit()],
        "before": [m.message for m in tiegraph.distributed.check_tied_replicas(pipe)],
        "sum_before": float(weight.detach().double().sum()),
    }
    ids = torch.arange(24).reshape(4, 6) % VOCAB
    batches = iter([(ids[i : i + 2], (ids[i : i + 2] + 1) % VOCAB) for i in (0, 2)])
    engine.train_batch(data_iter=batches)
    out["sum_after"] = float(weight.detach().double().sum())
    out["after"] = [m.message for m in tiegraph.distributed.check_tied_replicas(pipe)]
    out["after_exact"] = [m.message for m in tiegraph.distributed.check_tied_replicas(pipe, ties, exact=True)]
    out["agree"] = [str(d) for d in tiegraph.distributed.check_ranks_agree(pipe)]
    with torch.no_grad():  # the control: a copy moved by hand (rank 1's) is seen
        weight[0] += 0.01 * dist.get_rank()
    out["drifted"] = [list(m.ranks) for m in tiegraph.distributed.check_tied_replicas(pipe)]
    return out


CASES = {"identity": identity_case, "storage": storage_case, "pipeline": pipeline_case}


def main(out_dir: str) -> int:
    """As ``_ranks.worker_main``, with DeepSpeed's communication on top and a longer collective timeout
    (a busy 2-core machine skews the ranks' DeepSpeed imports by more than the usual 60 s)."""
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    os.environ.setdefault("LOCAL_RANK", str(rank))
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    dist.init_process_group(
        "gloo",
        init_method="file://" + os.environ["TIEGRAPH_TEST_STORE"],
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=600),
    )
    import deepspeed

    deepspeed.init_distributed(dist_backend="gloo")  # takes the group above
    results: dict[str, Any] = {}
    try:
        for name in os.environ.get("TIEGRAPH_DS_CASES", ",".join(CASES)).split(","):
            results[name] = CASES[name]()
    except BaseException:
        results["crash"] = traceback.format_exc()
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(results))
    return 0 if "crash" not in results else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
