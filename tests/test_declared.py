"""Declared ties: every ``_tied_weights_keys`` in the tree becomes a ``declares`` edge with a status.

Real transformers models from tiny configs (never the hub) and small custom modules. Every graph goes
through the ``build`` fixture, so ``check_invariants`` runs on each.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, ClassVar

import networkx as nx
import pytest
import torch
from models import HIDDEN, VOCAB, bart, bert_mlm, llama, lora_lm_head, modules_to_save_lm_head
from torch import nn

import tiegraph
from tiegraph._declared import STATUSES, DeclaredTie
from tiegraph._graph import TieGraph

if TYPE_CHECKING:
    from transformers import Blip2ForConditionalGeneration

# ------------------------------------------------------------------------------------- tiny modules


class DictDeclared(nn.Module):
    """A plain module with a transformers 5 style dict; ``tie`` decides whether the weights really share."""

    _tied_weights_keys: ClassVar[Any] = {"head.weight": "embed.weight"}

    def __init__(self, tie: bool = True) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, HIDDEN)
        self.head = nn.Linear(HIDDEN, VOCAB, bias=False)
        if tie:
            self.head.weight = self.embed.weight

    def get_input_embeddings(self) -> nn.Module:
        return self.embed


class ListDeclared(nn.Module):
    """A plain module with a transformers 4 style list: targets are tied to the input embedding."""

    _tied_weights_keys: ClassVar[Any] = ["head.weight"]

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, HIDDEN)
        self.head = nn.Linear(HIDDEN, VOCAB, bias=False)
        self.head.weight = self.embed.weight

    def get_input_embeddings(self) -> nn.Module:
        return self.embed


class RegexHeads(nn.Module):
    """Heads 1.. share head 0's weight and bias, declared by a regex (DFine style); ``untied`` does not."""

    _tied_weights_keys: ClassVar[Any] = {r"heads.(?![0])\d+": "heads.0"}

    def __init__(self, n: int = 3, untied: int | None = None) -> None:
        super().__init__()
        self.heads = nn.ModuleList(nn.Linear(4, 4) for _ in range(n))
        for i in range(1, n):
            if i != untied:
                self.heads[i].weight = self.heads[0].weight
                self.heads[i].bias = self.heads[0].bias


def _by_target(tg: tiegraph.TieGraph) -> dict[str, DeclaredTie]:
    return {tie.target: tie for tie in tg.declared_ties()}


def _declares(tg: tiegraph.TieGraph) -> list[tuple[str, str, dict[str, Any]]]:
    return [(u, v, d) for u, v, k, d in tg.graph.edges(keys=True, data=True) if k == "declares"]


# ------------------------------------------------------------------------------------- plain modules


def test_plain_dict_tied_and_not_tied(build: Any) -> None:
    """A plain module's dict resolves against its slots: tied when the weights share, not-tied when not."""
    tied = build(DictDeclared(tie=True)).declared_ties()
    assert [(t.target, t.source, t.status, t.declared_by) for t in tied] == [
        ("head.weight", "embed.weight", "tied", "")
    ]
    untied = build(DictDeclared(tie=False)).declared_ties()
    assert [(t.status, t.shares, t.flag, t.listed) for t in untied] == [("not-tied", False, None, None)]


def test_v4_list_ties_target_to_input_embedding(build: Any) -> None:
    """A transformers 4 list names targets only; the source is the input embedding's slot of the same attr."""
    (tie,) = build(ListDeclared()).declared_ties()
    assert (tie.target, tie.source, tie.status) == ("head.weight", "embed.weight", "tied")
    assert tie.declared_as == ("head.weight", "<input embedding>")


def test_v4_list_without_input_embedding_is_unresolved(build: Any) -> None:
    """A list on a model with no input embedding has no source: unresolved, with the reason in the note."""

    class NoEmbedding(nn.Module):
        _tied_weights_keys: ClassVar[Any] = ["head.weight"]

        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Linear(2, 2)

    (tie,) = build(NoEmbedding()).declared_ties()
    assert tie.status == "unresolved"
    assert "get_input_embeddings" in tie.note


def test_regex_key_pairs_slots_by_remaining_name(build: Any) -> None:
    """A regex key matches module prefixes; each matched slot pairs with the source slot of the same rest."""
    ties = build(RegexHeads(n=3, untied=2)).declared_ties()
    got = sorted((t.target, t.source, t.status) for t in ties)
    assert got == [
        ("heads.1.bias", "heads.0.bias", "tied"),
        ("heads.1.weight", "heads.0.weight", "tied"),
        ("heads.2.bias", "heads.0.bias", "not-tied"),
        ("heads.2.weight", "heads.0.weight", "not-tied"),
    ]
    assert {t.declared_as for t in ties} == {(r"heads.(?![0])\d+", "heads.0")}


