"""Fetch each peer's tests at the pinned version, run the tie-related ones three ways, write the table.

Usage (from the repository root, in its ``.venv``; ``python3 dev.py conformance [--peer NAME]``)::

    python -m devtools.conformance [--peer peft|accelerate|safetensors] [--no-write]

Everything downloaded or built lives under ``~/.cache/tiegraph/conformance/`` (``$TIEGRAPH_CONFORMANCE``)
and is reused: the sdists (``pip download``; safetensors' sdist needs Rust to prepare its metadata, so its
unpacked tree is taken from pip's kept build directory), the peers' test-only dependencies (``pip install
--no-deps --target``), and tiny local stand-ins for every hub model the tests name (:mod:`.hub`). Each
selection runs offline (``HF_HUB_OFFLINE=1``) with the peer's own helper, with tiegraph's drop-in in its
default mode and in its truth-first mode (:mod:`.plugin` swaps the helper before collection and counts
its calls per test), and ``devtools/conformance/RESULTS.md`` gets the table (included by
``docs/peers.md``): per peer when it was made, with which Python, torch and transformers, how many tests
ran here and called the helper, and every test whose outcome differs between the helpers.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from . import hub
from .why import WHY

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("TIEGRAPH_CONFORMANCE", Path.home() / ".cache" / "tiegraph" / "conformance"))
RESULTS = Path(__file__).with_name("RESULTS.md")
STORED = Path(__file__).with_name("results.json")  # the outcomes behind RESULTS.md, per peer
VERSIONS = {"peft": "0.21.2", "accelerate": "1.15.0", "safetensors": "0.8.0"}
#: the peers' test-only imports missing from tiegraph's test environment (exact pins: pip --dry-run --report)
TEST_DEPS = [
    "datasets==5.2.0",
    "diffusers==0.42.1",
    "parameterized==0.9.0",
    "scipy==1.17.1",
    "dill==0.4.1",
    "multiprocess==0.70.19",
    "pyarrow==26.0.1",
    "pandas==3.1.1",
    "xxhash==4.1.0",
]
#: accelerate's tie-related tests (``-k`` words, read off its suite; docs/peers.md says why these): its
#: tie tests by name, and every test in which accelerate calls ``find_tied_parameters`` in the test's own
#: process (``infer_auto_device_map``, ``load_checkpoint_in_model``, ``dispatch_model`` over several
#: devices, ``load_checkpoint_and_dispatch``, bitsandbytes' ``load_and_quantize_model``)
ACCELERATE_TIE_TESTS = [
    "tied",  # find_tied_parameters, *_tied_weights*, test_dispatch_model_tied_weights*
    "ties",  # test_get_module_size_with_ties
    "retie",
    "infer_auto_device_map",  # test_modeling_utils: every test of it (test_..._on_t0pp: T5's three ties)
    "no_split_module_classes_set",  # get_balanced_memory, then infer_auto_device_map
    "load_checkpoint",  # load_checkpoint_in_model*, load_checkpoint_and_dispatch*
    "dispatch_model",
    "dipatch_model",  # (test_dipatch_model_fp4_simple: the suite's spelling)
    "test_save_model_use",  # test_accelerator: save_model, then load_checkpoint_in_model
    "test_save_sharded_model",
    "test_save_model_offload",  # load_checkpoint_and_dispatch over cpu and disk
    "get_state_dict_from_offload",
    "nested_hook",
    "accelerator_bnb_",  # infer_auto_device_map of a model built under init_empty_weights
    "MixedInt8",  # test_quantization: every test's setUp calls load_and_quantize_model
    "Bnb4Bit",
]
#: peer -> (test directory inside its source, [(pytest arguments, -k expression or "")])
SELECTIONS: dict[str, tuple[str, list[tuple[list[str], str]]]] = {
    "peft": (
        "tests",
        [
            (
                [
                    "test_other.py::TestGetModuleNamesTiedWithEmbedding",
                    "test_initialization.py::TestWeightTying",
                    "test_trainable_tokens.py",
                    "test_tuners_utils.py::TestBaseTunerWarnForTiedEmbeddings",
                ],
                "",
            ),
            (["test_decoder_models.py"], "merge_and_unload_fixes_tie_word_embeddings_config"),
        ],
    ),
    "accelerate": (
        "tests",
        [
            (
                [
                    "test_modeling_utils.py",
                    "test_big_modeling.py",
                    "test_accelerator.py",
                    "test_quantization.py",
                ],
                " or ".join(ACCELERATE_TIE_TESTS),
            )
        ],
    ),
    "safetensors": (
        "bindings/python",
        [
            (["tests/test_pt_model.py"], ""),
            (["tests/test_simple.py"], "overlapping_storage"),
            # (two empty tensors must not count as shared: save_file refuses to save a shared group)
            (["tests/test_pt_comparison.py"], "shared or multiple_zero_sized"),
        ],
    ),
}
HELPERS = ("peer", "tiegraph", "truth")
#: a warning filter per peer, added to every test in every mode (a mark, so it wins over the peer's ini).
#: PEFT's config turns transformers' FutureWarnings into errors, and transformers 5.24 deprecates
#: ``is_gradient_checkpointing``, which PEFT 0.21.2 still reads.
IGNORE = {"peft": "ignore:.is_gradient_checkpointing. is deprecated:FutureWarning"}


def _pip(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "pip", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)


def fetch(peer: str) -> Path:
    """The peer's unpacked source at the pinned version (downloaded once), ready for pytest."""
    version = VERSIONS[peer]
    source = CACHE / "src" / f"{peer}-{version}"
    if not source.exists():
        _download(peer, version, source)
    if peer == "peft":  # its tests import each other relatively; the sdist leaves out the repository's
        (source / "tests" / "__init__.py").touch()  # empty tests/__init__.py (no test file is changed)
    return source


