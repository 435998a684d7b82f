"""tiegraph.compat: the drop-ins for PEFT, accelerate and safetensors, their import cost and the opt-in.

Side-by-side cases where the peers answer wrongly live in ``test_compat_peers.py``.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import pytest
import torch
from models import llama
from torch import nn

from tiegraph.compat import (
    find_shared_tensors,
    find_tied_parameters,
    get_module_names_tied_with_embedding,
    patched,
    tie_groups,
)

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import LlamaForCausalLM

HEAVY = ("transformers", "networkx", "pydot", "peft", "accelerate", "safetensors")


def test_compat_imports_and_runs_with_torch_alone() -> None:
    """``import tiegraph.compat`` and a call of each drop-in load none of tiegraph's heavy dependencies.

    torch itself imports pydot when it is installed (``torch.fx.passes.graph_drawer``), so what counts is
    what tiegraph adds to the modules ``import torch`` loaded.
    """
    script = textwrap.dedent(
        f"""
        import sys, torch
        before = {{m.split(".")[0] for m in sys.modules}}
        import tiegraph.compat as c
        class Tiny(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.embed = torch.nn.Embedding(8, 4)
                self.head = torch.nn.Linear(4, 8, bias=False)
                self.head.weight = self.embed.weight
            def get_input_embeddings(self):
                return self.embed
        m = Tiny()
        assert c.find_tied_parameters(m) == [["embed.weight", "head.weight"]]
        assert c.get_module_names_tied_with_embedding(m) == ["head"]
        assert c.find_shared_tensors(m.state_dict()) == [{{"embed.weight", "head.weight"}}]
        added = {{m.split(".")[0] for m in sys.modules}} - before
        print(sorted(added & set({HEAVY!r})))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


# ------------------------------------------------------------------------------------------ accelerate


def _sequential(n: int) -> nn.Sequential:
    return nn.Sequential(OrderedDict((f"linear{i}", nn.Linear(3, 4)) for i in range(1, n + 1)))


def _tie(model: nn.Module, target: str, source: str) -> None:
    """``model.<target>.weight = model.<source>.weight``."""
    model.get_submodule(target).weight = model.get_parameter(f"{source}.weight")


def _accelerate_cases() -> list[nn.Module]:
    """accelerate's own ``test_find_tied_parameters`` models (tests/test_modeling_utils.py, 1.15.0)."""
    a = _sequential(4)
    _tie(a, "linear2", "linear1")
    b = _sequential(4)
    _tie(b, "linear2", "linear1")
    _tie(b, "linear4", "linear1")
    c = _sequential(5)
    _tie(c, "linear1", "linear4")
    _tie(c, "linear2", "linear3")
    _tie(c, "linear5", "linear2")
    d = nn.Sequential(OrderedDict([("block1", _sequential(4)), ("block2", _sequential(4))]))
    _tie(d, "block1.linear1", "block2.linear1")
    layer = nn.Linear(10, 10)
    return [_sequential(4), a, b, c, d, nn.Sequential(layer, layer), llama(True), llama(False)]


@pytest.mark.parametrize("split", ["layout", "object"])
@pytest.mark.parametrize("case", range(8))
def test_find_tied_parameters_matches_accelerate_on_identity_ties(case: int, split: str) -> None:
    from accelerate.utils import find_tied_parameters as peer

    model = _accelerate_cases()[case]
    assert sorted(find_tied_parameters(model, split=split)) == sorted(peer(model))  # type: ignore[arg-type]


def test_find_tied_parameters_ignores_accelerate_recursion_keywords() -> None:
    model = _sequential(2)
    _tie(model, "linear2", "linear1")
    assert find_tied_parameters(model, named_parameters=None, prefix="") == [
        ["linear1.weight", "linear2.weight"]
    ]


def test_tie_groups_splits() -> None:
    m = nn.Module()
    m.embed = nn.Embedding(8, 4)
    m.head = nn.Linear(4, 8, bias=False)
    m.head.weight = m.embed.weight
    m.copy = nn.Linear(4, 8, bias=False)
    m.copy.weight = nn.Parameter(m.embed.weight.detach())  # same layout, another object
    m.proj = nn.Linear(8, 4, bias=False)
    m.proj.weight = nn.Parameter(m.embed.weight.detach().t())  # transposed: same bytes, other layout
    m.register_buffer("table", m.embed.weight.detach()[:2])
    names = ["embed.weight", "head.weight", "copy.weight", "proj.weight"]
    assert tie_groups(m) == [names]
    assert tie_groups(m, parameters_only=False) == [["table", *names]]  # (slot order: the root first)
    assert tie_groups(m, split="layout") == [names[:3]]
    assert tie_groups(m, split="object") == [names[:2]]
    with pytest.raises(ValueError, match="split must be one of"):
        tie_groups(m, split="bytes")  # type: ignore[arg-type]


def test_find_tied_parameters_finds_init_empty_weights_ties() -> None:
    """Under ``init_empty_weights`` every registration of a tied weight is a new meta Parameter."""
    from accelerate import init_empty_weights
    from accelerate.utils import find_tied_parameters as peer

    with init_empty_weights():
        model = llama(True)
    assert model.lm_head.weight is not model.model.embed_tokens.weight
    assert peer(model) == []
    assert find_tied_parameters(model) == [["lm_head.weight", "model.embed_tokens.weight"]]
    assert find_tied_parameters(model, split="object") == []


# ------------------------------------------------------------------------------------------------ PEFT


def test_peft_drop_in_names_like_peft_on_peft_models() -> None:
    from peft import LoraConfig, TrainableTokensConfig, get_peft_model
    from peft.utils.other import _get_module_names_tied_with_embedding as peer

    configs = [
        LoraConfig(r=2, target_modules=["q_proj"]),
        LoraConfig(r=2, target_modules=["lm_head", "q_proj"]),
        LoraConfig(r=2, target_modules=["embed_tokens", "lm_head"], ensure_weight_tying=True),
        TrainableTokensConfig(target_modules=["embed_tokens"], token_indices=[1, 2]),
    ]
    for config in configs:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = get_peft_model(llama(True), config)
        # PEFT's dict form names a wrapped head by its inner base_layer; the drop-in by the wrapper
        expected = [name.removesuffix(".base_layer") for name in peer(model)]
        assert get_module_names_tied_with_embedding(model) == expected, config
        assert get_module_names_tied_with_embedding(model.base_model) == expected, config


def test_peft_drop_in_config_switch() -> None:
    model = llama(True)
    model.config.tie_word_embeddings = False  # tied in memory, the flag says no
    assert get_module_names_tied_with_embedding(model) == []
    assert get_module_names_tied_with_embedding(model, config_false_wins=False) == ["lm_head"]


def test_peft_drop_in_without_input_embedding() -> None:
    assert get_module_names_tied_with_embedding(_sequential(2)) == []


# ----------------------------------------------------------------------------------------- safetensors


def test_find_shared_tensors_peer_shape_and_order() -> None:
    from safetensors.torch import _find_shared_tensors as peer

    a = torch.zeros(4)
    cases: list[dict[str, Any]] = [
        {"A": a, "B": a[:1]},
        {"B": a[:2], "C": a[2:]},
        {"B": a[:2], "C": a[1:]},
        {"B": a[:2], "C": a[2:], "D": a[:1]},
        {"C": torch.zeros(2, 2, device="meta")},
        nn.Linear(3, 3).state_dict(),
        _accelerate_cases()[5].state_dict(),
    ]
    for state_dict in cases:
        assert find_shared_tensors(state_dict) == peer(state_dict), state_dict.keys()


def test_find_shared_tensors_exact_mode() -> None:
    x = torch.zeros(10)
    meta = torch.zeros(4, 4, device="meta")
    state_dict = {
        "even": x[::2],
        "odd": x[1::2],
        "m": meta,
        "mt": meta.t(),
        "other": torch.zeros(2, device="meta"),
    }
    assert find_shared_tensors(state_dict) == [{"even", "odd"}]
    assert find_shared_tensors(state_dict, exact=True) == [{"even"}, {"odd"}, {"m", "mt"}, {"other"}]


def test_find_shared_tensors_follows_wrapper_subclasses() -> None:
    dense = torch.eye(3)
    sparse = dense.to_sparse()
    groups = find_shared_tensors({"values": sparse.values(), "sparse": sparse, "dense": dense})
    assert {"values", "sparse"} in groups


def test_find_shared_tensors_rejects_non_tensors() -> None:
    with pytest.raises(TypeError, match="'w' is a list"):
        find_shared_tensors({"w": [1, 2]})  # type: ignore[dict-item]


# -------------------------------------------------------------------------------------------- opting in

_PEFT_HOLDERS = ("peft.utils.other", "peft.tuners.tuners_utils")
_ACCELERATE_HOLDERS = (
    "accelerate.utils.modeling",
    "accelerate.utils",
    "accelerate.big_modeling",
    "accelerate.utils.bnb",
)


def _held(holders: tuple[str, ...], name: str) -> list[Any]:
    import importlib

    return [getattr(importlib.import_module(h), name) for h in holders]


def test_patched_swaps_every_reference_and_restores_exactly() -> None:
    import peft  # noqa: F401 -- loads every module that imports the helper by name
    import safetensors.torch

    peft_before = _held(_PEFT_HOLDERS, "_get_module_names_tied_with_embedding")
    acc_before = _held(_ACCELERATE_HOLDERS, "find_tied_parameters")
    st_before = safetensors.torch._find_shared_tensors
    with patched(safetensors=True):
        peft_inside = _held(_PEFT_HOLDERS, "_get_module_names_tied_with_embedding")
        acc_inside = _held(_ACCELERATE_HOLDERS, "find_tied_parameters")
        assert all(f.func is get_module_names_tied_with_embedding for f in peft_inside)
        assert all(f.func is find_tied_parameters for f in acc_inside)
        assert safetensors.torch._find_shared_tensors.func is find_shared_tensors  # type: ignore[attr-defined]
    assert _held(_PEFT_HOLDERS, "_get_module_names_tied_with_embedding") == peft_before
    assert _held(_ACCELERATE_HOLDERS, "find_tied_parameters") == acc_before
    assert safetensors.torch._find_shared_tensors is st_before


def test_patched_restores_after_an_error() -> None:
    import accelerate.big_modeling

    before = accelerate.big_modeling.find_tied_parameters
    with pytest.raises(RuntimeError, match="boom"), patched():
        raise RuntimeError("boom")
    assert accelerate.big_modeling.find_tied_parameters is before


def _peft_model(model: nn.Module, config: Any) -> PeftModel:
    from peft import get_peft_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # peft warns about adapting tied and embedding layers: the point here
        peft_model: PeftModel = get_peft_model(model, config)
        return peft_model


def _lora_both(seed: int = 0) -> Any:
    from peft import LoraConfig

    torch.manual_seed(seed)
    return LoraConfig(
        r=2, target_modules=["embed_tokens", "lm_head"], ensure_weight_tying=True, init_lora_weights=False
    )


def _pair(tied: bool = True) -> tuple[LlamaForCausalLM, LlamaForCausalLM]:
    """Two equal tiny Llamas (seeded); ``tied=False``: the head holds a copy, the flag still says tied."""
    models = []
    for _ in range(2):
        torch.manual_seed(0)
        model = llama(True)
        if not tied:
            model.lm_head.weight = nn.Parameter(model.lm_head.weight.detach().clone())
        models.append(model)
    return models[0], models[1]


def test_patched_lora_ensure_weight_tying_ties_like_peft() -> None:
    """LoRA on the embedding and a tied head: with the drop-in, peft ties the adapters as it does alone."""
    plain, other = _pair()
    ref = _peft_model(plain, _lora_both())
    with patched():
        got = _peft_model(other, _lora_both())
    assert tie_groups(got, split="object") == tie_groups(ref, split="object")
    tuned: Any = got.base_model.model  # (PEFT's layers: nn.Module types them Tensor | Module)
    head, embed = tuned.lm_head, tuned.model.embed_tokens
    assert head.base_layer.weight is embed.base_layer.weight
    lora_a, lora_b = head.lora_A["default"].weight, embed.lora_embedding_B["default"]
    assert lora_a.untyped_storage()._cdata == lora_b.untyped_storage()._cdata  # peft's transposed tie
    ids = torch.tensor([[3, 4, 5]])
    torch.testing.assert_close(got(ids).logits, ref(ids).logits)


def test_patched_merge_keeps_the_tie() -> None:
    plain, other = _pair()
    ref = _peft_model(plain, _lora_both()).merge_and_unload()
    with patched():
        got = _peft_model(other, _lora_both()).merge_and_unload()
    assert got.lm_head.weight is got.model.embed_tokens.weight
    ids = torch.tensor([[3, 4, 5]])
    torch.testing.assert_close(got(ids).logits, ref(ids).logits)


def test_patched_trainable_tokens_ties_the_head_adapter() -> None:
    from peft import TrainableTokensConfig

    config = TrainableTokensConfig(target_modules=["embed_tokens"], token_indices=[1, 2])
    with patched():
        got = _peft_model(llama(True), config)
    tuned: Any = got.base_model.model  # (PEFT's layers: nn.Module types them Tensor | Module)
    head, embed = tuned.lm_head, tuned.model.embed_tokens
    assert type(head).__name__ == "TrainableTokensLayer"
    assert head.tied_adapter is embed


def test_patched_leaves_an_untied_head_alone() -> None:
    """A head loaded apart with the flag still True (``tests/models.py``'s ``llama_declared_but_copied``).

    PEFT alone reads the declaration and ties lm_head's LoRA adapters and trainable tokens to the
    embedding's, though lm_head holds its own weights; with the drop-in, lm_head gets its own.
    """
    from peft import TrainableTokensConfig

    plain, other = _pair(tied=False)
    alone = _peft_model(plain, _lora_both())
    with patched():
        opted = _peft_model(other, _lora_both())
    assert len(tie_groups(alone)) == 2  # the adapters of lm_head tied to the embedding's
    assert tie_groups(opted) == []
    config = TrainableTokensConfig(target_modules=["embed_tokens"], token_indices=[1, 2])
    assert (
        type(_peft_model(_pair(tied=False)[0], config).get_submodule("base_model.model.lm_head")).__name__
        == "TrainableTokensLayer"
    )
    with patched():
        head = _peft_model(_pair(tied=False)[0], config).get_submodule("base_model.model.lm_head")
        assert type(head) is nn.Linear


def test_find_tied_parameters_on_an_offloaded_model_module_tree_or_served() -> None:
    """After ``cpu_offload`` the module tree holds a new meta Parameter per slot; the hooks serve one tensor.

    ``served=False`` answers for the module tree, as accelerate does; ``served=True`` for what the hooks
    put in the slots at execution time.
    """
    from accelerate import cpu_offload
    from accelerate.utils import find_tied_parameters as peer

    model = llama(True)
    cpu_offload(model, execution_device="cpu")
    assert model.lm_head.weight is not model.model.embed_tokens.weight
    assert peer(model) == []
    assert find_tied_parameters(model) == []
    assert find_tied_parameters(model, served=True) == [["lm_head.weight", "model.embed_tokens.weight"]]
