"""Real transformers models from tiny configs: input embedding, tied targets and tie groups.

Every expectation below was read from the real model in transformers 5.23 (``named_parameters(
remove_duplicate=False)``, object identity and storage), not from ``_tied_weights_keys`` or the config
flag. The models are unwrapped, so canonical and full paths are the same strings.

Each model is built three ways: on CPU, under ``torch.device("meta")`` (identity ties kept) and under
``accelerate.init_empty_weights()`` (identity ties broken by the patched ``register_parameter``, the meta
storage kept). The answers are the same, except where the real structure differs (Bert's bias, below).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest
import torch
from models import MODELS, llama_declared_but_copied, llama_flag_flipped_off, llama_tied
from torch import nn

import tiegraph

if TYPE_CHECKING:
    from transformers import PreTrainedModel

# The embedding tie every Llama-shaped case checks.
_LLAMA_GROUP = [["lm_head.weight", "model.embed_tokens.weight"]]


@dataclass(frozen=True)
class Expect:
    """The true answers for one model (canonical == full: no wrappers)."""

    input_embedding: str
    tied: list[str]
    groups: list[list[str]]
    why: str
    # Per build mode overrides of ``groups`` where the real structure differs in that mode.
    groups_in_mode: dict[str, list[list[str]]] = field(default_factory=dict)


#: model name (a key of ``models.MODELS``) -> the truth.
EXPECTED: dict[str, Expect] = {
    "llama-tied": Expect(
        "model.embed_tokens",
        ["lm_head"],
        _LLAMA_GROUP,
        "tie_word_embeddings=True: post_init sets lm_head.weight = model.embed_tokens.weight (one object)",
    ),
    "llama-untied": Expect(
        "model.embed_tokens",
        [],
        [],
        "Llama defaults to untied: two Parameters, two storages",
    ),
    "llama-flag-flipped-off": Expect(
        "model.embed_tokens",
        ["lm_head"],
        _LLAMA_GROUP,
        "config.tie_word_embeddings=False after construction unties nothing; peft answers [] here",
    ),
    "llama-declared-but-copied": Expect(
        "model.embed_tokens",
        [],
        [],
        "lm_head.weight = Parameter(w.clone()): declared (flag on, all_tied_weights_keys) but not tied; "
        "peft answers ['lm_head'] from the declaration",
    ),
    "llama-tied-undeclared": Expect(
        "model.embed_tokens",
        ["lm_head"],
        _LLAMA_GROUP,
        "tied by hand on an untied config: a real tie nothing declares; peft answers []",
    ),
    "gemma": Expect(
        "model.embed_tokens",
        ["lm_head"],
        _LLAMA_GROUP,
        "Gemma ties by default",
    ),
    "gpt2": Expect(
        "transformer.wte",
        ["lm_head"],
        [["lm_head.weight", "transformer.wte.weight"]],
        "GPT-2: the input embedding is transformer.wte (via base_model), tied to lm_head",
    ),
    "t5": Expect(
        "shared",
        ["decoder.embed_tokens", "encoder.embed_tokens", "lm_head"],
        [["decoder.embed_tokens.weight", "encoder.embed_tokens.weight", "lm_head.weight", "shared.weight"]],
        "T5: four names, one tensor; get_input_embeddings() is `shared` (transformers#48154)",
    ),
    "bart": Expect(
        "model.shared",
        ["lm_head", "model.decoder.embed_tokens", "model.encoder.embed_tokens"],
        [
            [
                "lm_head.weight",
                "model.decoder.embed_tokens.weight",
                "model.encoder.embed_tokens.weight",
                "model.shared.weight",
            ]
        ],
        "Bart: the head declares only lm_head, BartModel adds encoder/decoder embed_tokens: one tensor",
    ),
    "whisper": Expect(
        "model.decoder.embed_tokens",
        ["proj_out"],
        [["model.decoder.embed_tokens.weight", "proj_out.weight"]],
        "Whisper: get_input_embeddings() -> model.get_input_embeddings() -> decoder.embed_tokens (the "
        "encoder reads audio through convs, it has no token embedding); the output is proj_out, not lm_head",
    ),
    "llava": Expect(
        "model.language_model.embed_tokens",
        ["lm_head"],
        [["lm_head.weight", "model.language_model.embed_tokens.weight"]],
        "Llava: the embedding sits under model.language_model; the top-level tie flag decides "
        "(text_config.tie_word_embeddings stays False)",
    ),
    "bert-mlm": Expect(
        "bert.embeddings.word_embeddings",
        ["cls.predictions.decoder"],
        [
            ["bert.embeddings.word_embeddings.weight", "cls.predictions.decoder.weight"],
            ["cls.predictions.bias", "cls.predictions.decoder.bias"],
        ],
        "BertForMaskedLM ties decoder.weight to the word embeddings AND decoder.bias to predictions.bias: "
        "two separate groups, and the bias group is not tied to the input embedding",
        groups_in_mode={
            # transformers' tie_weights -> _adjust_bias assigns `decoder.bias.data = pad(bias.data, ...)`,
            # a new tensor. On CPU/meta both names hold one Parameter object, so the tie survives; under
            # init_empty_weights accelerate's register_parameter made decoder.bias a *new* Parameter over
            # the same storage, and the .data assignment then gives it a storage of its own: really untied.
            "init_empty_weights": [
                ["bert.embeddings.word_embeddings.weight", "cls.predictions.decoder.weight"],
            ],
        },
    ),
}

assert set(EXPECTED) == set(MODELS), "every model in the table has an expectation"


def _init_empty_weights() -> contextlib.AbstractContextManager[None]:
    from accelerate import init_empty_weights

    manager: contextlib.AbstractContextManager[None] = init_empty_weights()
    return manager


#: how a model is built: mode name -> context manager factory.
MODES: dict[str, Callable[[], contextlib.AbstractContextManager[object]]] = {
    "cpu": contextlib.nullcontext,
    "meta": lambda: torch.device("meta"),
    "init_empty_weights": _init_empty_weights,
}


@dataclass
class Case:
    name: str
    mode: str
    model: PreTrainedModel
    tg: tiegraph.TieGraph
    expect: Expect
    devices_before: list[tuple[str, str]]

    @property
    def groups(self) -> list[list[str]]:
        return self.expect.groups_in_mode.get(self.mode, self.expect.groups)


@pytest.fixture(
    scope="module",
    params=[(name, mode) for mode in MODES for name in MODELS],
    ids=lambda p: f"{p[0]}-{p[1]}",
)
def case(request: pytest.FixtureRequest, build: Callable[..., tiegraph.TieGraph]) -> Case:
    """One model, built once per module, shared by the tests below."""
    name, mode = request.param
    torch.manual_seed(0)
    with MODES[mode]():
        model = MODELS[name]()
    before = _devices(model)
    return Case(name, mode, model, build(model), EXPECTED[name], before)


def _devices(model: nn.Module) -> list[tuple[str, str]]:
    named = [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]
    return [(name, t.device.type) for name, t in named]


def test_input_embedding(case: Case) -> None:
    """The input embedding is the module the model's own get_input_embeddings() returns, at its first path."""
    expected = case.expect.input_embedding
    assert case.tg.input_embedding() == expected, case.expect.why
    assert case.tg.input_embedding(full_paths=True) == expected, case.expect.why
    # and that is the model's own answer (guards the table against transformers changing underneath it)
    own = case.model.get_input_embeddings()
    assert case.model.get_submodule(expected) is own