def _download(peer: str, version: str, source: Path) -> None:
    sdists = CACHE / "sdists"
    sdists.mkdir(parents=True, exist_ok=True)
    if peer != "safetensors":
        done = _pip(
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            "--no-build-isolation",
            f"{peer}=={version}",
            "-d",
            str(sdists),
        )
        if done.returncode:
            raise SystemExit(f"conformance: pip download {peer}=={version} failed:\n{done.stderr[-2000:]}")
        with tarfile.open(sdists / f"{peer}-{version}.tar.gz") as archive:
            archive.extractall(CACHE / "src", filter="data")
        return
    # safetensors' metadata step needs cargo and crates.io; pip keeps the unpacked sdist with --no-clean
    scratch = CACHE / "tmp"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    _pip(
        "download",
        "--no-deps",
        "--no-binary",
        "safetensors",
        "--no-clean",
        f"safetensors=={version}",
        "-d",
        str(scratch / "out"),
        env={**os.environ, "TMPDIR": str(scratch)},
    )
    found = [p for p in scratch.glob("pip-download-*/safetensors*") if (p / "PKG-INFO").exists()]
    if not found or f"Version: {version}\n" not in (found[0] / "PKG-INFO").read_text():
        raise SystemExit(f"conformance: no safetensors {version} sdist tree under {scratch}")
    shutil.move(str(found[0]), source)
    shutil.rmtree(scratch, ignore_errors=True)


def test_deps() -> Path:
    """The folder holding the peers' test-only dependencies (installed once, without their dependencies)."""
    site = CACHE / "site"
    stamp = site / ".stamp"
    if not stamp.exists() or stamp.read_text() != "\n".join(TEST_DEPS):
        done = _pip("install", "--quiet", "--no-deps", "--target", str(site), *TEST_DEPS)
        if done.returncode:
            raise SystemExit(
                f"conformance: installing the peers' test dependencies failed:\n{done.stderr[-2000:]}"
            )
        stamp.write_text("\n".join(TEST_DEPS))
    return site


