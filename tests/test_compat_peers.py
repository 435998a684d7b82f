"""Where the peers' tie helpers are wrong: the real helper and tiegraph's drop-in side by side.

Each test calls the installed peer (peft 0.21.2, accelerate 1.15.0, safetensors 0.8.0) and
:mod:`tiegraph.compat` on the same model and asserts both answers, then what the peer's callers do with
each. ``docs/peers.md`` lists these tests by name.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
from models import llama
from torch import nn

from tiegraph.compat import (
    find_shared_tensors,
    find_tied_parameters,
    get_module_names_tied_with_embedding,
    patched,
)

# ------------------------------------------------------------------------------------------------ PEFT


def _peft_helper() -> object:
    from peft.utils.other import _get_module_names_tied_with_embedding

    return _get_module_names_tied_with_embedding


def test_peft_tied_then_flag_false() -> None:
    """Tied in memory, then ``config.tie_word_embeddings = False``: PEFT follows the flag (peft#2944).

    The drop-in keeps that policy by default; ``config_false_wins=False`` answers from memory.
    """
    model = llama(True)
    model.config.tie_word_embeddings = False
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert _peft_helper()(model) == []  # type: ignore[operator]
    assert get_module_names_tied_with_embedding(model) == []
    assert get_module_names_tied_with_embedding(model, config_false_wins=False) == ["lm_head"]


def test_peft_untied_checkpoint_with_flag_true() -> None:
    """A head that holds its own weights (loaded apart) while the flag says tied: PEFT names it."""
    model = llama(True)
    model.lm_head.weight = nn.Parameter(model.lm_head.weight.detach().clone())
    assert _peft_helper()(model) == ["lm_head"]  # type: ignore[operator]
    assert get_module_names_tied_with_embedding(model) == []


class _TwoBarts(nn.Module):
    """PEFT's own composite (its tests/test_trainable_tokens.py, two BARTs, only m1 tied)."""

    def __init__(self) -> None:
        from transformers import BartConfig, BartModel

        super().__init__()
        sizes: dict[str, Any] = {"vocab_size": 100, "d_model": 32, "encoder_layers": 1, "decoder_layers": 1}
        heads: dict[str, Any] = {"encoder_attention_heads": 2, "decoder_attention_heads": 2}
        ffn: dict[str, Any] = {"encoder_ffn_dim": 64, "decoder_ffn_dim": 64}
        self.m1 = BartModel(BartConfig(**sizes, **heads, **ffn))
        self.m2 = BartModel(BartConfig(**sizes, **heads, **ffn, tie_word_embeddings=False))
        self.config = self.m1.config
        self._tied_weights_keys = {
            "m1.decoder.embed_tokens.weight": "m1.encoder.embed_tokens.weight",
            "m2.decoder.embed_tokens.weight": "m2.encoder.embed_tokens.weight",
        }

    def get_input_embeddings(self) -> nn.Module:
        return self.m1.encoder.embed_tokens


def test_peft_two_barts_side_by_side() -> None:
    """PEFT lists the input embedding itself and misses ``m1.shared``, which is the same tensor."""
    model = _TwoBarts()
    assert model.m1.shared.weight is model.m1.encoder.embed_tokens.weight
    assert _peft_helper()(model) == ["m1.decoder.embed_tokens", "m1.encoder.embed_tokens"]  # type: ignore[operator]
    assert get_module_names_tied_with_embedding(model) == ["m1.decoder.embed_tokens", "m1.shared"]


class _Holder(nn.Module):
    """A composite with no ``_tied_weights_keys`` of its own around a tied Llama."""

    def __init__(self) -> None:
        super().__init__()
        self.lm = llama(True)

    def get_input_embeddings(self) -> nn.Module:
        return self.lm.get_input_embeddings()


def test_peft_composite_without_root_declaration() -> None:
    model = _Holder()
    assert model.lm.lm_head.weight is model.lm.model.embed_tokens.weight
    assert _peft_helper()(model) == []  # type: ignore[operator]
    assert get_module_names_tied_with_embedding(model) == ["lm.lm_head"]


# ------------------------------------------------------------------------------------------ accelerate


def test_accelerate_misses_init_empty_weights_ties_and_splits_the_pair() -> None:
    """Under ``init_empty_weights`` each registration is a new meta Parameter over one storage.

    accelerate finds no tie, so ``infer_auto_device_map`` puts ``embed_tokens`` on cpu and ``lm_head`` on
    disk; with the drop-in the pair stays together.
    """
    from accelerate import infer_auto_device_map, init_empty_weights
    from accelerate.utils import find_tied_parameters as peer

    with init_empty_weights():
        model = llama(True)
    assert peer(model) == []
    assert find_tied_parameters(model) == [["lm_head.weight", "model.embed_tokens.weight"]]
    memory = {"cpu": 12000}  # bytes: the embedding and a few layers fit, the rest goes to disk
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        alone = infer_auto_device_map(model, max_memory=memory)
        with patched(peft=False):
            opted = infer_auto_device_map(model, max_memory=memory)
    assert (alone["model.embed_tokens"], alone["lm_head"]) == ("cpu", "disk")
    assert (opted["model.embed_tokens"], opted["lm_head"]) == ("cpu", "cpu")


class _Transposed(nn.Module):
    """A head tied to the embedding by a transposed view (as PEFT's ``ensure_weight_tying`` ties LoRA)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(8, 8)
        self.proj = nn.Linear(8, 8, bias=False)
        self.proj.weight = nn.Parameter(self.embed.weight.t())

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.proj(self.embed(ids))
        return out


@pytest.mark.parametrize(("split", "same_output"), [("layout", True), (None, False)])
def test_accelerate_dispatch_model_reties_what_it_is_given(split: str | None, same_output: bool) -> None:
    """``dispatch_model`` re-ties every group it is given to one Parameter.

    Given the whole share component (``split=None``) it assigns the embedding's weight to the transposed
    head: the output silently changes. That is why the drop-in returns groups of one layout by default.
    """
    from accelerate import dispatch_model
    from accelerate.utils import find_tied_parameters as peer

    torch.manual_seed(0)
    model = _Transposed()
    ids = torch.tensor([[1, 2, 3]])
    expected = model(ids)
    assert peer(model) == []
    with patched(peft=False, split=split):  # type: ignore[arg-type]
        dispatch_model(model, device_map={"": "cpu"}, force_hooks=True)
    assert torch.equal(model(ids), expected) is same_output


# ----------------------------------------------------------------------------------------- safetensors


def _shared_peer() -> object:
    from safetensors.torch import _find_shared_tensors

    return _find_shared_tensors


def _views() -> dict[str, dict[str, torch.Tensor]]:
    w = torch.zeros(3, 4)
    return {
        "transposed": {"w": w, "wt": w.t()},
        "expanded": {"row": w[0], "expanded": w[0].expand(3, 4)},
        "column-sliced": {"w": w, "columns": w[:, :2]},
    }


@pytest.mark.parametrize("case", ["transposed", "expanded", "column-sliced"])
def test_safetensors_crashes_on_non_contiguous_views(case: str) -> None:
    state_dict = _views()[case]
    with pytest.raises(RuntimeError, match="view size is not compatible"):
        _shared_peer()(state_dict)  # type: ignore[operator]
    assert find_shared_tensors(state_dict) == [set(state_dict)]


def test_safetensors_save_model_crashes_on_peft_ensure_weight_tying() -> None:
    """``save_model`` of a LoRA model with ``ensure_weight_tying`` (transposed adapter ties) raises."""
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import save_model

    config = LoraConfig(r=2, target_modules=["embed_tokens", "lm_head"], ensure_weight_tying=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = get_peft_model(llama(True), config)
    state_dict = model.state_dict()
    with pytest.raises(RuntimeError, match="view size is not compatible"):
        save_model(model, "/dev/null")
    groups = [g for g in find_shared_tensors(state_dict) if len(g) > 1]
    assert any(any("lora_A" in name for name in g) for g in groups)


def test_safetensors_wrapper_subclass() -> None:
    """A wrapper subclass (torch's own ``TwoTensor``) has no storage of its own: the peer raises."""
    from torch.testing._internal.two_tensor import TwoTensor

    a, b = torch.zeros(4), torch.ones(4)
    state_dict = {"pair": TwoTensor(a, b), "a": a}
    with pytest.raises(RuntimeError, match="invalid python storage"):
        _shared_peer()(state_dict)  # type: ignore[operator]
    assert find_shared_tensors(state_dict) == [{"pair", "a"}]


def test_safetensors_overlap_sweep_keeps_only_the_last_span() -> None:
    """``A, A[10:20], A[50:60]``: the peer's sweep forgets that ``A`` reaches past 20."""
    a = torch.zeros(100)
    state_dict = {"A": a, "B": a[10:20], "C": a[50:60]}
    assert _shared_peer()(state_dict) == [{"A", "B"}, {"C"}]  # type: ignore[operator]
    assert find_shared_tensors(state_dict) == [{"A", "B", "C"}]


def test_safetensors_meta_tensors() -> None:
    """The peer leaves meta tensors out (its test asserts it); the drop-in's truth-first mode groups them."""
    meta = torch.zeros(4, 4, device="meta")
    state_dict = {"w": meta, "wt": meta.t(), "other": torch.zeros(4, 4, device="meta")}
    assert _shared_peer()(state_dict) == []  # type: ignore[operator]
    assert find_shared_tensors(state_dict) == []
    assert find_shared_tensors(state_dict, exact=True) == [{"w", "wt"}, {"other"}]


def test_safetensors_storage_views_at_one_address() -> None:
    """A tensor set to the first 4 elements of another's storage: the peer keys storages by size too.

    safetensors' own test (``test_pt_sf_save_model_overlapping_storage``) asserts they are not shared;
    the default mode keeps that, truth-first groups them (16 bytes in common).
    """
    m = torch.randn(10)
    n = torch.empty([], dtype=m.dtype)
    n.set_(source=m.untyped_storage()[: 4 * m.element_size()])
    state_dict = {"m": m, "n": n}
    assert _shared_peer()(state_dict) == [{"m"}, {"n"}]  # type: ignore[operator]
    assert find_shared_tensors(state_dict) == [{"m"}, {"n"}]
    assert find_shared_tensors(state_dict, exact=True) == [{"m", "n"}]