def test_tied_to_input_embedding(case: Case) -> None:
    """Tied targets come from real sharing, not from the config flag or _tied_weights_keys."""
    assert case.tg.tied_to_input_embedding() == case.expect.tied, case.expect.why
    assert case.tg.tied_to_input_embedding(full_paths=True) == case.expect.tied, case.expect.why


def test_module_level_tied_to_input_embedding(case: Case) -> None:
    """``tiegraph.tied_to_input_embedding(model)`` (peft's question) gives the canonical answer."""
    assert tiegraph.tied_to_input_embedding(case.model) == case.expect.tied, case.expect.why


def test_tie_groups(case: Case) -> None:
    """Tie groups are components of real sharing over slots (bias and weight groups stay apart)."""
    assert case.tg.tie_groups() == case.groups, case.expect.why
    assert case.tg.tie_groups(full_paths=True) == case.groups, case.expect.why


def test_nothing_materialised(case: Case) -> None:
    """No slot moves device during analysis; meta and init_empty_weights parameters stay on meta."""
    assert _devices(case.model) == case.devices_before
    if case.mode != "cpu":
        # init_empty_weights leaves buffers (position ids, rotary freqs) on CPU: include_buffers=False.
        assert {p.device.type for p in case.model.parameters()} == {"meta"}
    if case.mode == "meta":
        assert {b.device.type for b in case.model.buffers()} <= {"meta"}


