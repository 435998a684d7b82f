"""Which config flag governs the input embedding's ties, and whether the ties it turns on are made.

transformers gates every ``_tied_weights_keys`` on the declaring module's own config; the audit
(:mod:`tiegraph._audit`) asks here which ``tie_word_embeddings`` counts for the input embedding before it
lays the flag beside the memory.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._canonical import join

if TYPE_CHECKING:
    from ._records import TieConfig
    from ._view import GraphView

__all__ = ["FLAG", "effective_flag", "flag_honored", "governing_flag"]

#: The tie flag's name on a config.
FLAG = "config.tie_word_embeddings"


def flag_honored(view: GraphView) -> bool:
    """True when every tie the flag turns on is made and none of them pairs the input embedding.

    Then an untied input embedding is what the model's own code does for this configuration (Marian with
    ``share_encoder_decoder_embeddings=False`` ties its head to the decoder's embedding, not to the
    encoder's, which ``get_input_embeddings()`` returns), and setting the flag False would untie, on the
    next reload, the ties it does turn on.
    """
    ie = set(view.input_embedding_slots)
    on = [d for d in view.declarations if d.tie.flag and d.resolved]
    return bool(on) and all(
        d.tie.status == "tied" and d.target_slot not in ie and d.source_slot not in ie for d in on
    )


def governing_flag(view: GraphView) -> tuple[str, bool | None]:
    """The tie flag that governs the input embedding's ties, and its name (None: no flag governs them).

    transformers gates every ``_tied_weights_keys`` on the declaring module's own config, so in a composite
    model (a language model inside a vision-language model, the decoder of an encoder-decoder) the flag that
    counts is that submodel's (text) config's, not the top-level one. In order:

    1. the flag of the declarations that pair a slot of the input embedding (on if any of them is on);
    2. else the flag of the deepest declaring module that holds the input embedding;
    3. else, when no declaration has a config flag (none at all, or plain modules' own), the top-level flag
       (its text config's when it has none): :func:`effective_flag`.

    An input embedding beside which only other submodels declare ties (the encoder's embedding of an
    encoder-decoder whose decoder ties its head) is governed by no flag.

    Examples
    --------
    A vision-encoder-decoder model sets its top-level flag to False, while its decoder (GPT-2 here)
    declares and ties its own head under its own config:

    >>> import tiegraph
    >>> from tiegraph._graph import view_of
    >>> from transformers import AutoConfig, VisionEncoderDecoderConfig, VisionEncoderDecoderModel
    >>> vit = AutoConfig.for_model("vit", hidden_size=16, intermediate_size=16, num_hidden_layers=1,
    ...                            num_attention_heads=2, image_size=16, patch_size=8)
    >>> gpt2 = AutoConfig.for_model("gpt2", n_embd=16, n_layer=1, n_head=2, vocab_size=64, n_positions=16)
    >>> model = VisionEncoderDecoderModel(VisionEncoderDecoderConfig.from_encoder_decoder_configs(vit, gpt2))
    >>> model.config.tie_word_embeddings, model.decoder.config.tie_word_embeddings
    (False, True)
    >>> governing_flag(view_of(tiegraph.build_graph(model)))
    ('decoder.config.tie_word_embeddings', True)
    """
    ie = set(view.input_embedding_slots)
    flagged = [d for d in view.declarations if d.tie.flag is not None]
    pairing = [d.tie for d in flagged if d.resolved and (d.target_slot in ie or d.source_slot in ie)]
    if pairing:
        chosen = next((t for t in pairing if t.flag), pairing[0])
        return join(chosen.declared_by, FLAG), chosen.flag
    embedding = view.tg.input_embedding() or ""
    holding = [
        d.tie for d in flagged if not d.tie.declared_by or embedding.startswith(d.tie.declared_by + ".")
    ]
    if holding:
        deepest = max(holding, key=lambda t: t.declared_by.count(".") + bool(t.declared_by))
        return join(deepest.declared_by, FLAG), deepest.flag
    if flagged:
        return FLAG, None
    return effective_flag(view.tie_config)


def effective_flag(flags: TieConfig) -> tuple[str, bool | None]:
    """The flag transformers reads for the top-level tie: the config's own, else its text config's."""
    if flags.tie_word_embeddings is not None:
        return "config.tie_word_embeddings", flags.tie_word_embeddings
    if flags.text_tie_word_embeddings is not None:
        return "config.text_config.tie_word_embeddings", flags.text_tie_word_embeddings
    return "config.tie_word_embeddings", None