def test_instance_attribute_and_unresolved_names(build: Any) -> None:
    """An instance ``_tied_weights_keys`` counts; a key naming nothing is one unresolved entry."""
    model = DictDeclared()
    model._tied_weights_keys = {"head.weight": "embed.weight", "missing.weight": "embed.weight"}  # type: ignore[misc]  # an instance's own, on purpose
    ties = _by_target(build(model))
    assert ties["head.weight"].status == "tied"
    assert ties["missing.weight"].status == "unresolved"
    assert "'missing.weight' names no parameter" in ties["missing.weight"].note


def test_nested_plain_declaration_is_relative_to_its_module(build: Any) -> None:
    """A declaration on a submodule names slots under it; canonical names are the model's."""
    outer = nn.Module()
    outer.body = RegexHeads(n=2)
    ties = build(outer).declared_ties()
    got = sorted((t.target, t.source, t.declared_by, t.status) for t in ties)
    assert got == [
        ("body.heads.1.bias", "body.heads.0.bias", "body", "tied"),
        ("body.heads.1.weight", "body.heads.0.weight", "body", "tied"),
    ]


def test_declares_edges_and_json_round_trip(build: Any) -> None:
    """Resolved pairs are ``declares`` edges (target -> source); entries survive a JSON round trip."""
    tg = build(RegexHeads(n=2))
    edges = _declares(tg)
    assert {(u, v) for u, v, _ in edges} == {
        ("s:heads.1.weight", "s:heads.0.weight"),
        ("s:heads.1.bias", "s:heads.0.bias"),
    }
    assert all(d["status"] == "tied" and d["kind"] == "declares" for _, _, d in edges)
    # node-link data and pydot reserve these attribute names
    assert not {"source", "target", "name", "key"} & {k for _, _, d in edges for k in d}
    data = json.loads(json.dumps(nx.node_link_data(tg.graph, edges="links")))
    back = TieGraph.from_graph(nx.node_link_graph(data, multigraph=True, directed=True, edges="links"))
    assert back.declared_ties() == tg.declared_ties()


# ------------------------------------------------------------------------------------- transformers


def test_llama_declaration_from_transformers_expansion(build: Any) -> None:
    """A tied Llama: transformers' expansion, the config flag and all_tied_weights_keys are all recorded."""
    (tie,) = build(llama(True)).declared_ties()
    assert (tie.target, tie.source, tie.status, tie.flag, tie.listed) == (
        "lm_head.weight",
        "model.embed_tokens.weight",
        "tied",
        True,
        True,
    )
    assert tie.status in STATUSES


def test_llama_flag_off_is_gated_off_but_still_reported(build: Any) -> None:
    """config.tie_word_embeddings=False gates the declaration off; it is still listed, with ``shares``."""
    (untied,) = build(llama(False)).declared_ties()
    assert (untied.status, untied.shares, untied.flag) == ("gated-off", False, False)
    model = llama(True)
    model.config.tie_word_embeddings = False
    (flipped,) = build(model).declared_ties()
    assert (flipped.status, flipped.shares) == ("gated-off", True)


def test_bart_declaration_split_between_head_and_base_model(build: Any) -> None:
    """Bart: the head declares lm_head only; BartModel declares both embed_tokens (relative to ``model``)."""
    ties = build(bart()).declared_ties()
    got = sorted((t.declared_by, t.target, t.source, t.status) for t in ties)
    assert got == [
        ("", "lm_head.weight", "model.shared.weight", "tied"),
        ("model", "model.decoder.embed_tokens.weight", "model.shared.weight", "tied"),
        ("model", "model.encoder.embed_tokens.weight", "model.shared.weight", "tied"),
    ]
    assert all(t.listed for t in ties)  # the head's all_tied_weights_keys merges BartModel's under "model."


def test_bert_mlm_bias_tie(build: Any) -> None:
    """BertForMaskedLM declares a weight tie and a non-embedding bias tie; both really share."""
    ties = _by_target(build(bert_mlm()))
    assert ties["cls.predictions.decoder.bias"].source == "cls.predictions.bias"
    assert ties["cls.predictions.decoder.bias"].status == "tied"
    assert ties["cls.predictions.decoder.weight"].source == "bert.embeddings.word_embeddings.weight"