# ------------------------------------------------------------------------------------ premises


def test_init_empty_weights_breaks_identity_keeps_storage() -> None:
    """accelerate#init_empty_weights: ``lm_head.weight is not embed_tokens.weight`` but one meta storage.

    This is the premise of the init_empty_weights rows above: identity-based tools (accelerate's
    find_tied_parameters) see no tie here, tiegraph must see it through the storage object.
    """
    from accelerate import init_empty_weights

    with init_empty_weights():
        model = llama_tied()
    emb, head = model.model.embed_tokens.weight, model.lm_head.weight
    assert emb is not head
    assert emb.untyped_storage()._cdata == head.untyped_storage()._cdata


def test_flag_flipped_model_still_shares_one_object() -> None:
    """The flipped-flag model really is tied: the premise of ``llama-flag-flipped-off``."""
    model = llama_flag_flipped_off()
    assert model.config.tie_word_embeddings is False
    assert model.lm_head.weight is model.model.embed_tokens.weight


def test_declared_but_copied_is_declared() -> None:
    """The copied model still declares the tie: the premise of ``llama-declared-but-copied``."""
    model = llama_declared_but_copied()
    assert model.config.tie_word_embeddings is True
    assert model.all_tied_weights_keys == {"lm_head.weight": "model.embed_tokens.weight"}
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()


# ------------------------------------------------------------------------------------ component


@pytest.fixture(scope="module")
def t5_graph(build: Callable[..., tiegraph.TieGraph]) -> tiegraph.TieGraph:
    torch.manual_seed(0)
    return build(MODELS["t5"]())


@pytest.fixture(scope="module")
def bert_graph(build: Callable[..., tiegraph.TieGraph]) -> tiegraph.TieGraph:
    torch.manual_seed(0)
    return build(MODELS["bert-mlm"]())


T5_GROUP = EXPECTED["t5"].groups[0]


@pytest.mark.parametrize("name", ["shared.weight", "lm_head.weight", "encoder.embed_tokens", "lm_head"])
def test_component_t5(t5_graph: tiegraph.TieGraph, name: str) -> None:
    """T5: from any of the four names (slot or module), the component is all four slots."""
    assert t5_graph.component(name) == T5_GROUP
    assert t5_graph.component(name, full_paths=True) == T5_GROUP


def test_component_module_spans_two_groups(bert_graph: tiegraph.TieGraph) -> None:
    """Bert's cls.predictions.decoder holds one slot in each group: its component is both groups' slots,
    while the groups themselves stay separate (components over slots, never over modules)."""
    weight_group, bias_group = EXPECTED["bert-mlm"].groups
    assert bert_graph.component("cls.predictions.decoder") == sorted(weight_group + bias_group)
    assert bert_graph.component("cls.predictions.decoder.bias") == bias_group
    assert bert_graph.component("cls.predictions.decoder.weight") == weight_group
    assert len(bert_graph.tie_groups()) == 2
