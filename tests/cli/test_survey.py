"""``tiegraph survey``: repairs of default configs, classification of what still fails, the committed survey.

The committed ``docs/survey.json`` (and the ``docs/survey.md`` made from the same run) must match what the
installed transformers builds: a fixed subset of architectures, chosen to cover every finding kind the
survey saw, is rebuilt here and compared row by row with the committed rows.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import transformers

from tiegraph.cli import main
from tiegraph.cli import repairs as _repairs
from tiegraph.cli import specs as _spec
from tiegraph.cli import survey as _survey
from tiegraph.cli import survey_report as _survey_report

ROOT = Path(__file__).resolve().parents[2]
SURVEY_JSON = ROOT / "docs" / "survey.json"
SURVEY_MD = ROOT / "docs" / "survey.md"

#: Ten model types that cover every finding kind of the committed survey, and the repairs and statuses
#: beside them: marian (input-embedding-is-declared-target), luke (a flag its own ties honor: no finding),
#: vision-encoder-decoder (config-flags-disagree), qwen3_omni_moe
#: (unresolved-declaration, after fill-none), t5 (one tensor under four names), bert (weight and bias ties,
#: three heads), llama (gated off), reformer (asserted-flag), musicgen (sub-config), fast_vlm
#: (needs-dependency).
SUBSET = (
    "marian",
    "luke",
    "vision-encoder-decoder",
    "qwen3_omni_moe",
    "t5",
    "bert",
    "llama",
    "reformer",
    "musicgen",
    "fast_vlm",
)


@pytest.fixture(scope="module")
def committed() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(SURVEY_JSON.read_text())
    return data


@pytest.fixture(scope="module")
def subset_rows() -> list[dict[str, Any]]:
    items = _survey.survey_items(_survey.DEFAULT_TASKS, SUBSET)
    return [_survey.survey_one(item, time_limit=120) for item in items]


def test_committed_survey_ran_on_the_installed_transformers(committed: dict[str, Any]) -> None:
    """The pinned transformers (constraints.txt) is the one the committed survey states and ran on."""
    assert committed["transformers"] == transformers.__version__
    pins = (ROOT / "constraints.txt").read_text().splitlines()
    assert f"transformers=={committed['transformers']}" in pins
    assert f"transformers {committed['transformers']}" in SURVEY_MD.read_text().split("\n## ", 1)[0]


def test_subset_covers_every_finding_kind(committed: dict[str, Any]) -> None:
    seen = {f["kind"] for r in committed["results"] for f in r.get("findings") or []}
    covered = {
        f["kind"] for r in committed["results"] if r["model_type"] in SUBSET for f in r.get("findings") or []
    }
    assert seen
    assert covered == seen


@pytest.mark.slow
def test_subset_still_gives_the_committed_rows(
    committed: dict[str, Any], subset_rows: list[dict[str, Any]]
) -> None:
    old = [r for r in committed["results"] if r["model_type"] in SUBSET]
    diff = _survey_report.compare({"results": old}, {"results": subset_rows})
    assert (diff["added"], diff["removed"], diff["changed"]) == ([], [], {}), diff
    assert len(subset_rows) >= 10


def test_committed_survey_builds_enough(committed: dict[str, Any]) -> None:
    """At most 1% of pairs unbuilt, none unexplained: every failure is classified, no tiegraph bug."""
    rows = committed["results"]
    failed = [r for r in rows if r["status"] != "ok"]
    assert len(failed) <= len(rows) / 100, failed
    assert all(r["status"] in ("needs-dependency", "transformers-bug") for r in failed), failed
    assert all(r["reason"] for r in failed)


# ---------------------------------------------------------------------------------------------- repairs
def _row(model_type: str, cls: str, task: str) -> dict[str, Any]:
    return _survey.survey_one((model_type, cls, [task]), time_limit=120)


def test_default_config_that_builds_needs_no_repair() -> None:
    row = _row("llama", "LlamaForCausalLM", "causal-lm")
    assert row["status"] == "ok"
    assert row["repairs"] == []
    assert "repair_changes" not in row


def test_asserted_flag_repair_sets_what_the_class_asserts() -> None:
    """ReformerModelWithLMHead asserts ``config.is_decoder``; the default config has it False."""
    row = _row("reformer", "ReformerModelWithLMHead", "causal-lm")
    assert row["status"] == "ok"
    assert row["repairs"] == ["asserted-flag"]
    assert row["repair_changes"] == ["is_decoder=True"]
    assert "is_decoder=True" in row["default_error"]


def test_validator_value_goes_into_the_sub_config_that_has_it() -> None:
    """Gemma4AssistantConfig's validator refuses its own default text config (hidden_size_per_layer_input)."""
    with pytest.raises(Exception, match="hidden_size_per_layer_input must be 0"):
        transformers.AutoConfig.for_model("gemma4_assistant")
    row = _row("gemma4_assistant", "Gemma4AssistantForCausalLM", "causal-lm")
    assert row["status"] == "ok"
    assert row["repairs"] == ["asserted-flag"]
    assert "text_config.hidden_size_per_layer_input=0" in row["repair_changes"]
    assert row["tied_to_input_embedding"] == ["lm_head"]


