"""The hand-off: what each consumer's head will hold when it loads a folder.

A folder written by one tool is loaded by another, and each consumer (transformers 4 and 5, vLLM,
llama.cpp, MLX, ONNX Runtime GenAI, optimum, SGLang) decides by its own rule whether the output head is the
input embedding, the folder's own head, or something else. :func:`outcomes` applies every consumer's rule
to a folder (read from ``config.json`` and safetensors headers only), a hub id in the local hub cache, or a
model in memory (what ``save_pretrained`` will write for it), and says where a consumer's head is not
the head the folder means. Each rule is data read from the consumer's source (``source_ref``) for the
versions it names (``rule_version``); ``verified`` says whether it was checked against the real consumer.

>>> import json, tempfile, torch
>>> from safetensors.torch import save_file
>>> import tiegraph.engines
>>> d = tempfile.mkdtemp()
>>> _ = open(f"{d}/config.json", "w").write(json.dumps({"model_type": "llama", "tie_word_embeddings": True}))
>>> save_file({"model.embed_tokens.weight": torch.zeros(8, 4), "lm_head.weight": torch.ones(8, 4)},
...           f"{d}/model.safetensors")
>>> [(o.engine, o.head) for o in tiegraph.engines.outcomes(d, engines=["transformers-5", "transformers-4"])]
[('transformers-5', 'folder-head'), ('transformers-4', 'embedding')]
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from . import (
    _llamacpp_convert,
    _llamacpp_runtime,
    _mlx,
    _optimum_onnx,
    _ort_genai,
    _sglang,
    _transformers4,
    _transformers5,
    _vllm,
)
from ._facts import HEAD_STATES, FolderError, FolderFacts, folder_facts, tie_flags
from ._kinds import KINDS, SEVERITY, findings
from ._lint import folder_findings
from ._outcome import EngineOutcome, intended_head, predict
from ._rule import OUTCOMES, Case, Flag, Rule

if TYPE_CHECKING:
    from torch import nn

    from .._finding import Finding

__all__ = [
    "ENGINE_IDS",
    "HEAD_STATES",
    "KINDS",
    "OUTCOMES",
    "RULES",
    "SEVERITY",
    "Case",
    "EngineOutcome",
    "Flag",
    "FolderError",
    "FolderFacts",
    "Rule",
    "findings",
    "folder_facts",
    "intended_head",
    "lint",
    "outcomes",
    "tie_flags",
]

#: Every consumer a rule is kept for, in output order.
ENGINE_IDS: tuple[str, ...] = (
    "transformers-5",
    "transformers-4",
    "vllm",
    "llama.cpp-convert",
    "llama.cpp-runtime",
    "mlx-lm",
    "ort-genai-builder",
    "optimum-onnx",
    "sglang",
)

#: engine id -> its rule.
RULES: dict[str, Rule] = {
    rule.engine: rule
    for rule in (
        _transformers5.RULE,
        _transformers4.RULE,
        _vllm.RULE,
        _llamacpp_convert.RULE,
        _llamacpp_runtime.RULE,
        _mlx.RULE,
        _ort_genai.RULE,
        _optimum_onnx.RULE,
        _sglang.RULE,
    )
}


def _engines(engines: Sequence[str] | None) -> list[str]:
    if engines is None:
        return [e for e in ENGINE_IDS if e in RULES]
    if isinstance(engines, str):
        engines = [engines]
    unknown = [e for e in engines if e not in RULES]
    if unknown:
        raise FolderError(
            f"unknown engine {', '.join(map(repr, unknown))}: choose from {', '.join(e for e in RULES)}"
        )
    return list(engines)


def outcomes(
    source: str | os.PathLike[str] | FolderFacts | nn.Module,
    *,
    engines: Sequence[str] | None = None,
    check_values: bool = False,
) -> list[EngineOutcome]:
    """What each consumer's head will hold after it loads ``source``.

    Parameters
    ----------
    source
        A folder written by ``save_pretrained``, a hub id present in the local hub cache (read offline,
        headers only), :class:`FolderFacts`, or an ``nn.Module`` (a transformers model: the folder
        ``save_pretrained`` will write for it is predicted, nothing is written).
    engines
        Engine ids (:data:`ENGINE_IDS`), default every one with a rule.
    check_values
        Compare the head with the input embedding by value where only values decide (reads those two
        tensors); otherwise such a consumer's outcome may be ``unknown``.

    Returns
    -------
    list of EngineOutcome
        One per engine, in :data:`ENGINE_IDS` order (or the order given).

    Raises
    ------
    FolderError
        If the folder or hub id cannot be read, or an engine id is unknown.
    """
    chosen = _engines(engines)
    if isinstance(source, FolderFacts):
        facts = source
    elif isinstance(source, (str, os.PathLike)):
        facts = folder_facts(source, check_values=check_values)
    else:
        from ._model import model_facts

        facts = model_facts(source, check_values=check_values)
    return [predict(RULES[e], facts) for e in chosen]


def lint(source: str | os.PathLike[str] | FolderFacts) -> list[Finding]:
    """Findings about a folder's config that consumers read differently.

    Today one kind: ``tie-flag-missing-defaults-disagree``.

    Examples
    --------
    >>> import json, tempfile, torch
    >>> from safetensors.torch import save_file
    >>> d = tempfile.mkdtemp()
    >>> _ = open(f"{d}/config.json", "w").write(json.dumps({"model_type": "llama"}))  # no tie_word_embeddings
    >>> save_file({"model.embed_tokens.weight": torch.zeros(8, 4)}, f"{d}/model.safetensors")
    >>> [f.kind for f in lint(d)]
    ['tie-flag-missing-defaults-disagree']
    """
    facts = source if isinstance(source, FolderFacts) else folder_facts(source)
    return folder_findings(facts, list(RULES.values()))
