"""MLX (``mlx-lm``): what the head holds after ``mlx_lm.load`` loads a folder.

Read from mlx-lm 0.32.2: ``mlx_lm/models/llama.py`` (and ``qwen2.py``) ``ModelArgs`` reads the top level of
``config.json`` with ``tie_word_embeddings`` defaulting to True; ``Model.__init__`` makes an ``lm_head`` only
when untied, and ``Model.sanitize`` pops ``lm_head.weight`` when tied, so a saved head is dropped without a
word. ``mlx_lm/utils.py`` ``load_model`` loads with ``strict=True``: a missing untied head, a head of another
shape or a tensor the model has no place for (``lm_head.bias``; any head for ``models/gemma.py``, which always
reads the embedding: mlx-lm PR#1298) fails the load. A LLaVA folder is loaded as its language model:
``mlx_lm/utils.py`` ``MODEL_REMAPPING`` sends ``llava`` to ``models/mistral3.py``, whose ``ModelArgs`` reads
``text_config`` alone (no key there: untied) and builds ``llama.Model`` from it; ``Model.sanitize`` drops the
vision tower and strips the ``language_model`` prefix.
"""

from __future__ import annotations

from ._rule import Case, Flag, Rule, table

__all__ = ["RULE"]

SOURCE = (
    "mlx_lm/models/llama.py: ModelArgs, Model.__init__, Model.sanitize; "
    "mlx_lm/models/gemma.py: Model; mlx_lm/utils.py: load_model (strict=True), MODEL_REMAPPING; "
    "mlx_lm/models/mistral3.py: ModelArgs, Model.sanitize (llava)"
)

_POPPED = "Model.sanitize pops lm_head.weight"

TABLE = table(
    tied={
        "absent": Case("embedding", False, "the head is the embedding (as_linear)"),
        "equal": Case("embedding", False, _POPPED),
        "different": Case("embedding", False, _POPPED + ", silently"),
        "mismatch": Case("embedding", False, _POPPED + ", silently"),
    },
    untied={
        "absent": Case("load-error", True, "strict load: lm_head.weight missing"),
        "equal": Case("folder-head", False),
        "different": Case("folder-head", False),
        "mismatch": Case("load-error", True, "strict load: lm_head.weight has another shape"),
    },
)

_NO_PLACE = "strict load: lm_head.weight is not a parameter of the gemma model"
GEMMA = table(
    tied={
        "absent": Case("embedding", False, "the gemma model always reads the embedding"),
        "equal": Case("load-error", True, _NO_PLACE),
        "different": Case("load-error", True, _NO_PLACE),
        "mismatch": Case("load-error", True, _NO_PLACE),
    },
)

RULE = Rule(
    engine="mlx-lm",
    package="mlx-lm",
    versions=("0.32.2", "0.32.2"),
    source_ref=SOURCE,
    flag=Flag(
        level="text", defaults={"llama": True, "qwen2": True, "gemma": True}, text_defaults={"llava": False}
    ),
    table=TABLE,
    architectures={"llama": None, "qwen2": None, "gemma": GEMMA, "llava": None},
    companions={"bias": "load-error"},
    verified=True,
)
