"""Exit codes and messages a new user tripped on: each one run through ``main(argv)``
in-process, or as a real subprocess where the environment must differ (a hidden package, a cache)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from models import TINY_LLAMA

from tiegraph.cli import main
from tiegraph.cli.parser import build_parser as _parser

BROKEN_FACTORY = """
import torch


class Broken(torch.nn.Module):
    def named_modules(self, *args, **kwargs):
        raise RuntimeError("boom inside the model")


def make():
    return Broken()
"""


def _main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()  # what the test's own setup printed (progress bars) is not the command's
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


# ---------------------------------------------------------------------------------------------- -v


@pytest.mark.parametrize(
    ("argv", "verbose"),
    [
        (["-v", "inspect", "llama"], True),
        (["inspect", "-v", "llama"], True),
        (["inspect", "llama"], False),
        (["-v", "survey"], True),
        (["demo", "--verbose"], True),
    ],
)
def test_verbose_before_or_after_the_command(argv: list[str], verbose: bool) -> None:
    """``tiegraph -v inspect`` was ignored: the subcommand's default overwrote the top-level -v."""
    assert _parser().parse_args(argv).verbose is verbose


@pytest.fixture
def broken_factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "broken_factory.py").write_text(BROKEN_FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "broken_factory:make"


@pytest.mark.parametrize("where", ["before", "after"])
def test_verbose_internal_error_is_exit_3_with_the_traceback(
    broken_factory: str, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    """``inspect -v`` let an internal error escape (exit 1); it is exit 3, with the traceback shown."""
    args = ["inspect", broken_factory, "--allow-code"]
    argv = ["-v", *args] if where == "before" else [*args, "-v"]
    code, _, err = _main(argv, capsys)
    assert code == 3
    assert "Traceback" in err
    assert "boom inside the model" in err
    assert err.strip().splitlines()[-1] == "tiegraph inspect: internal error: RuntimeError"


def test_internal_error_without_verbose_is_one_line(
    broken_factory: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _main(["inspect", broken_factory, "--allow-code"], capsys)
    assert code == 3
    line = _one_line(err)
    assert "internal error: RuntimeError: boom inside the model" in line
    assert "rerun with -v" in line


# ---------------------------------------------------------------------------------------------- writing


def test_unwritable_output_is_exit_2_cannot_write(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``-o`` into a missing folder, or onto a folder, was an internal error (exit 3)."""
    for target, why in [
        (tmp_path / "missing" / "x.json", "no such directory"),
        (tmp_path / "x.png", None),
    ]:
        if why is None:
            target.mkdir()
            why = "it is a directory"
        code, out, err = _main(["inspect", "llama", "-o", str(target)], capsys)
        assert code == 2, err
        line = _one_line(err)
        assert line.startswith("tiegraph inspect: error: cannot write"), line
        assert why in line, line
        assert str(target) in line
        assert out == ""


def test_survey_output_unwritable_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _main(["survey", "--only", "llama", "--json", str(tmp_path / "no" / "s.json")], capsys)
    assert code == 2
    assert "cannot write" in _one_line(err)


def test_demo_out_onto_a_file_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``demo --out FILE`` was an internal error (exit 3)."""
    target = tmp_path / "pictures"
    target.write_text("a file, not a folder")
    code, out, err = _main(["demo", "--out", str(target)], capsys)
    assert code == 2
    line = _one_line(err)
    assert "cannot write pictures into" in line
    assert "it is a file" in line
    assert out == ""


# ---------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("argv", "prog"),
    [
        (["inspect", "llama", "--bogus"], "tiegraph inspect"),
        (["diff", "llama", "llama", "--bogus"], "tiegraph diff"),
        (["survey", "--bogus"], "tiegraph survey"),
        (["--bogus"], "tiegraph"),
    ],
)
def test_unknown_flag_is_blamed_on_its_command(
    argv: list[str], prog: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unknown flag after ``inspect`` or ``diff`` was blamed on ``tiegraph`` and pointed at ``tiegraph
    --help``, which does not list the command's flags."""
    code, out, err = _main(argv, capsys)
    assert code == 2
    assert _one_line(err) == f"{prog}: error: unrecognized arguments: --bogus (see {prog} --help)"
    assert out == ""


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["inspect", "{tmp}/nope", "--check-values"], ["no such directory", "nope"]),
        (["inspect", "./nope", "--check-values"], ["no such directory: ./nope"]),
        (["inspect", "llama", "--check-values"], ["needs a checkpoint directory", "'llama'"]),
        (["survey", "--jobs", "0"], ["--jobs must be at least 1"]),
        (["survey", "-j", "-2"], ["--jobs must be at least 1, not -2"]),
        (["survey", "--time-limit", "-1"], ["--time-limit must be a positive number", "-1"]),
        (["survey", "--time-limit", "0"], ["--time-limit must be a positive number"]),
    ],
)
def test_bad_input_is_exit_2_naming_it(
    argv: list[str], words: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--check-values`` on a missing directory said "needs a checkpoint directory"; ``--jobs 0`` and
    ``--time-limit -1`` were accepted."""
    code, out, err = _main([a.format(tmp=tmp_path) for a in argv], capsys)
    assert code == 2, err
    line = _one_line(err)
    for word in words:
        assert word in line, line
    assert out == ""


def test_strict_with_a_picture_says_why_on_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A ``--strict`` run writing a picture exited 1 saying only "wrote x.dot"."""
    target = tmp_path / "x.dot"
    argv = ["inspect", "gemma", "--peft", "lora:q_proj", "--peft", "modules-to-save:lm_head", "--strict"]
    code, out, err = _main([*argv, "-o", str(target)], capsys)
    assert code == 1
    assert target.read_text().startswith("digraph")
    lines = err.strip().splitlines()
    assert lines[0] == f"wrote {target}"
    assert lines[1].startswith("tiegraph inspect: --strict: the audit found 1 error or warning not accepted")
    assert "modules-to-save-copy-untied" in lines[1]
    assert out == ""


# ---------------------------------------------------------------------------------------------- --set


def test_set_overrides_are_recorded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """After ``--set tie_word_embeddings=true`` text and JSON said "default llava config"; they now say which
    values were overridden, for a model type and for a checkpoint directory alike."""
    from transformers import AutoConfig

    sets = ["--set", "tie_word_embeddings=true", "--set", "num_hidden_layers=1"]
    code, out, err = _main(["inspect", "llama", *sets], capsys)
    assert code == 0, err
    first = out.splitlines()[0]
    assert "(llama config with --set tie_word_embeddings=true --set num_hidden_layers=1, task" in first
    assert "default" not in first
    code, out, err = _main(["inspect", "llama", *sets, "--format", "json"], capsys)
    data = json.loads(out)
    assert data["overrides"] == {"tie_word_embeddings": True, "num_hidden_layers": 1}
    assert data["source"].startswith("llama config with --set tie_word_embeddings=true")
    AutoConfig.for_model("llama", **TINY_LLAMA).save_pretrained(tmp_path / "ckpt")
    code, out, err = _main(["inspect", str(tmp_path / "ckpt"), "--set", "tie_word_embeddings=false"], capsys)
    assert code == 0, err
    assert "(its config.json with --set tie_word_embeddings=false)" in out.splitlines()[0]
    code, out, err = _main(["inspect", "llama"], capsys)
    assert "(default llama config, task" in out.splitlines()[0]


def test_set_on_a_factory_is_bad_usage(capsys: pytest.CaptureFixture[str]) -> None:
    """A factory builds its own model: a --set there was silently ignored."""
    code, _out, err = _main(["inspect", "tests.models:llama_tied", "--allow-code", "--set", "x=1"], capsys)
    assert code == 2
    assert "--set overrides a config; tests.models:llama_tied is a factory" in _one_line(err)


# ---------------------------------------------------------------------------------------------- folders


def test_a_folder_named_like_a_model_type(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A local folder ``llama`` shadowed the model type: without config.json the model type is meant, with
    one the folder is; either way the report says which."""
    from transformers import AutoConfig

    monkeypatch.chdir(tmp_path)
    (tmp_path / "llama").mkdir()
    code, out, err = _main(["inspect", "llama"], capsys)
    assert code == 0, err
    assert out.startswith("llama: LlamaForCausalLM (default llama config")
    assert "note: ignored the local folder ./llama (no config.json): this is the model type" in out

    AutoConfig.for_model("llama", **TINY_LLAMA).save_pretrained(tmp_path / "llama")
    code, out, err = _main(["inspect", "llama"], capsys)
    assert code == 0, err
    assert "(its config.json)" in out.splitlines()[0]
    assert "note: llama is also a model type: this is the local directory ./llama" in out
    assert "tied to the input embedding: lm_head" in out


# ---------------------------------------------------------------------------------------------- adapters


def _tiny_base(directory: Path) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(AutoConfig.for_model("llama", **TINY_LLAMA)).save_pretrained(directory)


def _tiny_adapter(directory: Path, base: Path, name: str | None = None) -> None:
    """A LoRA adapter on lm_head over the tiny base, saved by PEFT; ``name`` replaces the base's path."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base))  # a local directory, nothing downloaded
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=["lm_head", "q_proj"]))
    peft_model.save_pretrained(str(directory))
    config = json.loads((directory / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(base)
    if name is not None:
        config["base_model_name_or_path"] = name
        (directory / "adapter_config.json").write_text(json.dumps(config))


def test_adapter_over_a_local_base(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A PEFT adapter directory said "no config.json"; it is inspected over its base, named in the report."""
    base, adapter = tmp_path / "base", tmp_path / "adapter"
    _tiny_base(base)
    _tiny_adapter(adapter, base)
    code, out, err = _main(["inspect", str(adapter)], capsys)
    assert code == 0, err
    first = out.splitlines()[0]
    assert first.startswith(f"{adapter}: LlamaForCausalLM (PEFT LORA adapter over {base})"), first
    assert f"note: {adapter} is a PEFT LORA adapter over {base}, found in the local directory {base}" in out
    assert "tied to the input embedding: lm_head  [base_model.model.lm_head.base_layer]" in out

    code, out, err = _main(["inspect", str(adapter), "--format", "json"], capsys)
    data = json.loads(out)
    assert (data["kind"], data["tied_to_input_embedding"]) == ("adapter", ["lm_head"])


def test_adapter_whose_base_is_nowhere_local(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The base is neither a directory nor cached: exit 2 saying it is an adapter and naming the base."""
    base, adapter = tmp_path / "base", tmp_path / "adapter"
    _tiny_base(base)
    _tiny_adapter(adapter, base, name="some-org/not-downloaded-model")
    code, out, err = _main(["inspect", str(adapter)], capsys)
    assert code == 2
    line = _one_line(err)
    assert "is a PEFT LORA adapter over the base model some-org/not-downloaded-model" in line
    assert "never downloads" in line
    assert out == ""


def _run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(sys.path), **env}
    if "PYTHONPATH_FIRST" in env:
        environ["PYTHONPATH"] = env["PYTHONPATH_FIRST"] + os.pathsep + environ["PYTHONPATH"]
    return subprocess.run(
        [sys.executable, "-m", "tiegraph", *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_adapter_over_a_base_in_the_local_cache(tmp_path: Path) -> None:
    """The base named by a hub id is used when it sits in the local Hugging Face cache (a real cache
    layout: refs/main and snapshots/<commit>), with downloads switched off."""
    base, adapter = tmp_path / "base", tmp_path / "adapter"
    _tiny_base(base)
    _tiny_adapter(adapter, base, name="tiny-org/tiny-llama")
    cache = tmp_path / "hub"
    repo = cache / "models--tiny-org--tiny-llama"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    for file in base.iterdir():
        (snapshot / file.name).write_bytes(file.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    result = _run(["inspect", str(adapter)], tmp_path, HF_HUB_CACHE=str(cache))
    assert result.returncode == 0, result.stderr
    assert "PEFT LORA adapter over tiny-org/tiny-llama" in result.stdout
    assert "found in the local Hugging Face cache" in result.stdout
    assert "tied to the input embedding: lm_head" in result.stdout


# ---------------------------------------------------------------------------------------------- demo

HIDE_PEFT = """
import sys
from importlib.machinery import PathFinder


class HidePeft:
    '''PathFinder, except that peft is not installed (as after a plain pip install tiegraph).'''

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name == "peft" or name.startswith("peft."):
            return None
        return PathFinder.find_spec(name, path, target)

    @staticmethod
    def invalidate_caches():
        PathFinder.invalidate_caches()

    @staticmethod
    def find_distributions(*args, **kwargs):
        return PathFinder.find_distributions(*args, **kwargs)


sys.meta_path[:] = [HidePeft if finder is PathFinder else finder for finder in sys.meta_path]
"""


@pytest.mark.slow
def test_demo_without_peft_skips_its_scenes(tmp_path: Path) -> None:
    """``tiegraph demo`` without PEFT crashed with exit 3 after scene 1; it skips the PEFT scenes, saying
    in one line that ``pip install peft`` shows them."""
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(HIDE_PEFT)
    check = subprocess.run(
        [sys.executable, "-c", "import importlib.util; print(importlib.util.find_spec('peft'))"],
        env={**os.environ, "PYTHONPATH": str(hide)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert check.stdout.strip() == "None"
    result = _run(["demo", "--out", str(tmp_path / "pictures")], tmp_path, PYTHONPATH_FIRST=str(hide))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert (
        out.splitlines()[0]
        == "3 PEFT scenes (2, 3, 4) skipped: PEFT is not installed; pip install peft shows them"
    )
    assert "== 1/7 tied Llama" in out
    assert "== 5/7" in out
    assert "== 7/7" in out
    assert "== 2/7" not in out
    assert "Traceback" not in result.stderr
    written = sorted(p.name for p in (tmp_path / "pictures").iterdir())
    assert "1-tied-llama.svg" in written
    assert not any(name.startswith(("2-", "3-", "4-")) for name in written)
