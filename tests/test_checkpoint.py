"""Checkpoints audited like models: every verdict checked against ``from_pretrained``.

Each case saves a tiny real Llama with ``save_pretrained`` into ``tmp_path``, edits its safetensors file and
its ``config.json`` the way checkpoints go wrong, and then asks two questions of the same directory: what
tiegraph finds (headers only, then with value comparison), and what ``from_pretrained(tmp_path)`` really
does with it (ties, leaves untied, initialises randomly, or fails). Safetensors only; nothing is unpickled.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import pytest
import torch
from models import llama
from safetensors.torch import load_file, save_file

import tiegraph
from tiegraph import _checkpoint
from tiegraph.cli import main
from tiegraph.cli.specs import build_spec

if TYPE_CHECKING:
    from transformers import LlamaForCausalLM

EMB, HEAD = "model.embed_tokens.weight", "lm_head.weight"
State = dict[str, torch.Tensor]


def _only_head(sd: State, full: State) -> State:
    return {**{k: v for k, v in sd.items() if k != EMB}, HEAD: full[HEAD].clone()}


@dataclass(frozen=True)
class Case:
    why: str
    tied_config: bool
    edit: Callable[[State, State], State]
    header: list[str]  # checkpoint finding kinds from headers alone
    values: list[str]  # ... with --check-values
    loads: str  # what from_pretrained does: "tied", "untied", "fails", or "random:<key>"


CASES: dict[str, Case] = {
    "saved-once": Case("save_pretrained of a tied model", True, lambda sd, _: sd, [], [], "tied"),
    "only-head-saved": Case(
        "tied, only lm_head saved: transformers loads it into both", True, _only_head, [], [], "tied"
    ),
    "copies-equal": Case(
        "tied, both saved with equal values: loads tied",
        True,
        lambda sd, f: {**sd, HEAD: f[HEAD].clone()},
        [],
        [],
        "tied",
    ),
    "copies-differ": Case(
        "tied, both saved and different: loads untied, each as saved",
        True,
        lambda sd, f: {**sd, HEAD: f[HEAD] + 1},
        [],
        ["checkpoint-tied-copies-differ"],
        "untied",
    ),
    "untied-head-missing": Case(
        "config untied and lm_head not saved: a random head",
        False,
        lambda sd, _: sd,
        ["checkpoint-tied-target-missing"],
        ["checkpoint-tied-target-missing"],
        f"random:{HEAD}",
    ),
    "untied-embedding-missing": Case(
        "config untied and only lm_head saved: a random embedding",
        False,
        _only_head,
        ["checkpoint-declared-source-missing"],
        ["checkpoint-declared-source-missing"],
        f"random:{EMB}",
    ),
    "head-wrong-shape": Case(
        "lm_head saved with the wrong shape: loading fails",
        True,
        lambda sd, _: {**sd, HEAD: torch.zeros(32, 16)},
        ["checkpoint-shape-mismatch"],
        ["checkpoint-shape-mismatch"],
        "fails",
    ),
    "embedding-wrong-shape": Case(
        "the saved embedding has the wrong shape: loading fails",
        True,
        lambda sd, _: {**sd, EMB: torch.zeros(32, 16)},
        ["checkpoint-shape-mismatch"],
        ["checkpoint-shape-mismatch"],
        "fails",
    ),
    "group-missing": Case(
        "tied and neither saved: both random",
        True,
        lambda sd, _: {k: v for k, v in sd.items() if k != EMB},
        ["checkpoint-tied-target-missing"],
        ["checkpoint-tied-target-missing"],
        f"random:{HEAD}",
    ),
    "untied-both-differ": Case(
        "config untied, both saved and different: what the config says",
        False,
        lambda sd, f: {**sd, HEAD: f[HEAD] + 1},
        [],
        [],
        "untied",
    ),
}


def _write(path: Path, case: Case) -> State:
    torch.manual_seed(0)
    model = llama(True)
    model.save_pretrained(path)
    full = {k: v.detach().clone() for k, v in model.state_dict().items()}
    state = case.edit(load_file(str(path / "model.safetensors")), full)
    save_file(
        {k: v.contiguous() for k, v in state.items()}, str(path / "model.safetensors"), {"format": "pt"}
    )
    config = json.loads((path / "config.json").read_text())
    config["tie_word_embeddings"] = case.tied_config
    (path / "config.json").write_text(json.dumps(config))
    return state


def _kinds(
    path: Path, *, check_values: bool, sets: list[tuple[list[str], object]] | None = None
) -> list[str]:
    built = build_spec(str(path), sets=sets or [])
    tg = tiegraph.build_graph(built.model)
    assert built.checkpoint is not None
    _checkpoint.check_checkpoint(tg, built.model, built.checkpoint, check_values=check_values)
    return [f.kind for f in tg.audit() if f.kind.startswith("checkpoint-")]


def _loads(path: Path, state: State) -> str:
    from transformers import AutoModelForCausalLM

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            # (with output_loading_info the result is a pair; transformers' annotation says the model)
            loaded = AutoModelForCausalLM.from_pretrained(path, output_loading_info=True)
            model, info = cast("tuple[LlamaForCausalLM, dict[str, list[str]]]", loaded)
        except RuntimeError as exc:
            message = str(exc).lower()
        else:
            message = ""
    if message:
        assert "mismatch" in message
        return "fails"
    if info["missing_keys"]:
        return "random:" + sorted(info["missing_keys"])[0]
    head, emb = model.lm_head.weight, model.model.embed_tokens.weight
    if head.data_ptr() == emb.data_ptr():
        return "tied"
    assert torch.equal(head, state[HEAD])  # each as saved
    assert torch.equal(emb, state[EMB])
    return "untied"


@pytest.mark.parametrize("name", list(CASES))
def test_verdict_matches_what_from_pretrained_does(name: str, tmp_path: Path) -> None:
    case = CASES[name]
    state = _write(tmp_path, case)
    assert _loads(tmp_path, state) == case.loads, case.why
    assert _kinds(tmp_path, check_values=False) == case.header, case.why
    assert _kinds(tmp_path, check_values=True) == case.values, case.why


def test_set_untied_on_a_tied_checkpoint_finds_the_missing_head(tmp_path: Path) -> None:
    """``inspect DIR --set tie_word_embeddings=false`` on a tied save: the head would load random."""
    _write(tmp_path, CASES["saved-once"])
    assert _kinds(tmp_path, check_values=False, sets=[(["tie_word_embeddings"], False)]) == [
        "checkpoint-tied-target-missing"
    ]
    config = json.loads((tmp_path / "config.json").read_text())
    config["tie_word_embeddings"] = False
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert _loads(tmp_path, {}) == f"random:{HEAD}"


def test_messages_name_both_shapes_and_the_outcome(tmp_path: Path) -> None:
    _write(tmp_path, CASES["head-wrong-shape"])
    built = build_spec(str(tmp_path))
    tg = tiegraph.build_graph(built.model)
    assert built.checkpoint is not None
    _checkpoint.check_checkpoint(tg, built.model, built.checkpoint, check_values=False)
    (found,) = [f for f in tg.audit() if f.kind == "checkpoint-shape-mismatch"]
    assert found.paths == (HEAD,)
    assert "shape (32, 16)" in found.message
    assert "shape (64, 16)" in found.message
    assert "from_pretrained fails with a size mismatch" in found.message


def test_findings_survive_the_json_round_trip(tmp_path: Path) -> None:
    _write(tmp_path, CASES["untied-head-missing"])
    built = build_spec(str(tmp_path))
    tg = tiegraph.build_graph(built.model)
    assert built.checkpoint is not None
    _checkpoint.check_checkpoint(tg, built.model, built.checkpoint, check_values=False)
    again = tiegraph.TieGraph.from_json(json.loads(json.dumps(tg.to_json())))
    assert again.audit() == tg.audit()


@pytest.mark.parametrize(
    ("name", "flags", "code", "kind"),
    [
        ("copies-differ", ["--check-values"], 1, "checkpoint-tied-copies-differ"),
        ("copies-differ", [], 0, None),
        ("untied-head-missing", [], 1, "checkpoint-tied-target-missing"),
        ("saved-once", ["--check-values"], 0, None),
    ],
)
def test_strict_exits_1_exactly_when_there_are_findings(
    name: str,
    flags: list[str],
    code: int,
    kind: str | None,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _write(tmp_path, CASES[name])
    assert main(["inspect", str(tmp_path), "--strict", *flags]) == code
    text = capsys.readouterr().out
    assert main(["inspect", str(tmp_path), "--format", "json", *flags]) == 0
    data = json.loads(capsys.readouterr().out)
    kinds = [f["kind"] for f in data["findings"]]
    if kind is None:
        assert "Findings: none" in text
        assert kinds == []
    else:
        assert "Findings (1 error)" in text
        assert f"  [error] {kind}: " in text
        assert kinds == [kind]


class _Trap:
    """A pickle whose loading would write a file: the proof that nothing was unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Callable[..., object], tuple[str, str]]:
        return (Path.write_text, (str(self.path), "unpickled"))


