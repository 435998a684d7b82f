"""The hand-off room: folder facts, and the transformers 5 rule checked against real ``from_pretrained``.

Every folder is written by the real ``save_pretrained`` of a tiny model, then edited as users' folders are
(the flag removed or flipped, the head added, removed, replaced, padded or given a bias, the files sharded).
The transformers 5 prediction is compared with what the installed transformers really loads; the other
consumers run only under ``python3 dev.py engines``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import torch
from models import TINY_LLAMA, _config, llava
from safetensors.torch import load_file, save_file

import tiegraph
import tiegraph.engines as engines
from tiegraph.engines import FolderError, folder_facts, outcomes

EMBED, HEAD = "model.embed_tokens.weight", "lm_head.weight"

# situation -> (config flag: True / False / None for no key, head: None / "equal" / "different" / "padded")
SITUATIONS: dict[str, tuple[bool | None, str | None]] = {
    "tied-no-head": (True, None),
    "tied-head-equal": (True, "equal"),
    "tied-head-different": (True, "different"),
    "untied-head": (False, "different"),
    "untied-no-head": (False, None),
    "nokey-head-different": (None, "different"),
    "nokey-no-head": (None, None),
    "vocab-mismatch": (True, "padded"),
}


def write_folder(
    out: Path, model_type: str, flag: bool | None, head: str | None, *, bias: bool = False, shards: int = 1
) -> Path:
    """Save a tiny untied model of ``model_type``, then edit its flag and head as a user's folder would be."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    kwargs = {k: v for k, v in TINY_LLAMA.items() if k != "tie_word_embeddings"}
    model = AutoModelForCausalLM.from_config(_config(model_type, tie_word_embeddings=False, **kwargs))
    model.save_pretrained(out)
    config = json.loads((out / "config.json").read_text())
    config.pop("tie_word_embeddings", None)
    if flag is not None:
        config["tie_word_embeddings"] = flag
    (out / "config.json").write_text(json.dumps(config))
    tensors = load_file(out / "model.safetensors")
    if head is None:
        tensors.pop(HEAD)
    elif head == "equal":
        tensors[HEAD] = tensors[EMBED].clone()
    elif head == "padded":
        tensors[HEAD] = torch.cat([tensors[HEAD], torch.randn(8, tensors[HEAD].shape[1])])
    if bias:
        tensors["lm_head.bias"] = torch.randn(tensors[EMBED].shape[0])
    _write(out, tensors, shards)
    return out


def _write(out: Path, tensors: dict[str, torch.Tensor], shards: int) -> None:
    (out / "model.safetensors").unlink()
    if shards == 1:
        save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
        return
    names = sorted(tensors, key=lambda k: (k == HEAD, k))  # the head in the last shard
    weight_map = {}
    for i in range(shards):
        file = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = names[i::shards]
        save_file({k: tensors[k] for k in part}, str(out / file), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, file))
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


class _Collect(logging.Handler):
    """A logging handler that keeps every record."""

    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__()
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def loaded_head(folder: Path) -> tuple[str, bool]:
    """What real transformers puts in the head (an outcome label) and whether it warned."""
    from transformers import AutoModelForCausalLM

    records: list[logging.LogRecord] = []
    handler = _Collect(records)
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    level, disabled = logger.level, logger.disabled
    logger.setLevel(logging.WARNING)  # another test (the CLI's quiet mode) may have silenced it
    logger.disabled = False
    files = {}
    for f in folder.glob("*.safetensors"):
        files.update(load_file(f))
    try:
        model = AutoModelForCausalLM.from_pretrained(folder)
    except (RuntimeError, ValueError):
        return "load-error", bool(records)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.disabled = disabled
    head, embed = model.lm_head.weight, model.model.embed_tokens.weight
    warned = any(r.levelno >= logging.WARNING for r in records)
    if not torch.equal(embed, files[EMBED]):
        return "embedding-replaced", warned
    if HEAD in files and torch.equal(head, files[HEAD]):
        return "folder-head", warned
    if torch.equal(head, files[EMBED]):
        return "embedding", warned
    return "random", warned


def _same(predicted: str, measured: str, folder: Path) -> bool:
    """Equal head and embedding in the files count as both (DESIGN.md)."""
    if predicted == measured:
        return True
    files = load_file(folder / "model.safetensors") if (folder / "model.safetensors").exists() else {}
    equal = HEAD in files and torch.equal(files[HEAD], files[EMBED])
    return equal and {predicted, measured} == {"embedding", "folder-head"}


