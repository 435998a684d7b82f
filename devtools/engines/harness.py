"""``python3 dev.py engines``: build the engines, generate the folders, measure every cell, compare.

Runs in the project's ``.venv`` (it imports ``tiegraph.engines`` for the predictions); every engine runs in
its own cached venv (see ``envs.py``) through a runner script under ``runners/``, which prints one JSON row
per cell. The measured table goes to ``devtools/engines/measured.json`` (rows of engines not run this time
are kept), the comparison to ``docs/engines-verified.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import time
from pathlib import Path
from typing import Any

from devtools.engines import envs

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
RUNNERS = HERE / "runners"
MEASURED = HERE / "measured.json"
FAST = ("transformers-5", "transformers-4", "llama.cpp-convert", "optimum-onnx")
SGLANG_WHY = (
    "SGLang installs only with CUDA; not run. Its rule, read from the wheel's source: "
    "sglang/srt/models/llama.py and qwen2.py, <Arch>ForCausalLM.__init__ (lm_head = model.embed_tokens "
    "when config.tie_word_embeddings, else a ParallelLMHead) and load_weights (lm_head.weight is skipped "
    "when tied); gemma.py GemmaForCausalLM.forward (logits from model.embed_tokens, no lm_head)"
)
# What a cold-cache run of --fast took here (build and run); .ci/run's comment states the same.
CI_MINUTES = (
    "`.ci/run` runs it on every submission with `--no-write` (a mismatch, an engine that does not build or a "
    "runner that stops fails CI). From a cold cache on this 2-core machine, shared with other builds (load "
    "average 13 to 20), it took 42 minutes: the four venvs 9.4 minutes, transformers 5 and 4 about 2 minutes "
    "each, the converter 24 minutes (one `convert_hf_to_gguf.py` process per folder), optimum 2 minutes"
)
RUNTIME_WHY = (
    "not built: llama-cpp-python compiles from source (about 20 min of CPU on 2 idle cores). "
    "`python3 dev.py engines --only llama.cpp-runtime` builds it and runs runners/llama_runner.py"
)


def runner_command(engine: str, manifest: Path, out: Path) -> list[str]:
    """How one engine's runner is started inside its venv."""
    py = str(envs.python(engine))
    if engine.startswith("transformers"):
        return [py, str(RUNNERS / "transformers_runner.py"), engine, str(manifest), str(out)]
    if engine == "llama.cpp-convert":
        return [py, str(RUNNERS / "gguf_runner.py"), str(envs.converter_script()), str(manifest), str(out)]
    if engine in ("optimum-onnx", "ort-genai-builder"):
        return [py, str(RUNNERS / "onnx_runner.py"), engine, str(manifest), str(out)]
    if engine == "llama.cpp-runtime":
        convert = [str(envs.python("llama.cpp-convert")), str(envs.converter_script())]
        return [py, str(RUNNERS / "llama_runner.py"), *convert, str(manifest), str(out)]
    script = {"mlx-lm": "mlx_runner.py", "vllm": "vllm_runner.py", "llama.cpp-runtime": "llama_runner.py"}[
        engine
    ]
    return [py, str(RUNNERS / script), str(manifest), str(out)]


def not_run(engine: str, manifest: list[dict[str, Any]], why: str, version: str = "") -> list[dict[str, Any]]:
    """Rows saying an engine's cells were not run here, and why."""
    return [
        {
            "engine": engine,
            "engine_version": version,
            "arch": e["arch"],
            "situation": e["situation"],
            "head": None,
            "warns": None,
            "note": "",
            "ran": False,
            "why_not": why,
        }
        for e in manifest
    ]


