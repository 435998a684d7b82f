"""Value verdicts: ``build_graph(model, check_values=True)`` on real tiny models."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import torch
from models import llama
from torch import nn
from torch.overrides import TorchFunctionMode

import tiegraph
from tiegraph._values import compare

if TYPE_CHECKING:
    from transformers import LlamaForCausalLM


class _Seen(TorchFunctionMode):
    """Records the id of every ``kind`` instance a torch function is called with, while active."""

    def __init__(self, kind: type[torch.Tensor]) -> None:
        super().__init__()
        self.kind, self.ids = kind, set[int]()

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Iterable[type],
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        self.ids.update(id(v) for v in [*args, *(kwargs or {}).values()] if isinstance(v, self.kind))
        return func(*args, **(kwargs or {}))


def _untied(delta: float = 0.0) -> LlamaForCausalLM:
    """A tied tiny Llama whose lm_head was given its own copy (plus ``delta``): declared, not tied."""
    model = llama(True)
    model.lm_head.weight = nn.Parameter(model.lm_head.weight.detach().clone() + delta)
    return model


def _tie(tg: tiegraph.TieGraph) -> tiegraph.DeclaredTie:
    (tie,) = tg.declared_ties()
    return tie


def _finding(tg: tiegraph.TieGraph) -> str:
    (finding,) = [f for f in tg.audit() if f.kind == "declared-not-tied"]
    return finding.message


def test_not_asked_means_none() -> None:
    tg = tiegraph.build_graph(_untied())
    assert _tie(tg).values is None
    assert "values" not in _finding(tg).lower()


def test_equal_copy_says_tie_weights_loses_nothing() -> None:
    tg = tiegraph.build_graph(_untied(), check_values=True)
    assert (_tie(tg).status, _tie(tg).values) == ("not-tied", "equal")
    assert "; their values are equal, so model.tie_weights() re-ties them without loss" in _finding(tg)


def test_differing_copy_says_what_each_way_does() -> None:
    tg = tiegraph.build_graph(_untied(1.0), check_values=True)
    assert _tie(tg).values == "differ"
    message = _finding(tg)
    assert "; their values differ (one copy was trained or loaded apart)" in message
    assert "would replace lm_head.weight by model.embed_tokens.weight" in message
    assert "config.tie_word_embeddings=False" in message


def test_tied_pairs_are_equal_without_reading() -> None:
    assert _tie(tiegraph.build_graph(llama(True), check_values=True)).values == "equal"


def test_gated_off_pairs_are_compared_too() -> None:
    """Config untied: the declaration is gated off, its ends are still compared (they differ: two inits)."""
    tie = _tie(tiegraph.build_graph(llama(False), check_values=True))
    assert (tie.status, tie.values) == ("gated-off", "differ")


def test_meta_is_unknown() -> None:
    with torch.device("meta"):
        model = _untied()
    tg = tiegraph.build_graph(model, check_values=True)
    assert _tie(tg).values == "unknown"
    assert "could not be compared" in _finding(tg)


def test_only_the_pair_is_read() -> None:
    """Every parameter a torch function sees while the values are compared is one of the two ends of the
    untied pair (the build before it reads no data, only storage facts)."""
    from tiegraph._values import record_values

    model = _untied()
    pair = {id(model.lm_head.weight), id(model.model.embed_tokens.weight)}
    spy = _Seen(nn.Parameter)

    tg = tiegraph.build_graph(model)
    with spy:
        record_values(tg, model)
    assert spy.ids == pair
    assert _tie(tg).values == "equal"


def test_values_survive_json() -> None:
    tg = tiegraph.build_graph(_untied(1.0), check_values=True)
    again = tiegraph.TieGraph.from_json(json.loads(json.dumps(tg.to_json())))
    assert _tie(again).values == "differ"
    assert again.audit() == tg.audit()


@pytest.mark.parametrize(
    ("a", "b", "verdict"),
    [
        (torch.ones(2, 3), torch.ones(2, 3), "equal"),
        (torch.ones(2, 3), torch.ones(3, 2), "equal"),
        (torch.ones(2, 3), torch.zeros(2, 3), "differ"),
        (torch.ones(2, 3), torch.ones(4), "differ"),
        (torch.ones(2, 3), torch.ones(2, 3, dtype=torch.float16), "equal"),
        (torch.ones(2, 3), torch.ones(2, 3, device="meta"), "unknown"),
        (torch.ones(2, 3), None, "unknown"),
    ],
)
def test_compare(a: torch.Tensor, b: torch.Tensor | None, verdict: str) -> None:
    assert compare(a, b) == verdict


# ------------------------------------------------------------------------------- offloaded by accelerate


def _cpu_offload(model: LlamaForCausalLM, _tmp_path: Path) -> LlamaForCausalLM:
    from accelerate import cpu_offload

    offloaded: LlamaForCausalLM = cpu_offload(model, execution_device="cpu")
    return offloaded


def _disk_offload(model: LlamaForCausalLM, tmp_path: Path) -> LlamaForCausalLM:
    """accelerate's own disk offload: every name in its own ``.dat`` file, read back through a memmap."""
    from accelerate import disk_offload

    offloaded: LlamaForCausalLM = disk_offload(model, tmp_path / "offload", execution_device="cpu")
    return offloaded


