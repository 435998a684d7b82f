"""``tiegraph diff A B``: SPECs or inspect JSON files; exit 0 done, 1 with --strict when the ties changed, 2
bad input (as the README's exit-code line and ``tiegraph diff --help`` say).

Run in-process through :func:`tiegraph.cli.main` on checkpoint directories saved here from tiny real models
(nothing downloaded), and on JSON files that ``inspect --format json`` wrote.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from models import llama

from tiegraph.cli import main


@pytest.fixture(scope="module")
def tied_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tied tiny Llama saved with save_pretrained (lm_head.weight saved once, as the embedding)."""
    path = tmp_path_factory.mktemp("diff") / "tied"
    llama(True).save_pretrained(path)
    return path


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_same_checkpoint_is_exit_0(tied_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "diff", str(tied_dir), str(tied_dir))
    assert code == 0, out
    assert "ties unchanged (tied to the input embedding: lm_head)" in out


def test_set_applies_to_b_and_the_broken_tie_is_exit_1_with_strict(
    tied_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A changed tie is exit 0 (the diff is the answer) and exit 1 with --strict only: ``diff`` used to exit
    1 without --strict, against the README's exit-code line."""
    code, out, err = _run(capsys, "diff", str(tied_dir), str(tied_dir), "--set", "tie_word_embeddings=false")
    assert code == 0, out
    assert err == ""
    code, strict_out, err = _run(
        capsys, "diff", str(tied_dir), str(tied_dir), "--set", "tie_word_embeddings=false", "--strict"
    )
    assert code == 1
    assert strict_out == out
    assert err == "tiegraph diff: --strict: the ties changed from A to B\n"
    assert "lm_head.weight no longer shares memory with model.embed_tokens.weight" in out
    assert "tied to the input embedding model.embed_tokens: lm_head before, nothing after" in out


def test_peft_applies_to_b(tied_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """modules_to_save on lm_head: the active copy is a deepcopy, so B's lm_head is untied (peft#2777)."""
    code, out, _ = _run(
        capsys, "diff", str(tied_dir), str(tied_dir), "--peft", "modules-to-save:lm_head", "--strict"
    )
    assert code == 1, out
    assert "B: " in out
    assert "wrapped: PEFT modules-to-save on lm_head" in out
    assert "lm_head.weight no longer shares memory with model.embed_tokens.weight" in out


def test_compile_applies_to_b_only(tied_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--compile wraps B, not A (A's line used to say "wrapped: torch.compile" too); names still line up."""
    code, out, _ = _run(capsys, "diff", str(tied_dir), str(tied_dir), "--compile")
    assert code == 0, out
    a_line, b_line = (line for line in out.splitlines() if line.startswith(("A: ", "B: ")))
    assert "wrapped" not in a_line
    assert b_line.endswith("wrapped: torch.compile")


def test_json_files_from_inspect_compare_like_specs(
    tied_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    written = tmp_path / "before.json"
    assert main(["inspect", str(tied_dir), "--format", "json", "-o", str(written)]) == 0
    capsys.readouterr()
    code, out, _ = _run(capsys, "diff", str(written), str(tied_dir), "--format", "json")
    assert code == 0, out
    data = json.loads(out)
    assert data["changed"] is False
    assert data["broken"] == []
    assert data["tied_after"] == ["lm_head"]
    code, out, _ = _run(capsys, "diff", str(written), str(tied_dir), "--set", "tie_word_embeddings=false")
    assert code == 0
    assert "no longer shares memory" in out


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["diff", "{tied}"], "the following arguments are required: B"),
        (["diff", "{tmp}/nope.json", "{tied}"], "no such directory"),
        (["diff", "{bad}", "{tied}"], "is not a JSON graph"),
        (["diff", "{notgraph}", "{tied}"], "not tiegraph JSON"),
        (["diff", "{tied}", "{good}", "--peft", "lora:lm_head"], "cannot rebuild it"),
        (
            ["diff", "{tied}", "{tied}", "--set", "tie_word_embedding=true"],
            "did you mean tie_word_embeddings",
        ),
    ],
)
def test_bad_input_is_exit_2_with_one_line(
    argv: list[str], words: str, tied_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "notgraph.json").write_text('{"nodes": []}')
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"graph": _graph_json()}))
    places = {
        "tied": str(tied_dir),
        "tmp": str(tmp_path),
        "bad": str(tmp_path / "bad.json"),
        "notgraph": str(tmp_path / "notgraph.json"),
        "good": str(good),
    }
    code, out, err = _run(capsys, *(a.format(**places) for a in argv))
    assert code == 2, out + err
    assert words in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def _graph_json() -> dict[str, object]:
    import tiegraph

    return tiegraph.build_graph(llama(True)).to_json()