def measure(engine: str, manifest_path: Path, scratch: Path, share: Path | None) -> list[dict[str, Any]]:
    """Run one engine's runner over every folder; rows as they arrive also go to ``share``."""
    manifest = json.loads(manifest_path.read_text())
    if engine == "sglang":
        wheel = next(envs.env_dir("sglang").glob("sglang-*.whl"), None)
        version = f"sglang {wheel.name.split('-')[1]} (source only)" if wheel else "sglang (not downloaded)"
        return not_run(engine, manifest, SGLANG_WHY, version)
    if not envs.is_built(engine):
        return not_run(engine, manifest, RUNTIME_WHY if engine == "llama.cpp-runtime" else "not built")
    # A folder meant for some consumers only (its ``engines``) is recorded as not run, with its why_not.
    apart = [e for e in manifest if engine not in e.get("engines", [engine])]
    skipped = [r for e in apart for r in not_run(engine, [e], e["why_not"])]
    manifest = [e for e in manifest if e not in apart]
    manifest_path = scratch / f"manifest-{engine}.json"
    manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")
    out = scratch / f"measured-{engine}.json"
    start = time.monotonic()
    log = (scratch / f"{engine}.log").open("w")  # the engine's own chatter; the rows carry what matters
    proc = subprocess.Popen(
        runner_command(engine, manifest_path, out), stdout=subprocess.PIPE, stderr=log, text=True
    )
    assert proc.stdout is not None
    rows = []
    for line in proc.stdout:
        if line.startswith("{"):
            rows.append(json.loads(line))
            print(f"  {engine} {rows[-1]['arch']}/{rows[-1]['situation']}: {rows[-1]['head']}", flush=True)
            if share is not None:
                write_rows(share, rows)
    if proc.wait() != 0 and len(rows) < len(manifest):
        why = f"the runner stopped (exit {proc.returncode}) after {len(rows)} cells"
        done = {(r["arch"], r["situation"]) for r in rows}
        rows += not_run(engine, [e for e in manifest if (e["arch"], e["situation"]) not in done], why)
    log.close()
    print(f"dev.py engines: {engine}: {len(rows)} cells in {time.monotonic() - start:.0f} s", flush=True)
    return rows + skipped


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """Merge rows into a measured table: a row replaces the one of the same engine, arch and situation."""
    old = json.loads(path.read_text()) if path.exists() else []

    def key(r: dict[str, Any]) -> tuple[str, str, str]:
        return r["engine"], r["arch"], r["situation"]

    merged = {key(r): r for r in old} | {key(r): r for r in rows}
    order = {e: i for i, e in enumerate(envs.ORDER)}
    table = sorted(merged.values(), key=lambda r: (order.get(r["engine"], 99), r["arch"], r["situation"]))
    path.write_text(json.dumps(table, indent=1) + "\n")


def generate_folders(scratch: Path) -> Path:
    """Write the folders with the transformers-5 engine venv (it has sentencepiece); the manifest's path."""
    cmd = [str(envs.python("transformers-5")), str(HERE / "folders.py"), str(scratch / "folders")]
    done = subprocess.run(cmd, capture_output=True, text=True)  # save_pretrained's progress bars stay quiet
    if done.returncode != 0:
        raise SystemExit(f"dev.py engines: generating the folders failed:\n{done.stderr[-2000:]}")
    return scratch / "folders" / "manifest.json"


def _matches(row: dict[str, Any], predicted: str) -> bool:
    measured: str = row["head"]
    if measured == "neither":
        return predicted in ("random", "uninitialised", "neither")
    if "the folder's head equals its embedding" in row["note"] and measured in ("embedding", "folder-head"):
        return predicted in ("embedding", "folder-head")
    return predicted == measured


def predicted_bias(companions: Any) -> str | None:
    """The fate the prediction gives the folder's bias (``lm_head.bias`` or ``final_logits_bias``), as the
    runners measure it: ``kept`` or ``dropped`` (silent or not), ``load-error``; None when no bias.
    """
    fates = [fate for key, fate in companions if key.endswith(("lm_head.bias", "final_logits_bias"))]
    if not fates:
        return None
    return "dropped" if fates[0].startswith("dropped") else fates[0]


def _bias_matches(row: dict[str, Any], predicted: str | None) -> bool:
    """A measured bias fate (the runners' ``bias``) against the predicted one; no bias measured: nothing."""
    measured: str | None = row.get("bias")
    if measured is None:  # no bias in the folder, or the load failed before it could be read
        return predicted is None or row["head"] == "load-error"
    return measured == predicted


def _prediction(folder: str, engine: str) -> tuple[str, bool | None, str | None]:
    """(head, warns, bias fate) tiegraph predicts for one folder and engine; a failure is a mismatch."""
    from tiegraph.engines import outcomes

    try:
        # check_values: the folders are tiny, and a rule may turn on whether the head equals the embedding
        (outcome,) = outcomes(folder, engines=[engine], check_values=True)
    except Exception as exc:  # a prediction that fails is a mismatch to report, not a crash
        return f"error: {type(exc).__name__}: {exc}", None, None
    return outcome.head, outcome.warns, predicted_bias(outcome.companions)


