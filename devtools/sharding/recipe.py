"""The DeepSpeed recipe's code (docs/recipes/deepspeed.md), run for real on 2 gloo CPU ranks.

``python3 dev.py sharding record`` starts this script once per rank in DeepSpeed's cached venv and writes
rank 0's output to ``docs/recipes/deepspeed-output.txt``; the docs build includes that file (it cannot run
DeepSpeed itself). Each step below is a section of the recipe, between two ``section(...)`` calls.
"""

from __future__ import annotations

import os
import warnings
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from torch import nn

warnings.filterwarnings("ignore")
rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
os.environ.setdefault("LOCAL_RANK", str(rank))
store = "file://" + os.environ["TIEGRAPH_STORE"]
dist.init_process_group("gloo", init_method=store, rank=rank, world_size=world)

import deepspeed  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM  # noqa: E402

import tiegraph  # noqa: E402
import tiegraph.distributed  # noqa: E402
import tiegraph.sharding  # noqa: E402

if TYPE_CHECKING:
    from transformers import LlamaForCausalLM

deepspeed.init_distributed(dist_backend="gloo")


def say(*args: object) -> None:
    """Rank 0's lines of the recipe's output (DeepSpeed's own prints and logs stay out of it)."""
    if rank == 0:
        with open(os.environ["TIEGRAPH_RECIPE_OUT"], "a") as out:
            print(*args, file=out)


def section(name: str) -> None:
    """A section of the recipe: the docs include the code and the output between two of these."""
    say(f"== {name} ==")


def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = AutoConfig.for_model(
        "llama", hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, vocab_size=64, tie_word_embeddings=True,
    )  # fmt: skip
    model: LlamaForCausalLM = AutoModelForCausalLM.from_config(config)
    return model


def zero3(model: nn.Module) -> deepspeed.DeepSpeedEngine:
    config = {
        "train_batch_size": 2 * world, "train_micro_batch_size_per_gpu": 2,
        "zero_optimization": {"stage": 3}, "zero_allow_untested_optimizer": True,
    }  # fmt: skip
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    return deepspeed.initialize(model=model, optimizer=optimizer, config=config)[0]


section("preflight")
model = tiny_llama()
model.lm_head.weight = nn.Parameter(model.model.embed_tokens.weight)  # a storage tie: 2 objects, 1 storage
for finding in tiegraph.sharding.check_zero3(model):
    say(finding)

section("after")
engine = zero3(model)
for finding in tiegraph.build_graph(engine).audit():
    say(finding)

section("fixed")
model = tiny_llama()  # its tie_weights() made one Parameter under both names
say("before:", tiegraph.sharding.check_zero3(model))
engine = zero3(model)
graph = tiegraph.build_graph(engine)
say("tie groups:", graph.tie_groups(), "findings:", graph.audit())
placeholder = engine.module.lm_head.weight
embed_id = engine.module.model.embed_tokens.weight.ds_id
say("lm_head.weight data:", tuple(placeholder.data.shape), "ds_id:", placeholder.ds_id, "ds_shape:",
    tuple(placeholder.ds_shape), "embed_tokens.weight ds_id:", embed_id)  # fmt: skip

section("pipeline")
from deepspeed.pipe import LayerSpec, PipelineModule, TiedLayerSpec  # noqa: E402


def head(embedding: nn.Embedding, hidden: torch.Tensor) -> torch.Tensor:
    return hidden @ embedding.weight.t()


def loss_fn(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(logits.reshape(-1, 64), target.reshape(-1))


layers = [
    TiedLayerSpec("embed", nn.Embedding, 64, 16),
    LayerSpec(nn.Linear, 16, 16),
    LayerSpec(nn.Linear, 16, 16),
    TiedLayerSpec("embed", nn.Embedding, 64, 16, forward_fn=head),
]
pipe = PipelineModule(layers=layers, num_stages=2, loss_fn=loss_fn, partition_method="uniform")
config = {"train_batch_size": 4, "train_micro_batch_size_per_gpu": 2, "steps_per_print": 10**9}
optimizer = torch.optim.SGD(pipe.parameters(), lr=0.5)
engine = deepspeed.initialize(model=pipe, optimizer=optimizer, config=config)[0]
for finding in tiegraph.build_graph(engine).audit():
    say(f"rank {rank}:", finding)
ids = torch.arange(24).reshape(4, 6) % 64
engine.train_batch(data_iter=iter([(ids[i : i + 2], (ids[i : i + 2] + 1) % 64) for i in (0, 2)]))
say("replicas that differ after a step:", tiegraph.distributed.check_tied_replicas(pipe))
dist.barrier()