@pytest.mark.parametrize("model_type", ["llama", "gemma"])
@pytest.mark.parametrize("situation", list(SITUATIONS))
def test_transformers5_rule_matches_from_pretrained(tmp_path: Path, model_type: str, situation: str) -> None:
    """The transformers 5 prediction is what the installed transformers loads, in every situation."""
    flag, head = SITUATIONS[situation]
    folder = write_folder(tmp_path, model_type, flag, head)
    (outcome,) = outcomes(folder, engines=["transformers-5"], check_values=True)
    measured, warned = loaded_head(folder)
    assert _same(outcome.head, measured, folder), (outcome, measured)
    assert outcome.warns == warned, (outcome, warned)


def test_facts_read_headers_sharded_and_flags_at_every_level(tmp_path: Path) -> None:
    folder = write_folder(tmp_path, "llama", True, "different", bias=True, shards=2)
    facts = folder_facts(folder)
    assert facts.flags == {"": True}
    assert (facts.embedding, facts.head, facts.head_state) == (EMBED, HEAD, "present")
    assert facts.companions == ("lm_head.bias",)
    assert len(facts.files) == 2
    assert folder_facts(folder, check_values=True).head_state == "different"
    assert engines.tie_flags({"text_config": {"tie_word_embeddings": False}}) == {"text_config": False}


def test_vocab_mismatch_is_a_load_error_finding(tmp_path: Path) -> None:
    folder = write_folder(tmp_path, "llama", False, "padded")
    (o,) = outcomes(folder, engines=["transformers-5"])
    assert (o.head, o.finding_kind) == ("load-error", "engine-load-error")
    assert folder_facts(folder).head_state == "mismatch"


def test_values_decide_only_when_asked(tmp_path: Path) -> None:
    """A tied config over a saved head: engines that drop the head lose it only if the values differ."""
    folder = write_folder(tmp_path, "llama", True, "equal")
    fast = {o.engine: o for o in outcomes(folder, engines=["mlx-lm", "transformers-5"])}
    # equal or not, transformers' head holds the saved head's values
    assert fast["transformers-5"].head == "folder-head"
    assert fast["mlx-lm"].head == "embedding"
    assert fast["mlx-lm"].finding_kind == "engine-head-values-unchecked"
    (checked,) = outcomes(folder, engines=["mlx-lm"], check_values=True)
    assert (checked.head, checked.finding_kind) == ("embedding", None)


def test_head_bias_dropped_is_a_companion_finding(tmp_path: Path) -> None:
    folder = write_folder(tmp_path, "llama", False, "different", bias=True)
    (o,) = outcomes(folder, engines=["transformers-5"])
    assert o.companions == (("lm_head.bias", "dropped-warns"),)
    assert o.finding_kind == "engine-drops-head-companion"
    (mlx,) = outcomes(folder, engines=["mlx-lm"])
    assert mlx.head == "load-error"


def test_head_never_saved_is_a_finding_for_every_consumer(tmp_path: Path) -> None:
    folder = write_folder(tmp_path, "llama", False, None)
    result = outcomes(folder)
    assert [o.engine for o in result] == list(engines.ENGINE_IDS)
    assert {o.finding_kind for o in result} == {"head-never-saved"}
    found = engines.findings(result)
    assert len(found) == len(result)
    assert all(f.paths == (HEAD,) for f in found)


def test_text_config_only_vlm(tmp_path: Path) -> None:
    """The flag only in text_config: transformers 5 reads the top level (its class default)."""
    model = llava(tie_word_embeddings=False)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config.pop("tie_word_embeddings", None)
    config["text_config"]["tie_word_embeddings"] = True
    (tmp_path / "config.json").write_text(json.dumps(config))
    facts = folder_facts(tmp_path)
    assert facts.flags == {"text_config": True}
    assert facts.embedding == "language_model.model.embed_tokens.weight"  # save_pretrained's legacy layout
    (o,) = outcomes(tmp_path, engines=["transformers-5"])
    assert o.tied is True  # LlavaConfig adopts a True text_config flag
    (o,) = outcomes(tmp_path, engines=["optimum-onnx"])  # an architecture the consumer has no class for
    assert (o.head, o.warns, o.finding_kind) == ("load-error", True, "engine-load-error")
    assert "no ONNX export config for llava" in o.verdict


def test_not_modelled_architecture_is_unknown_not_guessed(tmp_path: Path) -> None:
    folder = write_folder(tmp_path, "qwen3", True, "different")
    (o,) = outcomes(folder, engines=["mlx-lm"])
    assert (o.head, o.finding_kind) == ("unknown", None)
    assert "qwen3" in o.verdict


