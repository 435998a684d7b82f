"""Ties under torch.distributed: DDP, FSDP2 ``fully_shard``, activation checkpointing, FSDP1.

Two real gloo ranks on CPU run ``tests/_dist_workers.py`` once (a FileStore in ``tmp_path``, loopback only,
bounded by a timeout) and write what each saw; the tests here compare the ranks with each other and with
the unwrapped model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from _ranks import run_ranks
from torch import nn

import tiegraph
import tiegraph.distributed
from tiegraph.distributed import Disagreement, compare, rank_summary

pytestmark = pytest.mark.distributed

WORLD = 2
TIMEOUT = 180  # seconds for both ranks together; about 25 s on a busy 2-core machine
FAMILIES = ("llama", "t5")
WRAPPED = ("ddp", "ac", "ac_whole", "ddp_ac", "fsdp2", "ac_fsdp2", "fsdp1_orig", "fsdp1_one_unit")
EXPECTED = {
    "llama": ([["lm_head.weight", "model.embed_tokens.weight"]], ["lm_head"]),
    "t5": (
        [["decoder.embed_tokens.weight", "encoder.embed_tokens.weight", "lm_head.weight", "shared.weight"]],
        ["decoder.embed_tokens", "encoder.embed_tokens", "lm_head"],
    ),
}
SEGMENTS = {  # the wrapper segments the full slot names must show (and canonical names must not)
    "ddp": ["module"],
    "ac": ["_checkpoint_wrapped_module"],
    "ac_whole": ["_checkpoint_wrapped_module"],
    "ddp_ac": ["_checkpoint_wrapped_module", "module"],
    "fsdp2": [],
    "ac_fsdp2": ["_checkpoint_wrapped_module"],
    "fsdp1_orig": ["_fsdp_wrapped_module"],
    "fsdp1_one_unit": ["_fsdp_wrapped_module"],
}


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """Start two gloo ranks running every case; return what each rank saw."""
    out = tmp_path_factory.mktemp("ranks")
    return run_ranks(Path(__file__).with_name("_dist_workers.py"), out, WORLD, TIMEOUT)


def both(ranks: list[dict[str, Any]], case: str) -> list[Any]:
    return [r[case] for r in ranks]


@pytest.mark.parametrize("family", FAMILIES)
def test_unwrapped_baseline(ranks: list[dict[str, Any]], family: str) -> None:
    groups, tied = EXPECTED[family]
    for seen in both(ranks, f"{family}/plain"):
        assert (seen["groups"], seen["tied"]) == (groups, tied)


@pytest.mark.parametrize("kind", WRAPPED)
@pytest.mark.parametrize("family", FAMILIES)
def test_wrapped_matches_unwrapped_on_every_rank(ranks: list[dict[str, Any]], family: str, kind: str) -> None:
    """Canonical tie groups, tied targets and input embedding are those of the unwrapped model."""
    plain = ranks[0][f"{family}/plain"]
    for seen in both(ranks, f"{family}/{kind}"):
        assert seen["groups"] == plain["groups"]
        assert seen["tied"] == plain["tied"]
        assert seen["embedding"] == plain["embedding"]
        assert seen["segments"] == SEGMENTS[kind]
        assert seen["canonical_segments"] == []
        assert seen["shapes"] == plain["shapes"]  # DTensor and FSDP1 slots keep their unsharded shapes


@pytest.mark.parametrize("family", FAMILIES)
def test_fsdp2_classes_and_dtensor_slots(ranks: list[dict[str, Any]], family: str) -> None:
    """fully_shard renames classes FSDP<Name> and makes every parameter a DTensor; shapes stay global."""
    plain = ranks[0][f"{family}/plain"]
    for kind in ("fsdp2", "ac_fsdp2"):
        for seen in both(ranks, f"{family}/{kind}"):
            assert seen["root_cls"] == "FSDP" + plain["root_cls"]
            assert seen["param_types"] == ["DTensor"]
            assert seen["shapes"] == plain["shapes"]


@pytest.mark.parametrize("case", [f"{f}/{k}" for f in FAMILIES for k in ("plain", *WRAPPED, "fsdp1_flat")])
def test_nothing_is_gathered_or_copied(ranks: list[dict[str, Any]], case: str) -> None:
    """No tensor op at all runs while the graph is built (no all-gather, no copy, no allocation), and every
    parameter keeps its memory (same local tensor object, data pointer and storage size)."""
    for seen in both(ranks, case):
        assert seen["ops"] == []
        assert seen["memory_unchanged"]


def test_fsdp1_empty_slice_keeps_its_tie(ranks: list[dict[str, Any]]) -> None:
    """FSDP1 (use_orig_params=True) gives rank 1 an empty view of an embedding rank 0 holds; it is still the
    same tied parameter, with its unsharded shape. Without the core's FlatParameter handling rank 1 saw no
    tie at all (the regression this pins)."""
    plain = ranks[0]["llama/plain"]
    for seen in both(ranks, "llama/fsdp1_one_unit"):
        assert seen["groups"] == plain["groups"]
        assert seen["shapes"]["model.embed_tokens.weight"] == [64, 16]
    without = both(ranks, "llama/fsdp1_one_unit_without_flat_views")
    assert without[0]["groups"] == plain["groups"]
    assert without[1]["groups"] == []


def test_fsdp1_flat_param_is_a_container(ranks: list[dict[str, Any]]) -> None:
    """With FSDP1's FlatParameter registered beside the original views (torch's own _register_flat_param),
    it does not merge the parameters of its unit into one tie group."""
    plain = ranks[0]["llama/plain"]
    for seen in both(ranks, "llama/fsdp1_flat_registered"):
        assert seen["groups"] == plain["groups"]
        assert seen["tied"] == plain["tied"]
    for seen in both(ranks, "llama/fsdp1_flat_registered_without_flat_views"):
        assert "_flat_param" in seen["groups"][0]


@pytest.mark.parametrize("family", FAMILIES)
def test_fsdp1_without_orig_params_warns(ranks: list[dict[str, Any]], family: str) -> None:
    """use_orig_params=False leaves no per-parameter slots (named_parameters yields only _flat_param), so
    the tie is invisible; one warning names every FlatParameter and points at the caller."""
    for seen in both(ranks, f"{family}/fsdp1_flat"):
        assert seen["groups"] == []
        [(message, filename)] = seen["warnings"]
        assert "_fsdp_wrapped_module._flat_param" in message
        assert "use_orig_params=True" in message
        assert filename.endswith("_dist_workers.py")


@pytest.mark.parametrize("case", [f"{f}/{k}" for f in FAMILIES for k in ("plain", *WRAPPED, "fsdp1_flat")])
def test_ranks_agree(ranks: list[dict[str, Any]], case: str) -> None:
    assert both(ranks, case)[0]["agree"] == both(ranks, case)[1]["agree"] == []


@pytest.mark.parametrize("case", ["untie/ddp", "untie/fsdp2", "untie/fsdp2_subgroup"])
def test_one_rank_unties_its_head(ranks: list[dict[str, Any]], case: str) -> None:
    """Rank 1 unties lm_head after wrapping: every rank gets the same two findings."""
    first, second = both(ranks, case)
    assert first == second
    assert [(d["kind"], d["value"], d["ranks"], d["missing"]) for d in first] == [
        ("tie-group", ["lm_head.weight", "model.embed_tokens.weight"], [0], [1]),
        ("tied-target", "lm_head", [0], [1]),
    ]
    assert "on rank 0 but not on rank 1" in first[0]["text"]


def test_a_failing_rank_does_not_hang_the_others(ranks: list[dict[str, Any]]) -> None:
    first, second = both(ranks, "error/rank1")
    assert first == second
    [error] = first
    assert (error["kind"], error["ranks"], error["missing"]) == ("error", [1], [0])
    assert "PathNotFoundError" in error["value"]
    assert "no.such.module" in error["value"]


@pytest.mark.parametrize("kind", [k for k in WRAPPED if k != "fsdp1_one_unit"])
@pytest.mark.parametrize("family", FAMILIES)
def test_declared_ties_and_audit_see_through_wrappers(
    ranks: list[dict[str, Any]], family: str, kind: str
) -> None:
    plain = ranks[0][f"{family}/plain"]
    assert isinstance(plain["declared"], list), plain["declared"]
    assert plain["declared"]
    assert all(status == "tied" for _, _, status in plain["declared"])
    for seen in both(ranks, f"{family}/{kind}"):
        assert seen["declared"] == plain["declared"]
        assert seen["audit"] == plain["audit"] == []


@pytest.mark.parametrize("kind", ["ddp", "fsdp2"])
def test_group_split_across_devices_is_a_finding(ranks: list[dict[str, Any]], kind: str) -> None:
    """The head moved to another device (meta here) under DDP or FSDP2: the audit says the tie is split."""
    for seen in both(ranks, f"split/{kind}"):
        assert ["group-split-across-devices", ["lm_head.weight", "model.embed_tokens.weight"]] in seen[
            "audit"
        ]


# ---------------------------------------------------------------- in one process


def test_check_ranks_agree_needs_a_process_group(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch.distributed as dist

    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    with pytest.raises(tiegraph.TiegraphError, match=r"init_process_group.*group="):
        tiegraph.distributed.check_ranks_agree(nn.Linear(2, 2))
    with pytest.raises(TypeError, match=r"nn\.Module"):
        tiegraph.distributed.check_ranks_agree("model")  # type: ignore[arg-type]


@pytest.mark.usefixtures("process_group")
def test_check_ranks_agree_on_one_rank() -> None:
    m = nn.Module()
    m.embed, m.head = nn.Embedding(8, 4), nn.Linear(4, 8, bias=False)
    m.head.weight = m.embed.weight
    assert tiegraph.distributed.check_ranks_agree(m, input_embedding="embed") == []


def test_compare_reports_input_embedding_and_orders_kinds() -> None:
    tied = rank_summary(_tiny(tied=True), input_embedding="embed")
    other = rank_summary(_tiny(tied=True), input_embedding="head")
    found = compare([dict(tied, rank=0), dict(other, rank=3)])
    assert [d.kind for d in found] == sorted((d.kind for d in found), key=tiegraph.distributed.KINDS.index)
    assert {(d.kind, d.value, d.ranks, d.missing) for d in found if d.kind == "input-embedding"} == {
        ("input-embedding", "embed", (0,), (3,)),
        ("input-embedding", "head", (3,), (0,)),
    }
    assert all(isinstance(d, Disagreement) and str(d).startswith(d.kind) for d in found)


def test_compare_names_the_summary_that_lacks_a_key() -> None:
    with pytest.raises(tiegraph.ConfigurationError, match=r"rank 0 has no 'input_embedding', 'tie_groups'"):
        compare([{}])
    tied = rank_summary(_tiny(tied=True), input_embedding="embed")
    lacking = {k: v for k, v in tied.items() if k != "tied"}
    with pytest.raises(tiegraph.ConfigurationError, match=r"rank 1 has no 'tied': compare\(\) takes"):
        compare([dict(tied, rank=0), dict(lacking, rank=1)])


def _tiny(*, tied: bool) -> nn.Module:
    m = nn.Module()
    m.embed, m.head = nn.Embedding(8, 4), nn.Linear(4, 8, bias=False)
    if tied:
        m.head.weight = m.embed.weight
    return m


def test_flat_param_views_without_fsdp1_is_empty() -> None:
    from tiegraph._storage import flat_param_views

    views = flat_param_views([nn.Linear(2, 2), torch.nn.Sequential()])
    assert views.shapes == {}
    assert views.containers == set()
