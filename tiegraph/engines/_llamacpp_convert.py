"""llama.cpp's converter (``convert_hf_to_gguf.py``): which tensor becomes the GGUF's output head.

Read from the converter in the llama-cpp-python 0.3.36 sdist (``vendor/llama.cpp``):
``conversion/llama.py`` ``LlamaModel`` and ``conversion/qwen.py`` ``Qwen2Model`` map ``lm_head.weight`` to
``output.weight`` whenever the files hold it (``TextModel.modify_tensors``) and never read
``tie_word_embeddings``; without it the GGUF has no ``output.weight`` and the runtime reads ``token_embd``.
``conversion/gemma.py`` ``GemmaModel.filter_tensors`` skips ``lm_head.weight`` (a debug log only), so a
gemma GGUF always uses the embedding. A head of another vocabulary size is written as it is (the runtime
then refuses it). ``LlavaForConditionalGeneration``'s text model converts as ``LlamaModel``. A head bias
maps to ``output.bias`` (``gguf-py/gguf/tensor_mapping.py``), except for gemma, whose architecture has no
output tensor: ``ModelBase.map_tensor_name`` raises "Can not map tensor 'lm_head.bias'".
"""

from __future__ import annotations

from ._rule import Case, Flag, Rule, table

__all__ = ["GEMMA", "RULE", "TABLE"]

SOURCE = (
    "convert_hf_to_gguf.py, conversion/llama.py: LlamaModel (TextModel.modify_tensors); "
    "conversion/qwen.py: Qwen2Model; conversion/gemma.py: GemmaModel.filter_tensors"
)

TABLE = table(
    tied={
        "absent": Case("embedding", False, "no output.weight: the runtime reads token_embd"),
        "equal": Case(
            "folder-head", False, "lm_head.weight is written as output.weight (the flag is not read)"
        ),
        "different": Case(
            "folder-head", False, "lm_head.weight is written as output.weight (the flag is not read)"
        ),
        "mismatch": Case(
            "folder-head", False, "lm_head.weight is written as output.weight, in its own shape"
        ),
    },
)

_SKIPPED = "GemmaModel.filter_tensors skips lm_head.weight"
GEMMA = table(
    tied={
        "absent": Case("embedding", False, "gemma always reads token_embd"),
        "equal": Case("embedding", False, _SKIPPED),
        "different": Case("embedding", False, _SKIPPED + ", silently"),
        "mismatch": Case("embedding", False, _SKIPPED + ", silently"),
    },
)

RULE = Rule(
    engine="llama.cpp-convert",
    package="llama-cpp-python",
    versions=("0.3.36", "0.3.36"),
    source_ref=SOURCE,
    flag=Flag(level="merged", fallback=False),
    table=TABLE,
    architectures={"llama": None, "qwen2": None, "mistral": None, "llava": None, "gemma": GEMMA},
    companions={"bias": "kept", "gemma:bias": "load-error"},
    verified=True,
)