def test_pickle_only_checkpoint_is_not_checked_and_strict_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A .bin-only checkpoint exited 0 with --strict although none of its tensors was read: a warning says
    what was not checked, --strict fails on it, and the pickle is never loaded."""
    import pickle

    folder, trap = tmp_path / "ckpt", tmp_path / "trap.txt"
    model = llama(True)
    model.config.save_pretrained(folder)
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(_Trap(trap)))
    assert main(["inspect", str(folder), "--strict"]) == 1
    out, err = capsys.readouterr()
    assert "  [warning] checkpoint-not-checked: pytorch_model.bin" in out
    assert "holds only pickle files (pytorch_model.bin), which tiegraph never unpickles" in " ".join(
        out.split()
    )
    assert "--strict: the audit found 1 " in err
    assert "(checkpoint-not-checked)" in err
    assert not trap.exists()
    assert main(["inspect", str(folder)]) == 0
    capsys.readouterr()


def test_missing_shards_are_not_checked(tmp_path: Path) -> None:
    """An index naming a shard that is absent: its tensors were not read, and from_pretrained fails."""
    model = llama(True)
    model.save_pretrained(tmp_path, max_shard_size="4KB")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1
    (tmp_path / shards[-1]).unlink()
    built = build_spec(str(tmp_path))
    assert built.checkpoint is not None
    tg = tiegraph.build_graph(built.model)
    _checkpoint.check_checkpoint(tg, built.model, built.checkpoint, check_values=False)
    (found,) = [f for f in tg.audit() if f.kind == "checkpoint-not-checked"]
    assert found.paths == (shards[-1],)
    from transformers import AutoModelForCausalLM

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(FileNotFoundError, match=shards[-1]):  # what the finding says from_pretrained does
            AutoModelForCausalLM.from_pretrained(tmp_path)
