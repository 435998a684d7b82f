"""Real PEFT (0.21) wrappers over a tied tiny Llama.

Canonical answers are the plain model names (``lm_head``); full answers are the real paths, read from the
wrapped models with ``named_parameters(remove_duplicate=False)`` / ``named_buffers``. The structures these
tables pin (peft 0.21.2, transformers 5.23):

* LoRA on ``lm_head``: ``lm_head`` becomes a ``lora.Linear``; the tied weight is ``lm_head.base_layer.weight``
  (the same object as ``model.embed_tokens.weight``); ``lora_A``/``lora_B`` are fresh.
* ``ensure_weight_tying=True`` on ``embed_tokens`` + ``lm_head``: three groups. The base weights are one
  object; the adapters are *not* the same objects but transposed views over one storage:
  ``lm_head.lora_A.default.weight`` (2, 16) reads ``embed_tokens.lora_embedding_B.default`` (16, 2), and
  ``lm_head.lora_B.default.weight`` (64, 2) reads ``embed_tokens.lora_embedding_A.default`` (2, 64).
* ``modules_to_save=["lm_head"]``: ``lm_head`` is a ``ModulesToSaveWrapper``; ``original_module.weight`` is
  still the embedding's object; the active copy ``modules_to_save.default.weight`` is a deepcopy, tied to
  nothing (peft#2777). The copy the forward uses decides every answer, so nothing is tied.
* ``modules_to_save=["embed_tokens"]``: the input embedding itself is the wrapper; ``lm_head.weight`` is
  tied to its ``original_module.weight``, not to the active copy the forward embeds with: nothing is tied.
  peft's own helper answers ``[]`` too.
* ``modules_to_save=["lm_head"]`` with ``ensure_weight_tying=True``: peft saves ``embed_tokens`` as well and
  gives the ``lm_head`` copy the embedding copy's weight; the originals are tied to each other, and so are
  the copies the forward uses, which decide.
* ``TrainableTokensConfig`` on ``embed_tokens`` of a tied model: peft wraps the tied ``lm_head`` too
  (``TrainableTokensLayer``, a tuner layer); three groups: ``base_layer.weight``, the
  ``trainable_tokens_delta`` ParameterDict entry (one object in both layers) and the
  ``trainable_tokens_original`` BufferDict entry (a shared *buffer*).
* LoRA with ``trainable_token_indices``: the same, one ``token_adapter`` level deeper
  (``TrainableTokensWrapper``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest
import torch
from models import PEFT_MODELS, llama
from torch import nn

import tiegraph
import tiegraph.testing

if TYPE_CHECKING:
    from peft import PeftModel

P = "base_model.model."  # PeftModel.base_model (LoraModel/...Model) .model (LlamaForCausalLM)


def _full(names: list[str]) -> list[str]:
    return [P + n for n in names]


@dataclass(frozen=True)
class Expect:
    why: str
    tied_full: list[str]
    groups: list[list[str]]  # canonical
    groups_full: list[list[str]]
    tied: tuple[str, ...] = ("lm_head",)
    input_embedding: str = "model.embed_tokens"

    @property
    def input_embedding_full(self) -> str:
        return P + self.input_embedding


_BASE_GROUP = ["lm_head.weight", "model.embed_tokens.weight"]


def _trainable_tokens(why: str, layer: str) -> Expect:
    """Trainable tokens on a tied embedding: three groups, ``layer`` is where the TrainableTokensLayer sits
    under ``lm_head`` / ``model.embed_tokens`` ("" or "token_adapter.")."""
    head, emb = f"lm_head.{layer}", f"model.embed_tokens.{layer}"
    delta, original = "trainable_tokens_delta", "trainable_tokens_original"
    return Expect(
        why,
        tied_full=_full([head + "base_layer", head + delta, head + original]),
        groups=[
            [f"lm_head.{delta}.default", f"model.embed_tokens.{delta}.default"],
            [f"lm_head.{original}.default", f"model.embed_tokens.{original}.default"],
            _BASE_GROUP,
        ],
        groups_full=[
            _full([head + "base_layer.weight", emb + "base_layer.weight"]),
            _full([f"{head}{delta}.default", f"{emb}{delta}.default"]),
            _full([f"{head}{original}.default", f"{emb}{original}.default"]),
        ],
    )


#: PEFT model name (a key of ``models.PEFT_MODELS``) -> the truth.
EXPECTED: dict[str, Expect] = {
    "lora-lm-head": Expect(
        "LoRA on lm_head: the tied weight moves to lm_head.base_layer.weight (peft#2902, peft#2922)",
        tied_full=_full(["lm_head.base_layer"]),
        groups=[_BASE_GROUP],
        groups_full=[_full(["lm_head.base_layer.weight", "model.embed_tokens.weight"])],
    ),
    "lora-ensure-weight-tying": Expect(
        "ensure_weight_tying: adapters tied by transposed views, a storage tie without object identity",
        tied_full=_full(["lm_head.base_layer", "lm_head.lora_A.default", "lm_head.lora_B.default"]),
        groups=[
            ["lm_head.lora_A.default.weight", "model.embed_tokens.lora_embedding_B.default"],
            ["lm_head.lora_B.default.weight", "model.embed_tokens.lora_embedding_A.default"],
            _BASE_GROUP,
        ],
        groups_full=[
            _full(["lm_head.base_layer.weight", "model.embed_tokens.base_layer.weight"]),
            _full(["lm_head.lora_A.default.weight", "model.embed_tokens.lora_embedding_B.default"]),
            _full(["lm_head.lora_B.default.weight", "model.embed_tokens.lora_embedding_A.default"]),
        ],
    ),
    "modules-to-save-lm-head": Expect(
        "peft#2777: modules_to_save deep-copies lm_head; the copy the forward uses is tied to nothing (only "
        "original_module, which it no longer uses, still is)",
        tied_full=[],
        groups=[],
        groups_full=[],
        tied=(),
    ),
    "modules-to-save-embed-tokens": Expect(
        "modules_to_save on the embedding: lm_head shares with embed_tokens.original_module, not with the "
        "active copy the forward embeds with; peft's helper answers [] too",
        tied_full=[],
        groups=[],
        groups_full=[],
        tied=(),
    ),
    "modules-to-save-ensure-weight-tying": Expect(
        "ensure_weight_tying with modules_to_save: the lm_head copy holds the embedding copy's weight, so "
        "the copies the forward uses are tied (the originals too, but they count in no answer)",
        tied_full=_full(["lm_head.modules_to_save.default"]),
        groups=[_BASE_GROUP],
        groups_full=[
            _full(
                [
                    "lm_head.modules_to_save.default.weight",
                    "model.embed_tokens.modules_to_save.default.weight",
                ]
            )
        ],
    ),
    "trainable-tokens": _trainable_tokens(
        "trainable tokens on a tied embedding: peft wraps lm_head too and shares base weight, delta "
        "parameter and original-values buffer",
        layer="",
    ),
    "lora-trainable-token-indices": _trainable_tokens(
        "LoRA trainable_token_indices: TrainableTokensWrapper.token_adapter is a wrapper segment too",
        layer="token_adapter.",
    ),
}

assert set(EXPECTED) == set(PEFT_MODELS), "every PEFT model in the table has an expectation"

MODES = ["cpu", "meta"]


@dataclass
class Case:
    name: str
    mode: str
    model: nn.Module
    tg: tiegraph.TieGraph
    expect: Expect


@pytest.fixture(
    scope="module",
    params=[(name, mode) for mode in MODES for name in PEFT_MODELS],
    ids=lambda p: f"{p[0]}-{p[1]}",
)
def case(request: pytest.FixtureRequest, build: Callable[..., tiegraph.TieGraph]) -> Case:
    """One PEFT model over a fresh tied Llama, built once per module."""
    name, mode = request.param
    torch.manual_seed(0)
    with torch.device(mode):
        model = PEFT_MODELS[name]()
    return Case(name, mode, model, build(model), EXPECTED[name])


def test_real_paths(case: Case) -> None:
    """The full names in the table are real: every slot of every full group exists in the wrapped model."""
    slots = {n for n, _ in case.model.named_parameters(remove_duplicate=False)}
    slots |= {n for n, _ in case.model.named_buffers(remove_duplicate=False)}
    modules = {n for n, _ in case.model.named_modules(remove_duplicate=False)}
    assert {s for group in case.expect.groups_full for s in group} <= slots
    assert set(case.expect.tied_full) <= modules
    assert case.expect.input_embedding_full in modules


def test_input_embedding(case: Case) -> None:
    """The input embedding is found through the PeftModel and tuner (unwrapped by type): canonical
    ``model.embed_tokens``, full the real path (the wrapper layer itself when the embedding is adapted)."""
    assert case.tg.input_embedding() == case.expect.input_embedding, case.expect.why
    assert case.tg.input_embedding(full_paths=True) == case.expect.input_embedding_full, case.expect.why


def test_tied_to_input_embedding(case: Case) -> None:
    """Canonical answer: the plain model name; full answer: every real module path owning a shared slot."""
    assert case.tg.tied_to_input_embedding() == list(case.expect.tied), case.expect.why
    assert case.tg.tied_to_input_embedding(full_paths=True) == case.expect.tied_full, case.expect.why


def test_module_level_tied_to_input_embedding(case: Case) -> None:
    """``tiegraph.tied_to_input_embedding(peft_model)``: peft's question, answered in canonical names."""
    assert tiegraph.tied_to_input_embedding(case.model) == list(case.expect.tied), case.expect.why
    full = tiegraph.tied_to_input_embedding(case.model, full_paths=True)
    assert full == case.expect.tied_full, case.expect.why