def test_hub_id_read_offline_from_the_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = write_folder(tmp_path / "src", "llama", True, "different")
    commit = "0" * 40
    repo = tmp_path / "hub" / "models--org--tiny"
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    for f in folder.iterdir():
        (snap / f.name).write_bytes(f.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    facts = folder_facts("org/tiny")
    assert (facts.head, facts.flags) == (HEAD, {"": True})
    with pytest.raises(FolderError, match="org/absent"):
        folder_facts("org/absent")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p, "no config.json"),
        (lambda p: p / "nothing-here", "neither a directory nor a hub id"),
    ],
)
def test_bad_input_is_one_clear_error(tmp_path: Path, make: Any, message: str) -> None:
    with pytest.raises(FolderError, match=message):
        folder_facts(make(tmp_path))
    with pytest.raises(FolderError, match="unknown engine 'nope'"):
        outcomes(tmp_path, engines=["nope"])


def test_model_in_memory_predicts_what_save_pretrained_writes(tmp_path: Path) -> None:
    """Config tied over tensors that are not aliased: both are saved; by value only when asked."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(_config("llama", **TINY_LLAMA))
    tied = {o.engine: o for o in outcomes(model)}
    assert tied["mlx-lm"].head == "embedding"
    assert all(o.intended == "embedding" for o in tied.values())
    model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach() + 1)
    predicted = {o.engine: o for o in outcomes(model, check_values=True)}
    model.save_pretrained(tmp_path)
    written = {o.engine: o for o in outcomes(tmp_path, check_values=True)}
    assert {e: o.head for e, o in predicted.items()} == {e: o.head for e, o in written.items()}
    assert predicted["mlx-lm"].finding_kind == "engine-drops-trained-head"
    measured, warned = loaded_head(tmp_path)
    assert (predicted["transformers-5"].head, predicted["transformers-5"].warns) == (measured, warned)


def test_model_in_memory_needs_a_transformers_model() -> None:
    with pytest.raises(TypeError, match="PreTrainedModel"):
        outcomes(torch.nn.Linear(2, 2))


def _list_style_llama(tie: bool) -> Any:
    from transformers import LlamaForCausalLM

    class OldStyleLlama(LlamaForCausalLM):
        _tied_weights_keys = ["lm_head.weight"]  # type: ignore[assignment]  # noqa: RUF012 -- transformers 4 style

    return OldStyleLlama(_config("llama", **{**TINY_LLAMA, "tie_word_embeddings": tie}))


def test_list_tied_weights_keys_crash_under_transformers5_is_an_error(tmp_path: Path) -> None:
    """transformers#44861, reproduced with the installed transformers: construction or save fails."""
    with pytest.raises(AttributeError, match="'list' object has no attribute 'keys'"):
        _list_style_llama(True)
    model = _list_style_llama(False)
    with pytest.raises(AttributeError, match="'list' object has no attribute 'keys'"):
        model.save_pretrained(tmp_path)
    found = [f for f in tiegraph.build_graph(model).audit() if f.kind == "list-tied-weights-keys"]
    assert [f.paths for f in found] == [("lm_head.weight",)]
    assert "transformers#44861" in found[0].message


def test_non_word_tie_switched_off_by_the_word_flag() -> None:
    """transformers PR#48999: tie_word_embeddings=False also switches off a tie between two other layers."""
    from transformers import LlamaForCausalLM

    class TwoProjections(LlamaForCausalLM):
        def __init__(self, config: Any) -> None:
            super().__init__(config)
            self.proj_a, self.proj_b = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)
            self._tied_weights_keys = {
                "lm_head.weight": "model.embed_tokens.weight",
                "proj_b.weight": "proj_a.weight",
            }
            self.post_init()  # type: ignore[no-untyped-call]  # transformers ties (or, with the flag off, does not tie) the declared pairs

    off = TwoProjections(_config("llama", **{**TINY_LLAMA, "tie_word_embeddings": False}))
    assert off.proj_a.weight is not off.proj_b.weight  # the real transformers leaves it untied
    kinds = {f.kind: f.paths for f in tiegraph.build_graph(off).audit()}
    assert kinds["non-word-tie-gated-off"] == ("proj_a.weight", "proj_b.weight")
    on = TwoProjections(_config("llama", **TINY_LLAMA))
    assert "non-word-tie-gated-off" not in {f.kind for f in tiegraph.build_graph(on).audit()}


