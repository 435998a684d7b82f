"""The engine harness's own logic (devtools/engines): classifying a loaded head, merging and comparing rows.

The engines themselves run only under ``python3 dev.py engines``; these tests use plain arrays.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devtools.engines import envs, harness  # noqa: E402


def _runner_module(file: str) -> ModuleType:
    """A module of the runners (they live beside each other and run in the engines' venvs, not a package)."""
    name = "devtools_engines_runners_" + file.removesuffix(".py").lstrip("_")
    spec = importlib.util.spec_from_file_location(name, ROOT / "devtools/engines/runners" / file)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


common = _runner_module("_common.py")
RNG = np.random.default_rng(0)
EMB = RNG.standard_normal((8, 4)).astype(np.float32)
HEAD = RNG.standard_normal((8, 4)).astype(np.float32)


@pytest.mark.parametrize(
    ("loaded_head", "loaded_emb", "ref", "label"),
    [
        (EMB, EMB, {"embedding": EMB}, "embedding"),
        (EMB, EMB, {"embedding": EMB, "head": HEAD}, "embedding"),
        (HEAD, EMB, {"embedding": EMB, "head": HEAD}, "folder-head"),
        (HEAD, HEAD, {"embedding": EMB, "head": HEAD}, "embedding-replaced"),
        (RNG.standard_normal((8, 4)), EMB, {"embedding": EMB, "head": HEAD}, "neither"),
        (None, EMB, {"embedding": EMB}, "neither"),
    ],
)
def test_classify_labels(
    loaded_head: np.ndarray | None, loaded_emb: np.ndarray, ref: dict[str, np.ndarray], label: str
) -> None:
    """Each outcome label comes from comparing the engine's head and embedding with the folder's."""
    got, _ = common.classify(common.Loaded(head=loaded_head, embedding=loaded_emb), ref)
    assert got == label


def test_classify_float16_round_trip_and_padded_rows() -> None:
    """A float16 copy of the embedding is still the embedding; a padded head compares its common rows."""
    half = EMB.astype(np.float16).astype(np.float32)
    assert common.classify(common.Loaded(head=half), {"embedding": EMB})[0] == "embedding"
    padded = np.concatenate([HEAD, np.zeros((4, 4), np.float32)])
    label, note = common.classify(common.Loaded(head=HEAD), {"embedding": EMB, "head": padded})
    assert label == "folder-head"
    assert "head rows 12" in note


def test_head_warnings_whole_words_only() -> None:
    """A path containing 'tiegraph' is not a warning about a tie; an lm_head line is, without colours."""
    lines = ["/root/.cache/tiegraph/x.py: deprecated", "\x1b[1mlm_head.weight\x1b[0m | MISSING at /f/x"]
    assert common.head_warnings(lines, "/f/x") == ["lm_head.weight | MISSING at <folder>"]


def test_bias_outcome() -> None:
    """A folder with lm_head.bias: the engine keeps it, changes it or has no slot for it."""
    bias = RNG.standard_normal(8).astype(np.float32)
    ref = {"embedding": EMB, "bias": bias}
    assert common.bias_outcome(common.Loaded(head=EMB, bias=bias), ref) == "kept"
    assert common.bias_outcome(common.Loaded(head=EMB), ref) == "dropped"
    assert common.bias_outcome(common.Loaded(head=EMB), {"embedding": EMB}) is None


def test_write_rows_replaces_the_same_cell(tmp_path: Path) -> None:
    """Rows of engines not run this time stay; a re-measured cell replaces its old row."""
    path = tmp_path / "m.json"
    row = {"engine": "vllm", "arch": "llama", "situation": "tied-no-head", "head": "embedding"}
    harness.write_rows(path, [row, {**row, "engine": "transformers-5"}])
    harness.write_rows(path, [{**row, "head": "neither"}])
    table = json.loads(path.read_text())
    assert [(r["engine"], r["head"]) for r in table] == [("transformers-5", "embedding"), ("vllm", "neither")]


@pytest.mark.parametrize(
    ("measured", "note", "predicted", "match"),
    [
        ("neither", "", "random", True),
        ("neither", "", "uninitialised", True),
        ("neither", "", "embedding", False),
        ("folder-head", "the folder's head equals its embedding", "embedding", True),
        ("folder-head", "", "embedding", False),
        ("load-error", "", "load-error", True),
    ],
)
def test_matches(measured: str, note: str, predicted: str, match: bool) -> None:
    """'neither' verifies random and uninitialised; an equal head verifies embedding and folder-head."""
    assert harness._matches({"head": measured, "note": note}, predicted) is match


@pytest.mark.parametrize(
    ("companions", "row", "match"),
    [
        ((("final_logits_bias", "kept"),), {"head": "embedding", "bias": "kept"}, True),
        ((("lm_head.bias", "dropped-warns"),), {"head": "embedding", "bias": "dropped"}, True),
        ((("lm_head.bias", "kept"),), {"head": "embedding", "bias": "dropped"}, False),
        ((("lm_head.bias", "load-error"),), {"head": "load-error"}, True),
        ((), {"head": "embedding"}, True),
    ],
)
def test_bias_fate_is_compared(
    companions: tuple[tuple[str, str], ...], row: dict[str, str], match: bool
) -> None:
    """The bias a folder carries (lm_head.bias, final_logits_bias) is kept or dropped as predicted."""
    assert harness._bias_matches(row, harness.predicted_bias(companions)) is match


def test_failures_are_reported_not_silent(capsys: pytest.CaptureFixture[str]) -> None:
    """A runner that stopped, or an engine that did not build, fails the run even when every cell matched."""
    rows = [
        {"engine": "optimum-onnx", "ran": False, "why_not": "the runner stopped (exit 1) after 3 cells"},
        {"engine": "optimum-onnx", "ran": False, "why_not": "not run: the folder is a BART encoder-decoder"},
    ]
    failures = harness.stopped(rows)
    assert failures == ["optimum-onnx: the runner stopped (exit 1) after 3 cells"]
    args = harness._parser().parse_args(["--no-write"])
    good = {"engine": "vllm", "arch": "llama", "situation": "x", "predicted": "embedding", "match": True}
    assert harness._report([good], [], args) == 0
    assert harness._report([good], failures, args) == 1
    assert "FAILED optimum-onnx: the runner stopped" in capsys.readouterr().out


def test_measure_records_folders_meant_for_other_engines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder whose ``engines`` leave this engine out is a not-run row with its why; the runner skips it."""
    bart = {"arch": "bart", "situation": "x", "engines": ["transformers-5"], "why_not": "no BART"}
    manifest = [{"arch": "llama", "situation": "tied-no-head"}, bart]
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(manifest))
    runner = (
        "import json, sys\n"
        "for e in json.load(open(sys.argv[1])):\n"
        "    print(json.dumps({'engine': 'llama.cpp-convert', 'arch': e['arch'], 'situation': e['situation'],"
        " 'head': 'embedding', 'ran': True}))\n"
    )
    monkeypatch.setattr(envs, "is_built", lambda _engine: True)
    command = lambda _engine, manifest, _out: [sys.executable, "-c", runner, str(manifest)]  # noqa: E731
    monkeypatch.setattr(harness, "runner_command", command)
    rows = harness.measure("llama.cpp-convert", path, tmp_path, None)
    assert [(r["arch"], r["ran"], r["why_not"] if not r["ran"] else None) for r in rows] == [
        ("llama", True, None),
        ("bart", False, "no BART"),
    ]


def test_llama_runner_reads_the_head_and_its_bias_from_the_logits() -> None:
    """The runtime exposes no weights: the head is the folder tensor whose product with the hidden state
    (plus the folder's bias, when the runtime adds it) gives the runtime's logits.
    """
    which = _runner_module("llama_runner.py").which_head
    hidden = RNG.standard_normal(4)
    bias = RNG.standard_normal(8).astype(np.float32)
    ref = {"embedding": EMB, "head": HEAD}
    assert common.classify(which(ref, EMB @ hidden, hidden), ref)[0] == "embedding"
    assert common.classify(which(ref, HEAD @ hidden, hidden), ref)[0] == "folder-head"
    assert common.classify(which(ref, hidden.sum() * np.ones(8), hidden), ref)[0] == "neither"
    with_bias = {"embedding": EMB, "bias": bias}
    kept = which(with_bias, EMB @ hidden + bias, hidden)
    dropped = which(with_bias, EMB @ hidden, hidden)
    assert common.classify(kept, with_bias)[0] == "embedding"
    assert (common.bias_outcome(kept, with_bias), common.bias_outcome(dropped, with_bias)) == (
        "kept",
        "dropped",
    )


def test_kept_gguf_is_used_only_for_the_same_files(tmp_path: Path) -> None:
    """The runtime loads the converter's GGUF only when the folder's files are the ones it was made from."""
    folder = tmp_path / "tied-no-head"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    before = common.folder_digest(str(folder))
    assert common.kept_gguf(str(folder) + "/") == tmp_path / "tied-no-head.gguf"
    (folder / "config.json").write_text('{"tie_word_embeddings": false}')
    assert common.folder_digest(str(folder)) != before