def test_function_and_method_take_the_same_arguments() -> None:
    """``tiegraph.tied_to_input_embedding(model, full_paths=True)`` raised TypeError while the method of the
    same name accepted it: the function takes the method's arguments, and the graph builder's."""
    import inspect

    method = set(inspect.signature(tiegraph.TieGraph.tied_to_input_embedding).parameters) - {"self"}
    function = set(inspect.signature(tiegraph.tied_to_input_embedding).parameters) - {"model"}
    assert method <= function


def test_tie_groups(case: Case) -> None:
    """Tie groups over slots: full names are the real paths, canonical names drop PEFT's wrapper segments
    (``base_model.model``, ``base_layer``, ``original_module``, ``token_adapter``) and keep adapter names."""
    assert case.tg.tie_groups(full_paths=True) == case.expect.groups_full, case.expect.why
    assert case.tg.tie_groups() == case.expect.groups, case.expect.why


@pytest.mark.parametrize(
    "how",
    ["module", "canonical", "full"],
)
def test_input_embedding_argument_forms(
    case: Case, how: str, build: Callable[..., tiegraph.TieGraph]
) -> None:
    """``input_embedding=`` accepts the module object, its canonical path or its full path: same answers."""
    forms: dict[str, nn.Module | str] = {
        "module": case.model.get_submodule(case.expect.input_embedding_full),
        "canonical": case.expect.input_embedding,
        "full": case.expect.input_embedding_full,
    }
    arg = forms[how]
    tg = build(case.model, input_embedding=arg)
    assert tg.input_embedding(full_paths=True) == case.expect.input_embedding_full
    assert tg.tied_to_input_embedding() == list(case.expect.tied)
    assert tg.tied_to_input_embedding(full_paths=True) == case.expect.tied_full