def compare(rows: list[dict[str, Any]], manifest: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each measured cell beside tiegraph's prediction for it (``predicted`` is None without the room)."""
    try:
        import tiegraph.engines  # noqa: F401
    except ImportError:
        return [{**r, "predicted": None, "predicted_warns": None, "match": None} for r in rows]
    folders = {(e["arch"], e["situation"]): e["folder"] for e in manifest}
    out = []
    for row in rows:
        folder = folders.get((row["arch"], row["situation"]))
        if folder is None:
            continue
        predicted, warns, bias = _prediction(folder, row["engine"])
        match = None
        if row["ran"]:
            match = (
                _matches(row, predicted)
                and (warns is None or warns == row["warns"])
                and _bias_matches(row, bias)
            )
        extra = {} if bias is None else {"predicted_bias": bias}
        out.append({**row, "predicted": predicted, "predicted_warns": warns, **extra, "match": match})
    return out


def _cell(value: Any) -> str:
    text = "" if value is None else str(value).replace("|", "\\|").replace("\n", " ")
    return text.replace("<", "&lt;").replace(">", "&gt;")


PAGE_HEAD = """# Engines, verified

What each engine really put in the output head when it loaded the folders tiegraph generates, beside what
`tiegraph.engines.outcomes` predicts for the same folder. `python3 dev.py engines` writes this page: it
builds one cached environment per engine under `~/.cache/tiegraph/engines/<engine-id>/` (versions pinned in
`devtools/engines/requirements/`), saves tiny Llama, Qwen2 and Gemma models with transformers and edits
the folders into each situation (config flag at every level, `lm_head.weight` added, removed or replaced,
sharded files, a head padded past the embedding's vocabulary, a tied head with a learned bias, a LLaVA
whose flag is only in `text_config`, and a tied BART whose logits add a learned `final_logits_bias`), loads
every folder with the real engine on CPU and reads the head:
the weights where the engine exposes them (transformers, vLLM through `LLM.apply_model`, the GGUF file
through `gguf.GGUFReader`, MLX parameters, the exported ONNX initializers); the llama.cpp runtime exposes
no weights, so its logits are compared with its final hidden state times the folder's head and embedding.

**When it runs.** The engines that install quickly (transformers 5 and 4, the llama.cpp converter with
`gguf`, optimum's ONNX export) form `python3 dev.py engines --fast`, the set meant for CI: {ci_time}.
vLLM (a 13-minute install), MLX, the ONNX Runtime GenAI builder and the llama.cpp runtime (a 20-minute
source build) run with `python3 dev.py engines`, due whenever a pin in `devtools/engines/requirements/`
moves or a rule in `tiegraph/engines/` changes; the date column says when each row was measured.

**Reading the table.** `measured` is what the engine's head held: `embedding` (the input embedding),
`folder-head` (the folder's own `lm_head.weight`), `embedding-replaced` (the input embedding overwritten by
the head), `load-error`, or `neither` (equal to no tensor of the folder: random initialisation and
uninitialised memory cannot be told apart by a run, the prediction's finer label cites the engine's source).
Where the folder's head equals its embedding, `embedding` and `folder-head` are the same answer. Where the
folder carries a bias of the head (`lm_head.bias`, `final_logits_bias`), the note gives its fate, predicted
and measured (`kept`, `dropped`), and it must match too. `warns` is
whether the engine printed a warning about the head or the tie while loading. A `match` of **NO** fails
`dev.py engines`.

"""


def _note(row: dict[str, Any]) -> str:
    """The row's note, after the bias fate (predicted/measured) when the folder carries a bias."""
    if row.get("bias") is None and row.get("predicted_bias") is None:
        return str(row["note"])
    bias = f"bias {_cell(row.get('predicted_bias'))}/{_cell(row.get('bias'))}"
    return "; ".join(filter(None, [bias, row["note"]]))


def write_docs(compared: list[dict[str, Any]], path: Path, ci_time: str = CI_MINUTES) -> None:
    """The page: how the table is made and when, then one row per cell (predicted, measured, match)."""
    today = datetime.date.today().isoformat()
    lines = [
        "| engine | version | date | arch | situation | predicted | measured | warns (pred./meas.) | match "
        "| note |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in compared:
        measured = r["head"] if r["ran"] else f"not run: {r['why_not']}"
        warns = f"{_cell(r.get('predicted_warns'))}/{_cell(r['warns'])}"
        match = {True: "yes", False: "**NO**", None: ""}[r.get("match")]
        cells = [
            r["engine"],
            r["engine_version"],
            r.get("date", today),
            r["arch"],
            r["situation"],
            r.get("predicted"),
            measured,
            warns,
            match,
            _note(r),
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    path.write_text(PAGE_HEAD.replace("{ci_time}", ci_time) + "\n".join(lines) + "\n")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python3 dev.py engines", description=__doc__.split("\n\n")[0])
    p.add_argument("--only", help=f"comma-separated engine ids (default: all; CI: {','.join(FAST)})")
    p.add_argument("--fast", action="store_true", help=f"the engines CI runs: {','.join(FAST)}")
    p.add_argument("--build-only", action="store_true", help="build the cached engine venvs, measure nothing")
    p.add_argument("--no-build", action="store_true", help="measure only the engines already built")
    p.add_argument("--scratch", type=Path, default=envs.CACHE / "scratch", help="where the folders go")
    p.add_argument(
        "--keep-folders",
        action="store_true",
        help="measure the folders an earlier run wrote in --scratch (the runtime then loads its GGUFs)",
    )
    p.add_argument("--share", type=Path, help="also merge rows into this table as they arrive")
    p.add_argument("--docs", type=Path, default=ROOT / "docs" / "engines-verified.md")
    p.add_argument("--measured", type=Path, default=MEASURED, help="the measured table to merge rows into")
    p.add_argument("--mismatches", type=Path, help="write the cells whose prediction differs here")
    p.add_argument(
        "--no-write",
        action="store_true",
        help="compare only: leave the measured table and the docs page as they are (what CI runs)",
    )
    p.add_argument(
        "--ci-minutes", default=CI_MINUTES, help="what the page says of the --fast set's cold time"
    )
    return p


def _engines(args: argparse.Namespace) -> list[str]:
    chosen = list(FAST) if args.fast else (args.only.split(",") if args.only else list(envs.ORDER))
    unknown = [e for e in chosen if e not in envs.RECIPES]
    if unknown:
        raise SystemExit(
            f"dev.py engines: unknown engine {unknown[0]!r}; choose from {', '.join(envs.ORDER)}"
        )
    return chosen


def _build(engines: list[str]) -> list[str]:
    """Build each engine's environment; one line per engine that failed to build."""
    failed = []
    for engine in engines:
        print(f"dev.py engines: {engine}: environment {envs.env_dir(engine)}", flush=True)
        try:
            took = envs.build(engine)
        except RuntimeError as exc:
            print(f"dev.py engines: {engine}: build failed: {exc}", flush=True)
            failed.append(f"{engine}: build failed: {exc}")
            continue
        print(f"dev.py engines: {engine}: " + (f"built in {took:.0f} s" if took else "cached"), flush=True)
    return failed


def stopped(rows: list[dict[str, Any]]) -> list[str]:
    """One line per engine whose runner stopped before measuring every cell."""
    lines = {
        f"{r['engine']}: {r['why_not']}"
        for r in rows
        if not r["ran"] and str(r["why_not"]).startswith("the runner stopped")
    }
    return sorted(lines)


def _report(compared: list[dict[str, Any]], failures: list[str], args: argparse.Namespace) -> int:
    """Print every mismatch and every engine that did not run; the exit code (1 when any)."""
    bad = [r for r in compared if r["match"] is False]
    lines = [
        f"{r['engine']} {r['arch']}/{r['situation']}: predicted {r['predicted']} (warns "
        f"{r['predicted_warns']}, bias {r.get('predicted_bias')}), measured {r['head']} (warns {r['warns']}, "
        f"bias {r.get('bias')}); {r['note']}"
        for r in bad
    ]
    if args.mismatches is not None:
        args.mismatches.write_text("".join(line + "\n" for line in lines))
    for line in lines:
        print(f"dev.py engines: MISMATCH {line}", flush=True)
    for line in failures:
        print(f"dev.py engines: FAILED {line}", flush=True)
    if compared and not any(r["predicted"] for r in compared):
        print("dev.py engines: tiegraph.engines is not importable: nothing compared", flush=True)
        return 1
    verified = sum(1 for r in compared if r["match"])
    print(
        f"dev.py engines: {verified} cells match, {len(bad)} mismatch, {len(failures)} engine(s) failed",
        flush=True,
    )
    return 1 if bad or failures else 0


def main(argv: list[str] | None = None) -> int:
    """Build, measure, compare; non-zero when a prediction differs from its engine."""
    args = _parser().parse_args(argv)
    engines = _engines(args)
    # The llama.cpp runtime (a ~20 min source build) is built by a full run or --only, never by --fast.
    failures = _build(
        ["transformers-5"] + ([] if args.no_build else [e for e in engines if e != "transformers-5"])
    )
    if args.build_only:
        return 1 if failures else 0
    args.scratch.mkdir(parents=True, exist_ok=True)
    manifest_path = args.scratch / "folders" / "manifest.json"
    if not (args.keep_folders and manifest_path.is_file()):
        manifest_path = generate_folders(args.scratch)
    manifest = json.loads(manifest_path.read_text())
    rows: list[dict[str, Any]] = []
    today = datetime.date.today().isoformat()
    for engine in engines:
        rows += [{**r, "date": today} for r in measure(engine, manifest_path, args.scratch, args.share)]
    failures += stopped(rows)
    if args.no_write:  # only this run's cells, compared in memory: no file of the checkout changes
        compared = compare(rows, manifest)
        print(f"dev.py engines: {len(rows)} cells measured (--no-write: nothing written)", flush=True)
    else:
        write_rows(args.measured, rows)
        compared = compare(json.loads(args.measured.read_text()), manifest)
        write_docs(compared, args.docs, args.ci_minutes)
        print(f"dev.py engines: {len(rows)} cells measured, table in {args.docs}", flush=True)
    return _report(compared, failures, args)