def _disk_from_pretrained(model: LlamaForCausalLM, tmp_path: Path) -> LlamaForCausalLM:
    """Saved, then loaded all to disk: the hooks serve the checkpoint's own safetensors entries."""
    from transformers import LlamaForCausalLM

    model.save_pretrained(tmp_path / "ckpt")
    return LlamaForCausalLM.from_pretrained(
        tmp_path / "ckpt", device_map={"": "disk"}, offload_folder=tmp_path / "offload"
    )


OFFLOADS = {
    "cpu_offload": _cpu_offload,
    "disk_offload": _disk_offload,
    "from_pretrained": _disk_from_pretrained,
}


@pytest.mark.parametrize("offload", OFFLOADS)
@pytest.mark.parametrize(
    ("delta", "verdict", "says"),
    [(0.0, "equal", "are equal, so"), (1.0, "differ", "differ (one copy")],
    ids=["equal", "differ"],
)
def test_offloaded_ends_are_read_from_the_hooks_store(
    build: Any, tmp_path: Path, offload: str, delta: float, verdict: str, says: str
) -> None:
    """The modules hold meta placeholders; the verdict comes from the values the hooks serve (it was
    ``unknown`` before), and the finding that explains the untied pair says it."""
    model = OFFLOADS[offload](_untied(delta), tmp_path)
    assert model.lm_head.weight.is_meta
    tg = build(model, check_values=True)
    assert (_tie(tg).status, _tie(tg).values) == ("not-tied", verdict)
    (finding,) = tg.audit()
    assert finding.kind == "group-split-across-devices"
    assert f"; their values {says}" in finding.message


def test_disk_offload_reads_only_the_pair(build: Any, tmp_path: Path) -> None:
    """Every other offloaded file is gone: the verdict needs only the two ``.dat`` files of the pair."""
    model = _disk_offload(_untied(1.0), tmp_path)
    pair = {"lm_head.weight.dat", "model.embed_tokens.weight.dat"}
    files = list((tmp_path / "offload").glob("*.dat"))
    assert pair < {f.name for f in files}
    for file in files:
        if file.name not in pair:
            file.unlink()
    assert _tie(build(model, check_values=True)).values == "differ"


def test_cpu_offload_compares_the_stores_tensors_only() -> None:
    """The only tensors compared are the two the cpu_offload hooks serve for the pair (their dict's)."""
    from accelerate import cpu_offload

    from tiegraph._values import record_values

    model = cpu_offload(_untied(), execution_device="cpu")
    store = model.lm_head._hf_hook.weights_map.dataset
    pair = {id(store["lm_head.weight"]), id(store["model.embed_tokens.weight"])}
    spy = _Seen(torch.Tensor)

    tg = tiegraph.build_graph(model)
    with spy:
        record_values(tg, model)
    assert pair <= spy.ids
    assert not spy.ids & {id(t) for t in store.values()} - pair
    assert _tie(tg).values == "equal"


def test_offloaded_file_gone_is_unknown(build: Any, tmp_path: Path) -> None:
    """A store that cannot be read (the head's ``.dat`` file deleted) gives ``unknown``, not a crash."""
    model = _disk_offload(_untied(), tmp_path)
    (tmp_path / "offload" / "lm_head.weight.dat").unlink()
    tg = build(model, check_values=True)
    assert _tie(tg).values == "unknown"
    assert "could not be compared" in tg.audit()[0].message