def test_transformers_regex_keys_dfine(build: Any) -> None:
    """DFine's regex and module keys are expanded by transformers itself (meta model, default config).

    transformers 5.23 expands the module key ``bbox_embed -> model.decoder.bbox_embed`` after the regex
    ``bbox_embed.(?![0])\\d+ -> bbox_embed.0``, so the later key wins for every ``bbox_embed.N``: that is
    what it ties, and what tiegraph reports.
    """
    from transformers import DFineConfig, DFineForObjectDetection

    with torch.device("meta"):
        model = DFineForObjectDetection(
            DFineConfig(decoder_layers=2, encoder_layers=1, num_labels=3, num_queries=4)  # type: ignore[call-arg]  # (PreTrainedConfig's keyword)
        )
    ties = _by_target(build(model))
    assert ties["bbox_embed.1.layers.0.weight"].source == "model.decoder.bbox_embed.1.layers.0.weight"
    assert ties["class_embed.0.bias"].source == "model.decoder.class_embed.0.bias"
    assert {t.status for t in ties.values()} == {"tied"}
    assert ("bbox_embed", "model.decoder.bbox_embed") in {t.declared_as for t in ties.values()}


def test_unexpandable_transformers_key_is_unresolved(build: Any) -> None:
    """A regex transformers cannot expand (it raises ValueError) is one unresolved entry; the rest resolve."""
    model = llama(True)
    model._tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight", r"nothing\.\d+": "model.norm"}
    ties = build(model).declared_ties()
    assert [(t.target, t.status) for t in ties if t.status != "unresolved"] == [("lm_head.weight", "tied")]
    (bad,) = [t for t in ties if t.status == "unresolved"]
    assert bad.declared_as == (r"nothing\.\d+", "model.norm")
    assert "transformers cannot expand it" in bad.note


def _blip2(text_tie: bool) -> Blip2ForConditionalGeneration:
    from transformers import AutoConfig, Blip2Config, Blip2ForConditionalGeneration

    vision = {
        "hidden_size": HIDDEN,
        "intermediate_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
    }
    qformer = {
        "hidden_size": HIDDEN,
        "intermediate_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "encoder_hidden_size": HIDDEN,
        "vocab_size": VOCAB,
    }
    text = AutoConfig.for_model(
        "opt",
        hidden_size=HIDDEN,
        ffn_dim=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        vocab_size=VOCAB,
        max_position_embeddings=32,
        word_embed_proj_dim=HIDDEN,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=text_tie,
    )
    vision |= {"image_size": 16, "patch_size": 8}
    cfg = Blip2Config(
        vision_config=vision,
        qformer_config=qformer,
        text_config=text.to_dict(),
        num_query_tokens=2,
        image_token_index=VOCAB - 1,
    )
    return Blip2ForConditionalGeneration(cfg)


@pytest.mark.parametrize("text_tie", [True, False])
def test_blip2_tie_declared_only_on_inner_language_model(build: Any, text_tie: bool) -> None:
    """Blip-2 declares nothing at the top; the inner OPT head declares it, gated on the text config."""
    tg = build(_blip2(text_tie))
    (tie,) = tg.declared_ties()
    assert (tie.declared_by, tie.target, tie.source) == (
        "language_model",
        "language_model.lm_head.weight",
        "language_model.model.decoder.embed_tokens.weight",
    )
    assert tie.status == ("tied" if text_tie else "gated-off")
    assert tie.flag is text_tie
    flags = tg._index.tie_config
    assert flags is not None
    assert flags.tie_word_embeddings is None  # Blip2Config has no top-level flag in transformers 5.23
    assert flags.text_tie_word_embeddings is text_tie


# ------------------------------------------------------------------------------------- wrappers


def test_declaration_resolves_through_peft_and_compile(build: Any) -> None:
    """Declared names match canonical names: ``base_model.model.``, ``base_layer``, ``_orig_mod.`` resolve.

    The PeftModel forwards ``_tied_weights_keys`` to the model inside; it is read once, from the model.
    """
    (peft_tie,) = build(lora_lm_head()).declared_ties()
    assert (peft_tie.target, peft_tie.status) == ("lm_head.weight", "tied")
    assert peft_tie.target_path == "base_model.model.lm_head.base_layer.weight"
    assert peft_tie.declared_by_path == "base_model.model"
    (compiled,) = build(torch.compile(DictDeclared())).declared_ties()
    assert (compiled.target, compiled.target_path, compiled.status) == (
        "head.weight",
        "_orig_mod.head.weight",
        "tied",
    )


def test_modules_to_save_declared_ties_are_the_forwards(build: Any) -> None:
    """modules_to_save keeps original_module (tied) and an active deepcopy (not tied): the declared ties are
    judged on the copy the forward uses, so the one entry is the active copy's, not tied. The original's
    entry stays in the graph's record (its JSON ``declared`` list), marked ``original``."""
    tg = build(modules_to_save_lm_head())
    ties = tg.declared_ties()
    got = [(t.target_copy, t.status, t.target_path) for t in ties]
    assert got == [("active", "not-tied", "base_model.model.lm_head.modules_to_save.default.weight")]
    assert {t.target for t in ties} == {"lm_head.weight"}
    recorded = sorted((d["target_copy"], d["status"]) for d in tg.graph.graph["declared"])
    assert recorded == [("active", "not-tied"), ("original", "tied")]