# ------------------------------------------------------------------------------------ premises and details


def _storage_key(t: torch.Tensor) -> int:
    return t.untyped_storage()._cdata if t.device.type == "meta" else t.untyped_storage().data_ptr()


@pytest.mark.parametrize("mode", MODES)
def test_ensure_weight_tying_is_storage_without_identity(
    mode: str, build: Callable[..., tiegraph.TieGraph]
) -> None:
    """peft ensure_weight_tying: ``lora_A.weight = Parameter(emb.lora_embedding_B.t())`` is a transposed view,
    a storage tie without object identity, on CPU and on meta (storage-object identity)."""
    with torch.device(mode):
        model = PEFT_MODELS["lora-ensure-weight-tying"]()
    tuned: Any = model.base_model.model  # (PEFT's layers: nn.Module's attributes type them Tensor | Module)
    emb = tuned.model.embed_tokens
    head = tuned.lm_head
    for head_w, emb_w in [
        (head.lora_A["default"].weight, emb.lora_embedding_B["default"]),
        (head.lora_B["default"].weight, emb.lora_embedding_A["default"]),
    ]:
        assert head_w is not emb_w
        assert head_w.shape == emb_w.t().shape
        assert _storage_key(head_w) == _storage_key(emb_w)
    tg = build(model)
    assert [
        P + "lm_head.lora_A.default.weight",
        P + "model.embed_tokens.lora_embedding_B.default",
    ] in tg.tie_groups(full_paths=True)


