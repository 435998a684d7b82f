"""transformers 5 ``from_pretrained``: what the head holds after load.

Read from ``transformers/modeling_utils.py`` (5.24): ``PreTrainedModel.tie_weights(missing_keys=...)``,
called by ``from_pretrained`` once the files are loaded, ties each pair of
``get_expanded_tied_weights_keys()`` (empty unless the model's own ``config.tie_word_embeddings``, the top
level, is True; the config class supplies the default when ``config.json`` has no key, and
``LlavaConfig.__post_init__`` adopts a True ``text_config`` value). When both tensors are in the files it
compares them (``_tied_params_are_equal``): equal ones are tied, different ones are left apart with a
warning. A head missing from an untied folder is initialised randomly and listed as MISSING in the load
report; a head of another shape fails the load (MISMATCH, ``ignore_mismatched_sizes=False``); a head bias
the model has no place for is UNEXPECTED and dropped.
"""

from __future__ import annotations

from ._rule import Case, Flag, Rule, table

__all__ = ["RULE", "TABLE"]

SOURCE = (
    "transformers/modeling_utils.py: PreTrainedModel.tie_weights (from_pretrained's missing_keys branch), "
    "get_expanded_tied_weights_keys, _tied_params_are_equal"
)

TABLE = table(
    tied={
        "absent": Case("embedding", False, "the head is tied to the embedding"),
        "equal": Case("embedding", False, "both saved with equal values: tied"),
        "different": Case("folder-head", True, "both saved with different values: not tied, with a warning"),
        "mismatch": Case("load-error", True, "the head's shape differs from the model's: size mismatch"),
    },
    untied={
        "absent": Case("random", True, "lm_head.weight MISSING: initialised randomly"),
        "equal": Case("folder-head", False),
        "different": Case("folder-head", False),
        "mismatch": Case("load-error", True, "the head's shape differs from the model's: size mismatch"),
    },
)

RULE = Rule(
    engine="transformers-5",
    package="transformers",
    versions=("5.24", "5.24"),
    source_ref=SOURCE,
    flag=Flag(level="top", defaults="transformers"),
    table=TABLE,
    companions={"bias": "dropped-warns", "final_logits_bias": "kept"},
    verified=True,
)
