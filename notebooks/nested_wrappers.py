# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Weight tying through nested wrappers
#
# A tied language model shares one tensor between its input embedding and its output layer. Wrappers
# (PEFT, `torch.compile`, your own training wrapper) rename that tensor, wrap it, copy it, or tie new
# adapters alongside it. This notebook wraps one tiny tied Llama step by step and asks tiegraph, at each
# step, what *really* shares memory.
#
# Every step shows the picture (the tie group of the input embedding: the modules owning each slot as
# nested boxes, the storage as a cylinder, `shares` edges in blue, declared ties in green or red) and the
# answers to the queries. The models are built from configs with tiny sizes; nothing is downloaded.
#
# This notebook is stored twice: `nested_wrappers.ipynb`, executed, with its pictures and answers, and
# `nested_wrappers.py`, the [jupytext](https://jupytext.readthedocs.io) "percent" script it is made from
# (`python3 dev.py notebooks` re-executes the one into the other). The test suite executes it.

# %%
import warnings

import torch
from IPython.display import SVG, display
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, LlamaForCausalLM

import tiegraph

warnings.filterwarnings("ignore")  # tiny configs and tied embeddings make transformers and peft chatty
torch.manual_seed(0)

TINY_LLAMA = dict(
    hidden_size=16,
    intermediate_size=32,
    num_hidden_layers=1,
    num_attention_heads=2,
    num_key_value_heads=1,
    vocab_size=64,
    max_position_embeddings=32,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
)


def tiny_llama(tie_word_embeddings: bool = True) -> LlamaForCausalLM:
    """A one-layer Llama with hidden size 16, built from a config."""
    config = AutoConfig.for_model("llama", tie_word_embeddings=tie_word_embeddings, **TINY_LLAMA)
    model: LlamaForCausalLM = AutoModelForCausalLM.from_config(config)
    return model


def answers(tg: tiegraph.TieGraph) -> None:
    """Print what the queries say, canonical names first, then the full names of the wrapped model."""
    full = tg.input_embedding(full_paths=True)
    print("input embedding:       ", tg.input_embedding(), "| full path:", full)
    print("tied to it (canonical):", tg.tied_to_input_embedding())
    print("tied to it (full):     ", tg.tied_to_input_embedding(full_paths=True))
    print("tie groups:")
    for group in tg.tie_groups():
        print("    ", group)
    for tie in tg.declared_ties():
        where = f"   (full: {tie.target_path})" if tie.target_path != tie.target else ""
        print(f"declared: {tie.target} -> {tie.source}: {tie.status}{where}")


# %% [markdown]
# ## 1. A tied Llama
#
# `tie_word_embeddings=True`: `lm_head.weight` *is* `model.embed_tokens.weight` (one parameter object).

# %%
model = tiny_llama()
tg = tiegraph.build_graph(model)
answers(tg)
display(tg)

# %% [markdown]
# ## 2. PEFT LoRA on `lm_head`
#
# LoRA replaces `lm_head` by a tuner layer: the original `Linear` moves to `lm_head.base_layer`, and the
# whole model moves under `base_model.model`. The tie survives; the names change. Canonical names drop the
# wrapper segments (dashed boxes), so the answer is still `['lm_head']`, the name PEFT's own
# `_get_module_names_tied_with_embedding` expects.

# %%
from peft import LoraConfig, get_peft_model  # noqa: E402

lora = get_peft_model(tiny_llama(), LoraConfig(r=2, target_modules=["lm_head", "q_proj"]))
tg = tiegraph.build_graph(lora)
answers(tg)
display(tg)

# %% [markdown]
# ## 3. LoRA on both ends with `ensure_weight_tying=True`
#
# PEFT now ties the *adapters* too, through transposed views: `lm_head.lora_A` reads the memory of
# `embed_tokens.lora_embedding_B` and `lm_head.lora_B` that of `lora_embedding_A`. Three tie groups, all
# touching the input embedding; the dashed blue edges are views.

# %%
tied_adapters = get_peft_model(
    tiny_llama(), LoraConfig(r=2, target_modules=["embed_tokens", "lm_head"], ensure_weight_tying=True)
)
tg = tiegraph.build_graph(tied_adapters)
answers(tg)
display(tg)

