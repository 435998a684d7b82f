"""The rank side of ``tests/test_sharding_megatron.py``: ``python tests/_megatron_workers.py OUT_DIR``.

Runs in Megatron-core's cached venv (``python3 dev.py sharding test megatron``; Megatron-core 0.16.1, the
newest for Python 3.11), on 2 gloo CPU ranks. Megatron-core's forward needs CUDA, its construction does
not: ``use_cpu_initialization=True``, the local (non-Transformer-Engine) layer spec, and a
``ProcessGroupCollection`` of real gloo groups. Each rank builds

- a one-stage GPT (its own rank as every group): ``output_layer.weight is None``, the head takes the word
  embedding's weight as a forward argument;
- its stage of a two-stage GPT (pipeline group: both ranks): rank 0 holds the word embedding, rank 1 the
  output layer, both marked ``shared_embedding``. The embedding group is None (Megatron allows it): with
  one, Megatron's initial all-reduce first moves the weight to CUDA (``weight.data.cuda()``), which this
  CPU-only machine cannot do. So the last stage's copy stays zero, as Megatron leaves it before that
  all-reduce; the test then makes the same all-reduce over the same two ranks on gloo.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.distributed as dist
from _ranks import worker_main

warnings.filterwarnings("ignore")

import tiegraph  # noqa: E402
import tiegraph.distributed  # noqa: E402

VOCAB, HIDDEN = 64, 16


def gpt(stages: int, rank: int) -> Any:
    from megatron.core.models.gpt import GPTModel
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
    from megatron.core.process_groups_config import ProcessGroupCollection
    from megatron.core.transformer.transformer_config import TransformerConfig

    own = OWN[rank]
    pipe = own if stages == 1 else BOTH
    groups = ProcessGroupCollection(
        tp=own, cp=own, pp=pipe, embd=None, pos_embd=None, tp_cp=own, dp=own, dp_cp=own
    )
    config = TransformerConfig(
        num_layers=2,
        hidden_size=HIDDEN,
        num_attention_heads=2,
        use_cpu_initialization=True,
        pipeline_model_parallel_size=stages,
        pipeline_dtype=torch.float32 if stages > 1 else None,
    )
    torch.manual_seed(0)
    return GPTModel(
        config,
        get_gpt_layer_local_spec(),
        vocab_size=VOCAB,
        max_sequence_length=32,
        pre_process=stages == 1 or rank == 0,
        post_process=stages == 1 or rank == stages - 1,
        share_embeddings_and_output_weights=True,
        pg_collection=groups,
    )


def seen(model: Any) -> dict[str, Any]:
    tg = tiegraph.build_graph(model)
    return {
        "groups": tg.tie_groups(),
        "findings": [[f.kind, list(f.paths), f.message] for f in tg.audit()],
        "json_findings": [f.kind for f in tiegraph.TieGraph.from_json(tg.to_json()).audit()],
        "marked": sorted(n for n, p in model.named_parameters() if getattr(p, "shared_embedding", False)),
    }


OWN: list[Any] = []
BOTH: Any = None


def run(rank: int) -> dict[str, Any]:
    global BOTH
    OWN.extend(dist.new_group([r]) for r in range(dist.get_world_size()))  # every rank makes every group
    BOTH = dist.new_group(list(range(dist.get_world_size())))
    one = gpt(1, rank)
    out: dict[str, Any] = {"one_stage": {**seen(one), "head_weight": one.output_layer.weight is None}}
    stage = gpt(2, rank)
    weight = stage.shared_embedding_or_output_weight()
    out["two_stages"] = {
        **seen(stage),
        "before": [[list(m.ranks), m.message] for m in tiegraph.distributed.check_tied_replicas(stage)],
    }
    with torch.no_grad():  # what Megatron's embedding group does at start, here on gloo
        dist.all_reduce(weight.data, group=BOTH)
    out["two_stages"]["after"] = [list(m.ranks) for m in tiegraph.distributed.check_tied_replicas(stage)]
    return out


if __name__ == "__main__":
    worker_main(run)