@pytest.fixture(scope="module")
def mts_lm_head(build: Callable[..., tiegraph.TieGraph]) -> tuple[PeftModel, tiegraph.TieGraph]:
    torch.manual_seed(0)
    model = PEFT_MODELS["modules-to-save-lm-head"]()
    return model, build(model)


def test_modules_to_save_active_copy_untied(mts_lm_head: tuple[PeftModel, tiegraph.TieGraph]) -> None:
    """peft#2777: the active ``modules_to_save.default`` copy shares with nothing (config still says tied)."""
    model, tg = mts_lm_head
    active = P + "lm_head.modules_to_save.default.weight"
    assert model.get_parameter(active) is not model.get_input_embeddings().weight
    tuned: Any = model.base_model.model  # (the wrapped Llama: nn.Module's attributes type it Tensor | Module)
    assert tuned.config.tie_word_embeddings is True
    assert all(active not in group for group in tg.tie_groups(full_paths=True))
    assert P + "lm_head.modules_to_save.default" not in tg.tied_to_input_embedding(full_paths=True)


def test_peft_helper_disagrees_where_reference_says() -> None:
    """peft's ``_get_module_names_tied_with_embedding`` answers current paths (``lm_head.base_layer``) for
    LoRA, where tiegraph answers ``["lm_head"]``; for modules_to_save on embed_tokens both answer ``[]`` (the
    embedding copy the forward uses is tied to nothing)."""
    from peft.utils.other import _get_module_names_tied_with_embedding

    torch.manual_seed(0)
    mts = PEFT_MODELS["modules-to-save-embed-tokens"]()
    lora = PEFT_MODELS["lora-lm-head"]()
    assert _get_module_names_tied_with_embedding(mts) == []
    assert _get_module_names_tied_with_embedding(lora) == ["lm_head.base_layer"]
    assert tiegraph.tied_to_input_embedding(mts) == []
    assert tiegraph.tied_to_input_embedding(lora) == ["lm_head"]


@pytest.mark.parametrize("kind", ["prompt-tuning", "prefix-tuning", "p-tuning"])
def test_prompt_learning_word_embeddings_alias_is_the_input_embedding(kind: str) -> None:
    """PEFT prompt learning registers the input embedding again as ``PeftModel.word_embeddings``: that alias
    is the input embedding, not a tied target, and a fresh model has no finding (``--strict`` passes)."""
    from peft import PrefixTuningConfig, PromptEncoderConfig, PromptTuningConfig, TaskType, get_peft_model

    config = {
        "prompt-tuning": PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=4),
        "prefix-tuning": PrefixTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=4),
        "p-tuning": PromptEncoderConfig(
            task_type=TaskType.CAUSAL_LM, num_virtual_tokens=4, encoder_hidden_size=8
        ),
    }[kind]
    model = get_peft_model(llama(True), config)
    assert model.word_embeddings is model.get_input_embeddings()
    tg = tiegraph.build_graph(model)
    assert tg.tied_to_input_embedding() == ["lm_head"]
    assert tg.tied_to_input_embedding(full_paths=True) == ["base_model.lm_head"]
    assert tiegraph.tied_to_input_embedding(model) == ["lm_head"]
    assert tg.audit() == []
    tiegraph.testing.assert_no_findings(model)
    untied = get_peft_model(llama(False), config)  # an untied model is still reported as untied
    assert tiegraph.build_graph(untied).tied_to_input_embedding() == []