# %% [markdown]
# ## 4. `modules_to_save=["lm_head"]`: the untie made visible
#
# PEFT keeps the original `lm_head` (still tied) and trains a deep copy,
# `lm_head.modules_to_save.default`, which is the one the forward pass uses. Both are named
# `lm_head.weight` canonically; the copy the forward uses decides every answer, so nothing is tied any more.
# The original, which the forward no longer uses, is drawn beside it as a fact of its own (the red dotted
# edge joins two slots with one name and different memory), and its full path asks about it from memory.
# After training, the saved `lm_head.weight` is no longer the embedding.

# %%
saved = get_peft_model(tiny_llama(), LoraConfig(r=2, target_modules=["q_proj"], modules_to_save=["lm_head"]))
tg = tiegraph.build_graph(saved)
answers(tg)
print("the unused original:   ", tg.component("base_model.model.lm_head.original_module", full_paths=True))
display(tg)

# %% [markdown]
# ## 5. `torch.compile` and a user's own wrapper
#
# `torch.compile` puts the model under `_orig_mod`; a training wrapper adds its own attribute (`net`
# here). Wrappers are recognised by type, so canonical names stay those of the model.


# %%
class TrainingWrapper(nn.Module):
    """What a training loop might wrap the model in."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net


compiled = torch.compile(TrainingWrapper(tiny_llama()))
assert isinstance(compiled, nn.Module)  # an OptimizedModule: the model under `_orig_mod`
tg = tiegraph.build_graph(compiled)
answers(tg)
display(tg)

# %% [markdown]
# ## 6. T5: a four-way share
#
# `shared`, `encoder.embed_tokens`, `decoder.embed_tokens` and `lm_head` are one tensor.

# %%
t5_config = AutoConfig.for_model(
    "t5",
    d_model=16,
    d_ff=32,
    d_kv=8,
    num_layers=1,
    num_decoder_layers=1,
    num_heads=2,
    vocab_size=64,
    decoder_start_token_id=0,
    pad_token_id=0,
    eos_token_id=2,
)
tg = tiegraph.build_graph(AutoModelForSeq2SeqLM.from_config(t5_config))
answers(tg)
display(tg)

# %% [markdown]
# ## 7. A model whose declaration lies
#
# The config says `tie_word_embeddings=True` and the model declares `lm_head.weight` tied to the
# embedding, but `lm_head.weight` has been replaced by a copy (as happens when a checkpoint with its own
# `lm_head.weight` is loaded, or when someone reassigns it). Declarations and configs cannot tell; memory
# can. The picture draws the declared tie in red, between two slots that read two different storages.

# %%
liar = tiny_llama()
liar.lm_head.weight = nn.Parameter(liar.lm_head.weight.detach().clone())
print("config.tie_word_embeddings:", liar.config.tie_word_embeddings)
tg = tiegraph.build_graph(liar)
answers(tg)
display(tg)

# %% [markdown]
# ## 8. A 70B-shaped Llama on the meta device
#
# Nothing is allocated on `meta`, and tiegraph reads no tensor data, so the real shapes cost nothing. The
# default picture shows only the tie group; `show="all"` draws the whole model, with the 80 identical
# decoder layers (nothing tied in them) collapsed into one node.

# %%
big_config = AutoConfig.for_model(
    "llama",
    num_hidden_layers=80,
    hidden_size=8192,
    intermediate_size=28672,
    num_attention_heads=64,
    num_key_value_heads=8,
    vocab_size=128256,
    tie_word_embeddings=True,
)
with torch.device("meta"):
    big = AutoModelForCausalLM.from_config(big_config)
tg = tiegraph.build_graph(big)
answers(tg)
display(SVG(tg.to_svg(show="all")))

# %% [markdown]
# ## 9. Keep the graph: JSON
#
# `to_json()` is networkx node-link data plus a format version; `TieGraph.from_json` reloads it and every
# query gives the same answers. `write()` picks the format by suffix (`.dot`, `.svg`, `.png`, `.pdf`,
# `.json`).

# %%
import json  # noqa: E402

text = json.dumps(tg.to_json())
again = tiegraph.TieGraph.from_json(json.loads(text))
print(f"{len(text) / 1024:.0f} KiB of JSON")
assert again.tied_to_input_embedding() == tg.tied_to_input_embedding() == ["lm_head"]
assert again.tie_groups() == tg.tie_groups()
display(again)
