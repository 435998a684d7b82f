"""transformers 4 ``from_pretrained``: what the head holds after load.

Read from ``transformers/modeling_utils.py`` (4.57): ``from_pretrained`` builds the model and calls
``tie_weights()``, loads the files key by key (``_load_state_dict_into_meta_model`` replaces each
parameter, which undoes the tie), then calls ``tie_weights()`` again.
``tie_embeddings_and_encoder_decoder`` ties the output embedding to the input embedding when
``config.get_text_config(decoder=True).tie_word_embeddings`` is True, so a saved head is replaced by the
embedding without a word. ``_find_missing_and_unexpected_keys`` drops a tied head from the missing keys;
an untied missing head is initialised randomly with the "Some weights ... were not initialized" warning;
a head of another shape fails the load (``_find_mismatched_keys``, size mismatch).
The defaults for a ``config.json`` without the key are the 4.57.6 config classes' own, read by running
them (``devtools/tie_defaults.py``): True except for the model types in :data:`UNTIED_BY_DEFAULT`.
"""

from __future__ import annotations

from ._rule import Case, Flag, Rule, table

__all__ = ["RULE", "TABLE", "UNTIED_BY_DEFAULT"]

SOURCE = (
    "transformers/modeling_utils.py: PreTrainedModel.from_pretrained (tie_weights after loading), "
    "tie_embeddings_and_encoder_decoder, _find_missing_and_unexpected_keys"
)

#: Model types whose transformers 4.57.6 config class (its text sub-config for multimodal ones) defaults
#: ``tie_word_embeddings`` to False. Every other model type defaults to True (``PretrainedConfig``).
UNTIED_BY_DEFAULT = frozenset(
    {
        "apertus", "arcee", "aria", "aria_text", "bamba", "bitnet", "blt", "chameleon", "code_llama",
        "codegen", "colqwen2", "csm", "dbrx", "deepseek_v2", "deepseek_v3", "deepseek_vl",
        "deepseek_vl_hybrid", "diffllama", "doge", "dots1", "emu3", "evolla", "exaone4", "falcon_h1",
        "flex_olmo", "fuyu", "git", "glm", "glm4", "glm4_moe", "glm4v", "glm4v_moe", "glm4v_moe_text",
        "glm4v_text", "gpt_neox", "gpt_oss", "gptj", "granite", "granite_speech", "granitemoe",
        "granitemoehybrid", "granitemoeshared", "granitevision", "helium", "hunyuan_v1_dense",
        "hunyuan_v1_moe", "idefics", "idefics2", "idefics3", "imagegpt", "internvl", "jamba", "janus",
        "kyutai_speech_to_text", "llama", "llama4", "llama4_text", "llava", "llava_next",
        "llava_next_video", "llava_onevision", "longcat_flash", "mamba2", "minimax", "ministral", "mistral",
        "mistral3", "mixtral", "mllama", "moshi", "mt5", "nemotron", "olmo", "olmo2", "olmo3", "olmoe",
        "open-llama", "ovis2", "perception_lm", "persimmon", "phi", "phi3", "phi4_multimodal", "phimoe",
        "pix2struct", "qwen2", "qwen2_5_omni", "qwen2_5_vl", "qwen2_5_vl_text", "qwen2_audio", "qwen2_moe",
        "qwen2_vl", "qwen2_vl_text", "qwen3", "qwen3_moe", "qwen3_next", "qwen3_omni_moe", "qwen3_vl",
        "qwen3_vl_moe", "qwen3_vl_moe_text", "qwen3_vl_text", "reformer", "rembert", "rwkv", "seed_oss",
        "smolvlm", "stablelm", "video_llava", "vilt", "vipllava", "voxtral", "xlstm"
    }
)  # fmt: skip

TABLE = table(
    tied={
        "absent": Case("embedding", False, "the head is tied to the embedding"),
        "equal": Case("embedding", False, "the saved head is replaced by the embedding (equal values)"),
        "different": Case("embedding", False, "the saved head is replaced by the embedding, silently"),
        "mismatch": Case("load-error", True, "the head's shape differs from the model's: size mismatch"),
    },
    untied={
        "absent": Case("random", True, "lm_head.weight not in the files: initialised randomly"),
        "equal": Case("folder-head", False),
        "different": Case("folder-head", False),
        "mismatch": Case("load-error", True, "the head's shape differs from the model's: size mismatch"),
    },
)

RULE = Rule(
    engine="transformers-4",
    package="transformers",
    versions=("4.57", "4.57"),
    source_ref=SOURCE,
    flag=Flag(
        level="text", defaults=dict.fromkeys(UNTIED_BY_DEFAULT, False), fallback=True, transformers="4"
    ),
    table=TABLE,
    companions={"bias": "dropped-warns", "final_logits_bias": "kept"},
    verified=True,
)
