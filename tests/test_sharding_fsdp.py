"""FSDP2 pre-flight (``tiegraph.check_shard_plan``) against what torch's ``fully_shard`` really does.

Two gloo ranks on CPU run ``tests/_shard_workers.py`` once: every plan of its ``PLANS`` table is applied
with ``fully_shard`` to a fresh tiny tied model and trained one SGD step on the same batch on both ranks.
The prediction tiegraph makes on a *meta* copy of the model, in this process, must be what torch did:

- ``kept``: both ends equal each other and the single-process tied reference after the step;
- ``unties``: the ends equal the single-process *untied* reference (two tensors trained apart);
- ``raises``: the first forward raised torch's "already managed by another FSDP group" ValueError;
- ``refused``: a ``fully_shard`` call raised "non-contiguous parameters".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from _ranks import run_ranks
from _shard_workers import FIXED, PLANS, ends, llama, step

import tiegraph
from tiegraph.errors import PathNotFoundError, TiegraphError
from tiegraph.sharding import fixed_plan
from tiegraph.sharding._fsdp import outcomes

WORLD = 2
TIMEOUT = 300  # seconds for both ranks; about 40 s on a busy 2-core machine
TOLERANCE = 1e-5
EXPECTED = {  # the verdict each wrapping layout must get, pinned so that a rule change shows here first
    "root-only": ["kept"],
    "layers+root": ["kept"],
    "group+layers+root": ["kept"],
    "torchtitan": ["kept"],
    "split-no-root": ["unties"],
    "split-with-root": ["raises"],
    "head-only-no-root": ["unties"],
    "policy-layers": ["kept"],
    "policy-embedding": ["raises"],
    "storage-group": ["unties"],
    "storage-root": ["unties"],
    "view-root": ["refused"],
}


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    out = tmp_path_factory.mktemp("shard")
    return run_ranks(Path(__file__).with_name("_shard_workers.py"), out, WORLD, TIMEOUT)


@pytest.fixture(scope="module")
def references() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Both ends after one step in one process: tied (one Parameter) and untied (two equal copies)."""
    out = {}
    for name in ("identity", "untied"):
        model = llama(name)
        step(model)
        embed, head = ends(model)
        out[name] = (embed.detach(), head.detach())
    return out


def predicted(case: str, *, fixed: bool = False) -> list[str]:
    factory, plan_of = PLANS[case]
    with torch.device("meta"):
        model = factory()
    plan = plan_of(model)
    if fixed:
        plan = fixed_plan(model, plan)
    return [o.verdict for o in outcomes(model, plan)]


