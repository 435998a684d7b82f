"""The ``tiegraph`` command, run for real: ``python -m tiegraph ...`` in a subprocess.

Every SPEC form (model type, checkpoint directory, factory), each wrapping flag, each output format, each
bad-input error (exit 2 with one line on stderr and no traceback), ``--strict``, a survey over a small
subset and the demo. The commands run a few at a time in a thread pool (each one spends most of its time
importing torch and transformers), then the tests read their results.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from models import TINY_LLAMA

from tiegraph.cli import main

FACTORY = """
import torch


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(10, 4)
        self.head = torch.nn.Linear(4, 10, bias=False)
        self.head.weight = self.embed.weight

    def get_input_embeddings(self):
        return self.embed


def make():
    return Tiny()


def not_a_module():
    return 3
"""

#: name -> (arguments with {placeholders} for the workspace, expected exit code)
RUNS: dict[str, tuple[list[str], int]] = {
    "type-text": (["inspect", "t5"], 0),
    "type-json": (
        [
            "inspect",
            "llama",
            "--set",
            "tie_word_embeddings=true",
            "--set",
            "num_hidden_layers=80",
            "-o",
            "{tmp}/llama.json",
        ],
        0,
    ),
    "nested-set": (
        ["inspect", "llava", "--set", "text_config.tie_word_embeddings=true"],
        0,
    ),
    "class": (["inspect", "bert", "--class", "BertForPreTraining"], 0),
    "peft-strict": (
        ["inspect", "gemma", "--peft", "lora:q_proj", "--peft", "modules-to-save:lm_head", "--strict"],
        1,
    ),
    "lora-tied-dot": (
        ["inspect", "gemma", "--peft", "lora-tied:lm_head", "--compile", "-o", "{tmp}/gemma.dot"],
        0,
    ),
    "ckpt-tied": (["inspect", "{tied_ckpt}", "--strict"], 0),
    "ckpt-differ": (["inspect", "{split_ckpt}", "--check-values", "--strict"], 1),
    "factory": (["inspect", "tiny_factory:make", "--allow-code", "--format", "json"], 0),
    "survey": (
        [
            "survey",
            "--only",
            "llama,t5",
            "--tasks",
            "causal-lm,seq2seq-lm",
            "--json",
            "{tmp}/survey.json",
            "--no-progress",
        ],
        0,
    ),
    "demo": (["demo", "--out", "{tmp}/demo"], 0),
    # bad usage or input: exit 2, one line on stderr
    "err-unknown-type": (["inspect", "lamma"], 2),
    "err-missing-dir": (["inspect", "{tmp}/nope/"], 2),
    "err-no-config": (["inspect", "{empty}"], 2),
    "err-bad-set": (["inspect", "llama", "--set", "tie_word_embeddings"], 2),
    "err-unknown-set-key": (["inspect", "llama", "--set", "tie_word_embedding=true"], 2),
    "err-bad-header": (["inspect", "{bad_header}"], 2),
    "err-not-module": (["inspect", "tiny_factory:not_a_module", "--allow-code"], 2),
    "err-no-allow-code": (["inspect", "tiny_factory:make"], 2),
    "err-bad-peft": (["inspect", "llama", "--peft", "lora"], 2),
    "err-bad-format": (["inspect", "llama", "--format", "jpeg"], 2),
    "err-png-stdout": (["inspect", "llama", "--format", "png"], 2),
    "err-check-values": (["inspect", "llama", "--check-values"], 2),
    "err-survey-task": (["survey", "--tasks", "causal"], 2),
    "err-no-command": ([], 2),
}

#: what each error's one line must name
ERROR_WORDS = {
    "err-unknown-type": ["'lamma'", "llama"],
    "err-missing-dir": ["no such directory", "nope"],
    "err-no-config": ["no config.json"],
    "err-bad-set": ["bad --set", "key=value"],
    "err-unknown-set-key": ["tie_word_embedding", "did you mean tie_word_embeddings"],
    "err-bad-header": ["unreadable safetensors header", "model.safetensors"],
    "err-not-module": ["returned int", "not a torch.nn.Module"],
    "err-no-allow-code": ["--allow-code"],
    "err-bad-peft": ["bad --peft", "lora-tied"],
    "err-bad-format": ["invalid choice", "jpeg"],
    "err-png-stdout": ["-o FILE.png"],
    "err-check-values": ["needs a checkpoint directory", "'llama'"],
    "err-survey-task": ["unknown task 'causal'", "causal-lm"],
    "err-no-command": ["inspect, diff, survey or demo"],
}


def _write_workspace(tmp: Path) -> dict[str, str]:
    """Checkpoints, a factory module and broken inputs, all made here (nothing downloaded)."""
    from safetensors.torch import save_file
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    config = AutoConfig.for_model("llama", **TINY_LLAMA)
    model = AutoModelForCausalLM.from_config(config)

    tied = tmp / "tied_ckpt"
    model.save_pretrained(tied)  # transformers saves the tied lm_head.weight once, as the embedding

    split = tmp / "split_ckpt"  # sharded, with an lm_head that differs from the embedding, and a pickle
    split.mkdir()
    config.save_pretrained(split)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    state["lm_head.weight"] = state["lm_head.weight"] + 1
    shards: dict[str, dict[str, torch.Tensor]] = {
        "model-00001-of-00002.safetensors": {},
        "model-00002-of-00002.safetensors": {},
    }
    for key, value in state.items():
        shards["model-0000{}-of-00002.safetensors".format(2 if key == "lm_head.weight" else 1)][key] = value
    weight_map = {}
    for name, tensors in shards.items():
        save_file(tensors, str(split / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(tensors, name))
    (split / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )
    (split / "pytorch_model.bin").write_bytes(b"not a pickle: tiegraph must never open this")

    bad = tmp / "bad_header"
    bad.mkdir()
    config.save_pretrained(bad)
    (bad / "model.safetensors").write_bytes(b"\xff" * 64)

    (tmp / "empty").mkdir()
    (tmp / "tiny_factory.py").write_text(FACTORY)
    return {
        "tmp": str(tmp),
        "tied_ckpt": str(tied),
        "split_ckpt": str(split),
        "bad_header": str(bad),
        "empty": str(tmp / "empty"),
    }


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run(
        [sys.executable, "-m", "tiegraph", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, subprocess.CompletedProcess[str]]]:
    """Every command of :data:`RUNS`, run once (three at a time), by name."""
    tmp = tmp_path_factory.mktemp("cli")
    places = _write_workspace(tmp)
    jobs = {name: [a.format(**places) for a in args] for name, (args, _) in RUNS.items()}
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {name: pool.submit(_run, args, tmp) for name, args in jobs.items()}
        yield {name: future.result() for name, future in futures.items()}


def _show(result: subprocess.CompletedProcess[str]) -> str:
    return (
        f"exit {result.returncode}\n--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}"
    )


@pytest.mark.parametrize("name", list(RUNS))
def test_exit_code_and_no_traceback(runs: dict[str, subprocess.CompletedProcess[str]], name: str) -> None:
    result = runs[name]
    assert result.returncode == RUNS[name][1], _show(result)
    assert "Traceback" not in result.stderr, _show(result)


@pytest.mark.parametrize("name", list(ERROR_WORDS))
def test_errors_are_one_line_naming_the_problem(
    runs: dict[str, subprocess.CompletedProcess[str]], name: str
) -> None:
    result = runs[name]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, _show(result)
    for word in ERROR_WORDS[name]:
        assert word in lines[0], _show(result)
    assert result.stdout == "", _show(result)


def test_model_type_text_report(runs: dict[str, subprocess.CompletedProcess[str]]) -> None:
    out = runs["type-text"].stdout
    assert out.startswith("t5: T5ForConditionalGeneration (default t5 config, task seq2seq-lm: the main"), out
    assert "tied to the input embedding: decoder.embed_tokens, encoder.embed_tokens, lm_head\n" in out
    assert "Tie groups (1)" in out
    assert "Findings" in out


def test_model_type_json_is_meta_and_reloads(
    runs: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    """``--set`` values are typed and reach the config: an 80-layer default Llama, built on meta."""
    path = Path(runs["type-json"].stderr.split("wrote ", 1)[1].strip())
    data = json.loads(path.read_text())
    assert data["class"] == "LlamaForCausalLM"
    assert data["kind"] == "model-type"
    assert data["tied_to_input_embedding"] == ["lm_head"]
    assert data["tie_groups"] == [["lm_head.weight", "model.embed_tokens.weight"]]
    assert data["parameters"] > 15e9  # 80 layers of the default 7B width (16.3B): only possible on meta
    assert [d["status"] for d in data["declared"]] == ["tied"]
    assert data["findings"] == []
    import tiegraph

    tg = tiegraph.TieGraph.from_json(data["graph"])
    assert tg.tied_to_input_embedding() == ["lm_head"]
    assert {d for _, d in tg.graph.nodes(data="device") if d} == {"meta"}


def test_nested_set_reaches_the_sub_config(runs: dict[str, subprocess.CompletedProcess[str]]) -> None:
    """Llava gates its head tie on the top-level flag: the text_config flag alone ties nothing (true)."""
    out = runs["nested-set"].stdout
    assert out.startswith("llava: LlavaForConditionalGeneration"), out
    assert "config.tie_word_embeddings=False, config.text_config.tie_word_embeddings=True" in out
    assert "tied to the input embedding: nothing" in out


def test_class_picks_the_head(runs: dict[str, subprocess.CompletedProcess[str]]) -> None:
    out = runs["class"].stdout
    assert out.startswith("bert: BertForPreTraining (default bert config, --class)"), out
    assert "tied to the input embedding: cls.predictions.decoder" in out


def test_modules_to_save_untie_fails_strict(runs: dict[str, subprocess.CompletedProcess[str]]) -> None:
    out = runs["peft-strict"].stdout
    assert "wrapped: PEFT lora on q_proj; PEFT modules-to-save on lm_head" in out
    assert "modules-to-save-copy-untied" in out


def test_lora_tied_compile_writes_dot(runs: dict[str, subprocess.CompletedProcess[str]]) -> None:
    import pydot

    path = Path(runs["lora-tied-dot"].stderr.split("wrote ", 1)[1].strip())
    graphs = pydot.graph_from_dot_data(path.read_text())
    assert graphs
    assert len(graphs) == 1


def test_checkpoint_tied_saved_once(runs: dict[str, subprocess.CompletedProcess[str]]) -> None:
    out = runs["ckpt-tied"].stdout
    assert "LlamaForCausalLM (its config.json)" in out
    assert (
        "tie group lm_head.weight, model.embed_tokens.weight: saved once as model.embed_tokens.weight" in out
    )
    assert "absent lm_head.weight (normal)" in out


def test_checkpoint_with_differing_copies(runs: dict[str, subprocess.CompletedProcess[str]]) -> None:
    """Both copies saved and different: transformers loads untied, and the pickle is never opened."""
    out = runs["ckpt-differ"].stdout
    assert "in 2 safetensors files, index model.safetensors.index.json" in out
    assert "skipped (pickle, never unpickled): pytorch_model.bin" in out
    assert "2 saved copies differ (lm_head.weight, model.embed_tokens.weight)" in out
    finding = "[error] checkpoint-tied-copies-differ: lm_head.weight, model.embed_tokens.weight"
    assert f"Findings (1 error)\n  {finding}" in out
    assert "from_pretrained keeps them apart (untied" in " ".join(out.split())


def test_factory(runs: dict[str, subprocess.CompletedProcess[str]]) -> None:
    data = json.loads(runs["factory"].stdout)
    assert data["kind"] == "factory"
    assert data["class"] == "Tiny"
    assert data["tied_to_input_embedding"] == ["head"]


def test_survey_subset(runs: dict[str, subprocess.CompletedProcess[str]]) -> None:
    result = runs["survey"]
    assert "architecture" in result.stdout
    assert "2 architectures in" in result.stdout
    path = Path(result.stderr.split("wrote ", 1)[1].strip())
    data = json.loads(path.read_text())
    rows = {row["model_type"]: row for row in data["results"]}
    assert rows["t5"]["status"] == "ok"
    assert rows["llama"]["status"] == "ok"
    assert rows["t5"]["tied_to_input_embedding"] == [
        "decoder.embed_tokens",
        "encoder.embed_tokens",
        "lm_head",
    ]
    assert rows["llama"]["tied_to_input_embedding"] == []
    assert [d["status"] for d in rows["llama"]["declared"]] == ["gated-off"]
    assert data["tasks"] == ["causal-lm", "seq2seq-lm"]
    assert data["transformers"]


def test_demo_writes_pictures_and_names_the_folder(runs: dict[str, subprocess.CompletedProcess[str]]) -> None:
    out = runs["demo"].stdout
    folder = Path(out.strip().splitlines()[-1].split(" in ", 1)[1])
    assert folder.name == "demo"
    assert len(list(folder.glob("*.dot"))) == 7
    assert out.count("\n== ") == 7
    assert "modules-to-save-copy-untied" in out
    assert "declared-not-tied" in out


@pytest.mark.parametrize(
    "argv", [["--help"], ["inspect", "--help"], ["survey", "--help"], ["demo", "--help"]]
)
def test_help_has_examples(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "examples:" in out
    assert "tiegraph" in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    import tiegraph

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"tiegraph {tiegraph.__version__}"