def run_selection(peer: str, helper: str, source: Path, site: Path) -> dict[str, str]:
    """Outcome per test id (``passed``, ``failed``, ``skipped``) of the peer's selection with ``helper``."""
    folder, runs = SELECTIONS[peer]
    outcomes: dict[str, str] = {}
    work = CACHE / "runs" / peer / helper
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(site)]),
        "HF_HOME": str(CACHE / "hf"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TIEGRAPH_CONFORMANCE_HELPER": helper,
        "TIEGRAPH_CONFORMANCE_PEER": peer,
        "TIEGRAPH_CONFORMANCE_IGNORE": IGNORE.get(peer, ""),
    }
    for n, (targets, keyword) in enumerate(runs):
        report = work / f"junit-{n}.xml"
        env["TIEGRAPH_CONFORMANCE_CALLS"] = str(work / f"calls-{n}.json")
        args = [str(source / folder / t) for t in targets]
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-p",
            "devtools.conformance.plugin",
            "-o",
            "addopts=",
            "-q",
            "-n",
            "0",
            f"--junitxml={report}",
            "--rootdir",
            str(source / folder),
            *args,
        ]
        if keyword:
            cmd += ["-k", keyword]
        cwd = source / folder if peer == "safetensors" else work  # (its tests write to ./tests/data)
        done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
        (work / f"log-{n}.txt").write_text(done.stdout + done.stderr)
        outcomes.update(_outcomes(report))
    return outcomes


def _outcomes(report: Path) -> dict[str, str]:
    if not report.exists():
        return {}
    found = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}".removeprefix("::")
        kinds = {child.tag for child in case}
        found[name] = (
            "failed" if kinds & {"failure", "error"} else "skipped" if "skipped" in kinds else "passed"
        )
    return found


def main(argv: list[str] | None = None) -> int:
    """Run the selections; exit 1 when a test passing with a peer's helper fails with the drop-in, or when
    the drop-in was not called wherever the peer's helper was (the swap missed a call site)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--peer", action="append", choices=sorted(VERSIONS), help="only these peers")
    parser.add_argument("--no-write", action="store_true", help=f"do not rewrite {RESULTS.name}")
    parser.add_argument("--report-only", action="store_true", help="tabulate the cached runs, run nothing")
    args = parser.parse_args(argv)
    peers = args.peer or list(VERSIONS)
    stored = json.loads(STORED.read_text()) if STORED.exists() else {}
    if not args.report_only:
        site = test_deps()
        hub.build(CACHE / "hf")
    for peer in peers:
        began = time.perf_counter()
        if not args.report_only:
            source = fetch(peer)
            for helper in HELPERS:
                run_selection(peer, helper, source, site)
        outcomes = {helper: collect(peer, helper) for helper in HELPERS}
        entry: dict[str, Any] = {"outcomes": outcomes, "version": VERSIONS[peer], "made": _made(peer)}
        entry["calls"] = collect_calls(peer)
        entry["same_calls"] = _same_calls(outcomes, entry["calls"], collect_calls(peer, "tiegraph"))
        for key in ("minutes", "environment"):
            entry[key] = stored.get(peer, {}).get(key, "")
        if not args.report_only:
            entry["minutes"] = round((time.perf_counter() - began) / 60, 1)
            entry["environment"] = environment()
        stored[peer] = entry
        print(f"conformance: {peer}: {_summary(outcomes)} ({entry['minutes']} min)", flush=True)
        if not args.no_write:  # after every peer: a long run interrupted keeps what it measured
            STORED.write_text(json.dumps(stored, indent=1, sort_keys=True) + "\n")
            RESULTS.write_text(report(stored))
    print(report(stored))
    met = all(_target_met(stored[p]["outcomes"]) and stored[p].get("same_calls") is not False for p in peers)
    return 0 if met else 1


def collect(peer: str, helper: str) -> dict[str, str]:
    """The outcomes of the last run of ``peer``'s selection with ``helper`` (its junit files)."""
    found: dict[str, str] = {}
    for report_file in sorted((CACHE / "runs" / peer / helper).glob("junit-*.xml")):
        found.update(_outcomes(report_file))
    return found


def collect_calls(peer: str, helper: str = "peer") -> dict[str, int] | None:
    """How often each test of the last run with ``helper`` called the helper in place (:mod:`.plugin`)."""
    files = sorted((CACHE / "runs" / peer / helper).glob("calls-*.json"))
    if not files:
        return None
    found: dict[str, int] = {}
    for calls_file in files:
        found.update(json.loads(calls_file.read_text()))
    return found


