"""The ONNX Runtime GenAI model builder: the head and the embedding of the ONNX model it builds.

Read from onnxruntime-genai 0.18.0: ``onnxruntime_genai/models/builders/base.py`` ``Model.load_weights``
loads an unquantized folder with transformers' ``AutoModelForCausalLM.from_pretrained`` (transformers 5), so
the head is what transformers 5 loads (:mod:`tiegraph.engines._transformers5`). ``builder.py`` sets
``shared_embeddings`` to the config's top-level ``tie_word_embeddings``, and then
``Model.make_embedding_lookup`` builds the input embedding from the head's matrix (``lm_head.MatMul.weight``
transposed): when transformers left a different saved head untied, the ONNX model's input embedding is
that head (onnxruntime-genai#2306).
"""

from __future__ import annotations

from . import _transformers5
from ._rule import Case, Flag, Rule

__all__ = ["RULE"]

SOURCE = (
    "onnxruntime_genai/models/builder.py: create_model (shared_embeddings); "
    "models/builders/base.py: Model.load_weights, make_tied_embeddings_init, make_embedding_lookup"
)

TABLE = {
    **_transformers5.TABLE,
    (True, "different"): Case(
        "embedding-replaced",
        True,
        "transformers keeps the different head; shared_embeddings then reads the embedding from the head",
    ),
}

RULE = Rule(
    engine="ort-genai-builder",
    package="onnxruntime-genai",
    versions=("0.18", "0.18"),
    source_ref=SOURCE,
    flag=Flag(level="top", defaults="transformers", transformers="5"),
    table=TABLE,
    architectures={"llama": None, "qwen2": None, "gemma": None, "mistral": None},
    companions={"bias": "dropped-warns"},
    verified=True,
    unsupported={
        "llava": "onnxruntime_genai/models/builder.py create_model has no branch for "
        "LlavaForConditionalGeneration: 'The <folder> model is not currently supported'"
    },
)
