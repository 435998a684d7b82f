"""``--accept KIND[:PATH]`` and ``[tool.tiegraph]`` on the command line: accepted findings still show, marked
accepted, and fail nothing; an acceptance that matches nothing is reported; a typo is exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from models import llama, llama_flag_flipped_off

import tiegraph
from tiegraph.cli import main

UNTIE = ["inspect", "gemma", "--peft", "modules-to-save:lm_head", "--strict"]


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def project_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in an empty folder, so the repository's own pyproject.toml is not the nearest."""
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'elsewhere'\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_inspect_accept(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, *UNTIE)
    assert code == 1
    assert "[warning] modules-to-save-copy-untied: lm_head.weight" in out
    assert "1 error or warning not accepted (modules-to-save-copy-untied)" in err
    code, out, err = _run(capsys, *UNTIE, "--accept", "modules-to-save-copy-untied:lm_head")
    assert code == 0, err
    assert "[warning, accepted] modules-to-save-copy-untied: lm_head.weight" in out
    code, out, err = _run(
        capsys, *UNTIE, "--accept", "modules-to-save-copy-untied", "--accept", "tied-not-declared"
    )
    assert code == 1
    assert "[warning] unmatched-acceptance: tied-not-declared" in out
    assert "(unmatched-acceptance)" in err


def test_inspect_json_has_severity(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, *UNTIE, "--format", "json", "--accept", "modules-to-save-copy-untied")
    assert code == 0
    [found] = json.loads(out)["findings"]
    assert (found["kind"], found["severity"], found["accepted"]) == (
        "modules-to-save-copy-untied",
        "warning",
        True,
    )


def test_typo_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, *UNTIE, "--accept", "modules-to-save-copy-untide")
    assert code == 2
    assert err.count("\n") == 1
    assert "--accept: 'modules-to-save-copy-untide' is not a finding kind" in err


def test_pyproject(project_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The nearest pyproject.toml's [tool.tiegraph] accept list applies; a broken one is exit 2."""
    project = project_dir / "pyproject.toml"
    project.write_text('[tool.tiegraph]\naccept = ["modules-to-save-copy-untied:lm_head"]\n')
    code, out, err = _run(capsys, *UNTIE)
    assert code == 0, err
    assert "[warning, accepted] modules-to-save-copy-untied" in out
    project.write_text('[tool.tiegraph]\naccept = ["config-flags-disagree"]\n')
    code, out, _ = _run(capsys, *UNTIE)
    assert code == 1
    assert "unmatched-acceptance: config-flags-disagree" in out
    assert "matches no finding" in out
    project.write_text("[tool.tiegraph]\naccept = [\n")
    code, _, err = _run(capsys, *UNTIE)
    assert code == 2
    assert "cannot read it as TOML" in err


def test_diff_accept(project_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A diff whose only change is an accepted finding passes --strict; the finding is marked accepted."""
    a, b = project_dir / "a.json", project_dir / "b.json"
    a.write_text(json.dumps(tiegraph.build_graph(llama()).to_json()))
    b.write_text(json.dumps(tiegraph.build_graph(llama_flag_flipped_off()).to_json()))
    code, out, _ = _run(capsys, "diff", str(a), str(b), "--strict")
    assert code == 1
    assert "new finding tied-although-config-says-not: lm_head.weight, model.embed_tokens.weight" in out
    code, out, err = _run(
        capsys,
        "diff",
        str(a),
        str(b),
        "--strict",
        "--accept",
        "tied-although-config-says-not",
        "--accept",
        "declared-not-tied",
    )
    assert code == 0, err
    assert (
        "new finding tied-although-config-says-not: lm_head.weight, model.embed_tokens.weight (accepted)"
        in out
    )
    assert "accepted, not among the changes: declared-not-tied (from --accept)" in out
    code, out, _ = _run(
        capsys, "diff", str(a), str(b), "--format", "json", "--accept", "tied-although-config-says-not"
    )
    data = json.loads(out)
    assert data["accepted"] == [
        ["tied-although-config-says-not", ["lm_head.weight", "model.embed_tokens.weight"]]
    ]
