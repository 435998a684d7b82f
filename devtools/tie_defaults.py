"""Print ``model_type -> tie_word_embeddings`` as an installed transformers resolves a config without the key.

Run with the transformers whose defaults a rule models (no torch needed: config classes only), e.g. in a
venv with ``transformers==4.57.6``: ``python devtools/tie_defaults.py``. The model types it prints as False
are :data:`tiegraph.engines._transformers4.UNTIED_BY_DEFAULT`; ``null`` marks a config class that cannot be
built without arguments (composite configs).
"""

from __future__ import annotations

import json
import logging
import warnings


def main() -> None:
    """Print the defaults as JSON: ``{"version": ..., "defaults": {model_type: bool | null}}``."""
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    import transformers
    from transformers import CONFIG_MAPPING

    out: dict[str, bool | None] = {}
    for model_type in sorted(CONFIG_MAPPING.keys()):
        try:
            text = CONFIG_MAPPING[model_type]().get_text_config(decoder=True)
        except Exception:  # composite configs need their parts
            out[model_type] = None
            continue
        out[model_type] = bool(getattr(text, "tie_word_embeddings", True))
    print(json.dumps({"version": transformers.__version__, "defaults": out}, indent=1))


if __name__ == "__main__":
    main()
