"""optimum's ONNX export (``optimum-onnx``): the head of the exported model.

Read from optimum-onnx 0.1.0: it requires ``transformers<4.58`` and exports the model
``from_pretrained`` loads (``optimum/exporters/onnx``), so the head is what transformers 4.57 loads
(:mod:`tiegraph.engines._transformers4`); ``optimum/onnx/transformations_utils.py``
``_get_weights_to_tie`` then deduplicates only what the loaded torch model ties.
"""

from __future__ import annotations

from dataclasses import replace

from . import _transformers4

__all__ = ["RULE"]

RULE = replace(
    _transformers4.RULE,
    engine="optimum-onnx",
    package="optimum-onnx",
    versions=("0.1", "0.1"),
    source_ref=(
        "optimum/exporters/onnx (loads with transformers 4.57 from_pretrained); "
        "optimum/onnx/transformations_utils.py: _get_weights_to_tie; then " + _transformers4.SOURCE
    ),
    verified=True,
    unsupported={
        "llava": "optimum-onnx 0.1 has no ONNX export config for llava "
        "(optimum/exporters/onnx/model_configs.py); task text-generation fails in AutoModelForCausalLM "
        "(Unrecognized configuration class LlavaConfig)"
    },
)
