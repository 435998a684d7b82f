"""SGLang: what the head holds after it loads a folder (read from its source; it does not run here).

Read from sglang 0.5.23 (the wheel, ``pip download --no-deps``): ``sglang/srt/models/llama.py``
``LlamaForCausalLM.__init__`` uses ``embed_tokens`` as ``lm_head`` when ``config.tie_word_embeddings`` (the
transformers 5.19 config class) is True, and ``_legacy_load_weights`` (the default loader,
``SGLANG_ENABLE_WEIGHT_LOADER_V2`` off) skips ``lm_head.weight`` then, drops a ``.bias`` the model has no
place for, and checks nothing afterwards: an untied folder without a head leaves ``ParallelLMHead``'s
memory as allocated. ``models/gemma.py`` ``GemmaForCausalLM`` has no head of its own (always the embedding)
and skips ``lm_head.weight``. SGLang installs only with CUDA, so this rule is not verified here.
"""

from __future__ import annotations

from ._rule import Case, Flag, Rule, table

__all__ = ["RULE"]

SOURCE = (
    "sglang/srt/models/llama.py: LlamaForCausalLM.__init__, _legacy_load_weights; "
    "sglang/srt/models/gemma.py: GemmaForCausalLM.load_weights"
)

TABLE = table(
    tied={
        "absent": Case("embedding", False, "lm_head is the embedding module"),
        "equal": Case("embedding", False, "lm_head.weight is skipped"),
        "different": Case("embedding", False, "lm_head.weight is skipped, silently"),
        "mismatch": Case("embedding", False, "lm_head.weight is skipped, silently"),
    },
    untied={
        "absent": Case("uninitialised", False, "ParallelLMHead is never loaded, and nothing checks"),
        "equal": Case("folder-head", False),
        "different": Case("folder-head", False),
        "mismatch": Case("load-error", True, "the head's vocabulary size differs (weight_loader assertion)"),
    },
)

_GEMMA_SKIPS = "GemmaForCausalLM has no head of its own; lm_head.weight is skipped"
GEMMA = table(
    tied={
        "absent": Case("embedding", False, "GemmaForCausalLM has no head of its own"),
        "equal": Case("embedding", False, _GEMMA_SKIPS),
        "different": Case("embedding", False, _GEMMA_SKIPS + ", silently"),
        "mismatch": Case("embedding", False, _GEMMA_SKIPS + ", silently"),
    },
)

RULE = Rule(
    engine="sglang",
    package="sglang",
    versions=("0.5.23", "0.5.23"),
    source_ref=SOURCE,
    flag=Flag(level="text", defaults="transformers", transformers="5"),
    table=TABLE,
    architectures={"llama": None, "mistral": None, "gemma": GEMMA},
    companions={"bias": "dropped"},
)