def test_missing_flag_where_consumer_defaults_disagree(tmp_path: Path) -> None:
    """Llama without the key: transformers and vLLM read untied, mlx-lm's ModelArgs default reads tied."""
    folder = write_folder(tmp_path, "llama", None, "different")
    (found,) = engines.lint(folder)
    assert found.kind == "tie-flag-missing-defaults-disagree"
    assert "mlx-lm tied" in found.message
    assert "vllm untied" in found.message
    assert not engines.lint(write_folder(tmp_path / "tied", "llama", True, None))


def test_assert_engines_load_trained_head(tmp_path: Path) -> None:
    import tiegraph.testing

    good = write_folder(tmp_path / "good", "llama", False, "different")
    tiegraph.testing.assert_engines_load_trained_head(good, engines=["transformers-5", "vllm", "mlx-lm"])
    bad = write_folder(tmp_path / "bad", "llama", True, "different")
    with pytest.raises(AssertionError, match=r"mlx-lm \(mlx-lm 0.32.2\): embedding instead") as info:
        tiegraph.testing.assert_engines_load_trained_head(bad, engines=["transformers-5", "mlx-lm"])
    assert "transformers-5" not in str(info.value)


def test_as_loaded_unties_where_from_pretrained_does(tmp_path: Path) -> None:
    """A checkpoint saving two different copies under a tied config reloads untied (transformers 5 rule)."""
    from tiegraph.cli.specs import build_checkpoint
    from tiegraph.engines._loaded import as_loaded

    tied = write_folder(tmp_path / "a", "llama", True, None)
    copies = write_folder(tmp_path / "b", "llama", True, "different")
    before = build_checkpoint(tied).model
    after = build_checkpoint(copies).model
    assert as_loaded(before, tied, check_values=True) == ""
    assert "depends on their values" in as_loaded(after, copies)  # headers alone cannot tell
    head, embedding = "lm_head.weight", "model.embed_tokens.weight"
    assert after.get_parameter(head) is after.get_parameter(embedding)
    assert "apart" in as_loaded(after, copies, check_values=True)
    assert after.get_parameter(head) is not after.get_parameter(embedding)
    from tiegraph._diff import diff

    d = diff(tiegraph.build_graph(before), tiegraph.build_graph(after))
    assert ("lm_head.weight", "model.embed_tokens.weight") in d.broken
    from transformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(copies)  # what the real library gives
    assert loaded.lm_head.weight is not loaded.model.embed_tokens.weight


def test_report_lines_and_json_name_versions_and_what_was_not_run(tmp_path: Path) -> None:
    from tiegraph.engines._report import check_folder, engines_json, engines_lines

    folder = write_folder(tmp_path, "llama", True, "different")
    facts, result, found = check_folder(str(folder), check_values=True)
    text = "\n".join(engines_lines(facts, result))
    assert "transformers-5     transformers 5.24: folder-head, warns" in text
    assert "sglang" in text
    assert "[rule read from source, not run here]" in text
    (runtime,) = [line for line in text.splitlines() if line.strip().startswith("llama.cpp-runtime")]
    assert "not run here" not in runtime  # built from the sdist and run by dev.py engines
    data = engines_json(facts, result)
    assert data["head_state"] == "different"
    assert {o["engine"] for o in data["outcomes"]} == set(engines.ENGINE_IDS)
    assert {f.kind for f in found} >= {"engine-drops-trained-head", "engine-replaces-embedding"}
    json.dumps(data)  # plain JSON


def test_quantized_head_is_said_unknown_never_guessed(tmp_path: Path) -> None:
    """A GPTQ-style head (qweight and scales, no lm_head.weight) is a saved head no rule was read for."""
    folder = write_folder(tmp_path, "llama", True, None)
    tensors = load_file(folder / "model.safetensors")
    tensors["lm_head.qweight"] = torch.zeros(2, 64, dtype=torch.int32)
    tensors["lm_head.scales"] = torch.ones(1, 64)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    facts = folder_facts(folder)
    assert (facts.head, facts.head_state, facts.companions) == (
        "lm_head.qweight",
        "quantized",
        ("lm_head.scales",),
    )
    result = outcomes(folder)
    assert {o.head for o in result} == {"unknown"}
    assert {o.finding_kind for o in result} == {None}


def test_lint_names_a_nested_declarer_path_first() -> None:
    """Every report names a declaring module the same way: its path, then its class."""
    pair = torch.nn.Module()
    pair.student, pair.teacher = _list_style_llama(False), _list_style_llama(False)
    found = [f for f in tiegraph.build_graph(pair).audit() if f.kind == "list-tied-weights-keys"]
    assert sorted(f.message.split(" declares ")[0] for f in found) == [
        "student (OldStyleLlama)",
        "teacher (OldStyleLlama)",
    ]
