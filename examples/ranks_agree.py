"""Do all ranks agree on what is tied? Run with: torchrun --nproc-per-node 2 examples/ranks_agree.py

Every rank builds a tiny tied Llama, shards it with FSDP2 ``fully_shard`` (gloo, CPU) and asks tiegraph for
its ties; then rank 1 unties its head, as a bad reload would, and the ranks are checked again.
"""

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import fully_shard
from transformers import AutoConfig, AutoModelForCausalLM

import tiegraph
import tiegraph.distributed

dist.init_process_group("gloo")
rank = dist.get_rank()
config = AutoConfig.for_model(
    "llama",
    hidden_size=16,
    intermediate_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=2,
    vocab_size=64,
    tie_word_embeddings=True,
)
torch.manual_seed(0)
model = AutoModelForCausalLM.from_config(config)
for layer in model.model.layers:
    fully_shard(layer)
fully_shard(model)

tg = tiegraph.build_graph(model)  # parameters are DTensors now; nothing is gathered
found = tiegraph.distributed.check_ranks_agree(model)  # a collective: every rank calls it
if rank == 0:
    print(type(model).__name__, tg.tie_groups(), tg.tied_to_input_embedding())
    print("disagreements:", found)

if rank == 1:  # rank 1 unties its head
    model.lm_head.weight = nn.Parameter(model.lm_head.weight.detach().clone())
found = tiegraph.distributed.check_ranks_agree(model)  # the same list on every rank
if rank == 0:
    for disagreement in found:
        print(disagreement)
dist.destroy_process_group()