def test_fill_none_derives_sizes_from_their_namesakes() -> None:
    row = _row("ministral", "MinistralForCausalLM", "causal-lm")
    config = transformers.AutoConfig.for_model("ministral")
    assert config.head_dim is None
    assert row["repair_changes"] == [f"head_dim={config.hidden_size // config.num_attention_heads}"]


def test_sub_config_and_heads_divide_hidden() -> None:
    assert _row("musicgen", "MusicgenForCausalLM", "causal-lm")["repair_changes"] == ["config.decoder"]
    row = _row("aya_vision", "AyaVisionForConditionalGeneration", "image-text-to-text")
    assert row["repairs"] == ["heads-divide-hidden"]
    assert row["repair_changes"] == ["vision_config.num_attention_heads=12"]  # 1152 hidden, 14 heads


def test_missing_package_is_named_not_repaired() -> None:
    row = _row("fast_vlm", "FastVlmForConditionalGeneration", "image-text-to-text")
    assert row["status"] == "needs-dependency"
    assert row["repairs"] == []
    assert row["reason"].startswith("needs timm: ")
    assert "torchvision" in row["reason"]


def test_repairs_never_touch_tie_flags() -> None:
    """Whatever the repairs change, it is never a tie flag or a declaration."""
    for text in _repairs.REPAIRS.values():
        assert "tie_word_embeddings" not in text
    config = transformers.AutoConfig.for_model("hunyuan_v1_dense")
    state = _repairs._State("hunyuan_v1_dense", transformers.HunYuanDenseV1ForCausalLM, None, config=config)
    changes = _repairs._fill_none(state, TypeError("x"))
    assert changes
    assert not any("tie" in c for c in changes)


def test_transformers_bug_is_checked_in_transformers_alone() -> None:
    """The check behind ``transformers-bug``: the default config built without tiegraph's meta helper."""
    error = _survey._fails_in_transformers("ministral", transformers.MinistralForCausalLM, None)
    assert error is not None
    assert error.startswith("TypeError: unsupported operand")
    assert _survey._fails_in_transformers("llama", transformers.LlamaForCausalLM, None) is None


def test_survey_row_never_raises() -> None:
    """A model that overruns the time limit, and a class that does not exist, become rows."""
    rows = [
        _survey.survey_one(("videomae", "VideoMAEForPreTraining", ["pretraining"]), time_limit=0.001),
        _survey.survey_one(("llama", "NoSuchModelClass", ["causal-lm"]), time_limit=10),
    ]
    assert rows[0]["status"] == "timeout", rows[0]
    assert rows[1]["status"] == "transformers-bug"
    assert "NoSuchModelClass" in rows[1]["reason"]
    table = _survey_report.format_table(rows)
    assert "not built (2):" in table
    assert "timeout" in table