def observed(seen: dict[str, Any], refs: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> str:
    if seen["torch"] in ("refused", "raises"):
        return str(seen["torch"])
    embed, head = torch.tensor(seen["embed"]), torch.tensor(seen["head"])
    tied_embed, _ = refs["identity"]
    if torch.allclose(embed, head, atol=0) and torch.allclose(embed, tied_embed, atol=TOLERANCE):
        return "kept"
    untied_embed, untied_head = refs["untied"]
    if torch.allclose(embed, untied_embed, atol=TOLERANCE) and torch.allclose(
        head, untied_head, atol=TOLERANCE
    ):
        return "unties"
    return "neither reference"


@pytest.mark.distributed
@pytest.mark.parametrize("case", list(PLANS))
def test_prediction_is_what_torch_does(ranks: list[dict[str, Any]], references: Any, case: str) -> None:
    assert predicted(case) == EXPECTED[case]
    for seen in ranks:
        assert [observed(seen[case], references)] == EXPECTED[case], seen[case].get("error")


@pytest.mark.distributed
@pytest.mark.parametrize("case", FIXED)
def test_fixed_plan_keeps_the_tie_for_real(ranks: list[dict[str, Any]], references: Any, case: str) -> None:
    assert predicted(case, fixed=True) == ["kept"]
    for seen in ranks:
        assert observed(seen[case + "/fixed"], references) == "kept"


@pytest.mark.distributed
def test_torch_errors_are_the_ones_the_findings_quote(ranks: list[dict[str, Any]]) -> None:
    assert "already managed by another FSDP group" in ranks[0]["split-with-root"]["error"]
    assert "non-contiguous parameters" in ranks[0]["view-root"]["error"]


def meta_llama() -> Any:
    with torch.device("meta"):
        return llama()


def test_split_finding_names_calls_fix_and_torch_version() -> None:
    model = meta_llama()
    (found,) = tiegraph.check_shard_plan(model, [*model.model.layers, "model.embed_tokens", model])
    assert found.kind == "fsdp-split-tie-raises"
    assert found.paths == ("lm_head.weight", "model.embed_tokens.weight")
    assert "fully_shard([model.model.embed_tokens, model.lm_head])" in found.message
    assert "in place of fully_shard(model.model.embed_tokens)" in found.message
    assert "torch 2.13.0" in found.message


def test_storage_and_view_findings() -> None:
    factory, plan_of = PLANS["storage-root"]
    with torch.device("meta"):
        model = factory()
    assert [f.kind for f in tiegraph.check_shard_plan(model, plan_of(model))] == ["storage-only-tie"]
    factory, plan_of = PLANS["view-root"]
    (found,) = tiegraph.check_shard_plan(factory(), [""])
    assert found.kind == "fsdp-view-tie-refused"
    assert "proj.weight is a non-contiguous view of embed.weight" in found.message


def test_a_plan_that_shards_nothing_tied_keeps_everything() -> None:
    model = meta_llama()
    assert tiegraph.check_shard_plan(model, [model.model.layers[0]]) == []


@pytest.mark.parametrize(
    ("plan", "error", "words"),
    [
        (["model.nope"], PathNotFoundError, "'model.nope', which is not a module"),
        ([torch.nn.Linear(2, 2)], PathNotFoundError, "not a submodule of the model"),
        ([[]], TiegraphError, "empty list"),
        ([3], TiegraphError, "not int"),
        ([], TiegraphError, "holds no fully_shard call"),
        (["", "model.layers.0"], TiegraphError, "innermost modules"),
        ({"transformer_layer_cls_to_wrap": ["NoSuchLayer"]}, TiegraphError, "NoSuchLayer"),
        ({"fsdp_version": 1, "transformer_layer_cls_to_wrap": ["LlamaDecoderLayer"]}, TiegraphError, "FSDP2"),
        ({"layers": 1}, TiegraphError, "transformer_layer_cls_to_wrap"),
        (42, TiegraphError, "not int"),
    ],
)
def test_bad_plans_say_what_is_wrong(plan: Any, error: type[Exception], words: str) -> None:
    with pytest.raises(error) as caught:
        tiegraph.check_shard_plan(meta_llama(), plan)
    assert words in str(caught.value)


def test_not_a_module() -> None:
    with pytest.raises(TypeError, match=r"torch\.nn\.Module"):
        tiegraph.check_shard_plan("llama", [""])  # type: ignore[arg-type]


@pytest.mark.distributed
@pytest.mark.parametrize(
    "case", ["split-no-root", "split-with-root", "head-only-no-root", "policy-embedding"]
)
def test_after_the_cut_the_audit_names_fsdp_and_the_fix(ranks: list[dict[str, Any]], case: str) -> None:
    """A sharded model whose tie the plan split: the finding names FSDP, each end's call and the grouping,
    not the generic declared-not-tied / config-says-tied-but-nothing-is ("call tie_weights()")."""
    for seen in ranks:
        kinds = [kind for kind, _ in seen[case]["audit"]]
        assert kinds == ["fsdp-split-tie"]
        message = seen[case]["audit"][0][1]
        assert "fully_shard([model.model.embed_tokens, model.lm_head])" in message
        held = "no fully_shard call" if case == "head-only-no-root" else "fully_shard("
        assert f"model.embed_tokens.weight: {held}" in message
        assert "lm_head.weight: fully_shard(" in message


@pytest.mark.distributed
def test_after_the_cut_a_storage_tie_says_make_one_parameter(ranks: list[dict[str, Any]]) -> None:
    for seen in ranks:
        (kind, message), *_ = seen["storage-group"]["audit"]
        assert kind == "fsdp-split-tie"
        assert "make them one Parameter before sharding" in message


@pytest.mark.distributed
@pytest.mark.parametrize("case", ["root-only", "layers+root", "group+layers+root", "torchtitan"])
def test_after_a_good_cut_the_tie_is_seen_and_nothing_is_found(
    ranks: list[dict[str, Any]], case: str
) -> None:
    for seen in ranks:
        assert seen[case]["groups"] == [["lm_head.weight", "model.embed_tokens.weight"]]
        assert seen[case]["audit"] == []


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    from tiegraph.cli import main

    code = main(["inspect", "llama", "--set", "tie_word_embeddings=true", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_shard_plan(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "--shard-plan", "each:LlamaDecoderLayer;model.embed_tokens;root")
    assert code == 0
    assert "shard plan: error: fsdp-split-tie-raises" in out
    assert "fully_shard([model.model.embed_tokens, model.lm_head])" in out
    code, out, _ = run_cli(
        capsys, "--shard-plan", "each:LlamaDecoderLayer;model.embed_tokens;root", "--strict"
    )
    assert code == 1
    code, out, _ = run_cli(capsys, "--shard-plan", "each:LlamaDecoderLayer;model.embed_tokens,lm_head;root")
    assert (code, "shard plan:" in out) == (0, False)
    code, out, _ = run_cli(capsys, "--shard-plan", "policy:LlamaDecoderLayer", "--format", "json")
    assert json.loads(out)["shard_plan"] == []


def test_cli_bad_shard_plan_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "--shard-plan", "nope;root")
    assert code == 2
    assert err.strip().splitlines() == [
        "tiegraph inspect: error: --shard-plan: the shard plan names 'nope', which is not a module of the "
        "model; use a path that model.named_modules() yields, or pass the module itself"
    ]