def _same_calls(
    outcomes: dict[str, dict[str, str]], peer: dict[str, int] | None, ours: dict[str, int] | None
) -> bool | None:
    """Whether every test passing with both helpers called the drop-in as often as the peer's helper.

    The counter wraps whatever helper is in place, so equal counts mean the swap reached every call site.
    """
    if peer is None or ours is None:
        return None
    both = [t for t, v in outcomes["peer"].items() if v == "passed" and outcomes["tiegraph"].get(t) == v]
    return all(peer.get(t, 0) == ours.get(t, 0) for t in both)


def environment() -> str:
    """The versions the selections ran with: Python, torch, transformers (the peers' own are pinned)."""
    from importlib.metadata import version

    python = ".".join(map(str, sys.version_info[:3]))
    return f"Python {python}, torch {version('torch')}, transformers {version('transformers')}"


def _made(peer: str) -> str:
    """When the last run of ``peer`` ended (its newest junit file)."""
    times = [p.stat().st_mtime for p in (CACHE / "runs" / peer).glob("*/junit-*.xml")]
    when = datetime.datetime.fromtimestamp(max(times, default=0), datetime.timezone.utc)
    return when.strftime("%Y-%m-%d %H:%M UTC")


def _summary(by_helper: dict[str, dict[str, str]]) -> str:
    peer = by_helper["peer"]
    return ", ".join(
        f"{helper} {sum(1 for v in by_helper[helper].values() if v == 'passed')}/{len(peer)}"
        for helper in HELPERS
    )


def _target_met(by_helper: dict[str, dict[str, str]]) -> bool:
    """Every test that passes with the peer's helper passes with the drop-in's default mode."""
    peer, ours = by_helper["peer"], by_helper["tiegraph"]
    return bool(peer) and all(ours.get(t) == "passed" for t, v in peer.items() if v == "passed")


def _why(test: str) -> str:
    for pattern, reason in WHY.items():
        if pattern in test:
            return reason
    return "**not explained**"


def _same_calls_line(stored: dict[str, Any]) -> str:
    said = {True: "yes", False: "**no**", None: "not counted"}
    return ", ".join(f"{peer} {said[stored[peer].get('same_calls')]}" for peer in VERSIONS if peer in stored)


def report(stored: dict[str, Any]) -> str:
    """The Markdown written to RESULTS.md: counts per peer, then every test whose outcome differs."""
    lines = [
        "| peer | version | made | with | tie-related tests | run here | call the helper "
        "| pass with the peer's helper | with tiegraph (default) | with tiegraph (truth-first) | target "
        "| minutes |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for peer in VERSIONS:
        if peer not in stored:
            continue
        entry, by_helper = stored[peer], stored[peer]["outcomes"]
        counts = [sum(1 for v in by_helper[h].values() if v == "passed") for h in HELPERS]
        ran = sum(1 for v in by_helper["peer"].values() if v != "skipped")
        calls = entry.get("calls")
        calling = "" if calls is None else sum(1 for t in by_helper["peer"] if calls.get(t))
        met = "met" if _target_met(by_helper) else "MISSED"
        lines.append(
            f"| {peer} | {entry['version']} | {entry['made']} | {entry.get('environment', '')} | "
            f"{len(by_helper['peer'])} | {ran} | {calling} | {counts[0]} | {counts[1]} | {counts[2]} | "
            f"{met} | {entry['minutes']} |"
        )
    lines += [
        "",
        "*Run here*: not skipped on this machine (the rest need CUDA, several accelerators or bitsandbytes). "
        "*Call the helper*: tests in which the peer called its own helper at least once (the plugin counts "
        "the calls). In every test passing with both, the drop-in (default mode) was called exactly as often "
        f"as the peer's helper, so the swap reached every call site: {_same_calls_line(stored)}.",
        "",
        "Tests whose outcome differs between the helpers:",
        "",
        "| peer | test | peer's helper | tiegraph | truth-first | why they differ |",
        "|---|---|---|---|---|---|",
    ]
    for peer in VERSIONS:
        by_helper = stored.get(peer, {}).get("outcomes", {})
        for test in sorted(by_helper.get("peer", {})):
            row = [by_helper[h].get(test, "missing") for h in HELPERS]
            if len(set(row)) > 1:
                lines.append(f"| {peer} | `{test}` | {' | '.join(row)} | {_why(test)} |")
    return "\n".join(lines) + "\n"