# ---------------------------------------------------------------------------------------------- report
def test_markdown_leads_with_findings_by_kind(committed: dict[str, Any]) -> None:
    text = _survey_report.format_markdown(
        committed["results"], committed, {k: committed[k] for k in ("tiegraph", "transformers", "tasks")}
    )
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings[0].startswith("## Findings by kind")
    assert headings[-1].startswith("## All architectures")
    # Luke's flag turns on ties its code makes (entity head, bias), none of the word embedding's: no finding
    assert "| luke | LukeForMaskedLM | - | 2 | tied:2 | - | - |" in text
    section = text.split("### `input-embedding-is-declared-target`", 1)[1].split("\n### ", 1)[0]
    entry = 'MarianMTModel._tied_weights_keys["model.encoder.embed_tokens.weight"] = "model.shared.weight"'
    assert f"| marian | MarianMTModel | `{entry}` | " in section


def test_committed_markdown_is_the_committed_json(committed: dict[str, Any]) -> None:
    """docs/survey.md is rendered from the same rows as docs/survey.json (nothing edited by hand)."""
    meta = {k: committed[k] for k in ("tiegraph", "transformers", "torch", "tasks")}
    assert SURVEY_MD.read_text() == _survey_report.format_markdown(committed["results"], committed, meta)


def test_json_holds_what_the_table_shows_and_the_repairs(committed: dict[str, Any]) -> None:
    for row in committed["results"]:
        if row["status"] == "ok":
            assert {"tied_to_input_embedding", "tie_groups", "declared", "findings", "repairs"} <= row.keys()
            if row["repairs"]:
                assert row["repair_changes"]
                assert row["default_error"]
    assert {"seconds", "jobs", "load", "transformers"} <= committed.keys()


def test_compare_shows_added_removed_and_changed(committed: dict[str, Any]) -> None:
    new = copy.deepcopy(committed)
    rows = {(r["model_type"], r["class"]): r for r in new["results"]}
    llama = rows["llama", "LlamaForCausalLM"]
    llama["tied_to_input_embedding"] = ["lm_head"]
    llama["findings"] = [{"kind": "tied-not-declared", "paths": ["a.weight", "b.weight"], "message": "m"}]
    new["results"].remove(rows["t5", "T5ForConditionalGeneration"])
    new["results"].append({"model_type": "zz_new", "class": "ZzForCausalLM", "status": "ok"})
    new["transformers"] = "9.9.9"
    diff = _survey_report.compare(committed, new)
    assert diff["added"] == ["zz_new ZzForCausalLM"]
    assert diff["removed"] == ["t5 T5ForConditionalGeneration"]
    assert set(diff["changed"]) == {"llama LlamaForCausalLM"}
    text = _survey_report.format_compare(diff, "old.json")
    assert f"transformers {committed['transformers']} -> 9.9.9" in text
    assert "llama LlamaForCausalLM: tied targets: none -> [lm_head]" in text
    assert "llama LlamaForCausalLM: findings: + tied-not-declared (a.weight, b.weight)" in text


def test_cli_compare(committed: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``survey --compare OLD.json``: a saved survey whose llama row was edited shows that change only."""
    old = copy.deepcopy(committed)
    for row in old["results"]:
        if row["class"] == "LlamaForCausalLM":
            row["declared"] = []
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    argv = ["survey", "--only", "llama", "--tasks", "causal-lm", "--jobs", "1", "--no-progress"]
    assert main([*argv, "--compare", str(path)]) == 0
    out = capsys.readouterr().out
    change = "declared: + lm_head.weight -> model.embed_tokens.weight (gated-off)"
    assert f"llama LlamaForCausalLM: {change}" in out
    assert "  added (0)" in out
    assert "removed (" in out
    path.write_text("[]")
    assert main([*argv, "--compare", str(path)]) == 2
    assert "not a survey written by --json" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- inspect
def test_inspect_picks_the_main_generation_head() -> None:
    """``tiegraph inspect whisper`` builds the conditional-generation class, not the assistant decoder."""
    built = _spec.build_spec("whisper")
    assert built.cls == "WhisperForConditionalGeneration"
    assert "the main generation head" in built.source
    assert "causal-lm WhisperForCausalLM" in built.source
    assert _spec.build_spec("whisper", task="causal-lm").cls == "WhisperForCausalLM"
    assert _spec.build_spec("bert").cls == "BertForMaskedLM"


def test_inspect_repairs_a_default_config_and_says_so() -> None:
    built = _spec.build_spec("ministral")
    assert built.cls == "MinistralForCausalLM"
    assert "repaired (fill-none: head_dim=128)" in built.source
