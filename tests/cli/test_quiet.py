"""The command line keeps stderr to what tiegraph says (:mod:`tiegraph.cli.quiet`), run for real in a
subprocess.

Importing torchao (which transformers does when it builds a model, and a torchao-quantized model needs)
prints to stderr through logging: ``Failed to load .../torchao/_C_mxfp8...so`` (its CUDA kernels, absent on
a CPU machine) and torch's pytree warnings about torchao's ``KernelPreference`` enum. ``tiegraph inspect``
silences them; ``-v`` lets them through, which is also this test's control: if torchao stops printing them,
the control fails and the quiet test no longer proves anything.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

#: A line of torchao's import-time noise contains one of these.
NOISE = ("Failed to load", "_C_mxfp8", "KernelPreference", "is an Enum subclass")

FACTORY = textwrap.dedent(
    """
    from torchao.quantization import Int8WeightOnlyConfig, quantize_
    from transformers import AutoConfig, AutoModelForCausalLM


    def make():
        config = AutoConfig.for_model(
            "llama", vocab_size=64, hidden_size=64, intermediate_size=64, num_hidden_layers=1,
            num_attention_heads=2, tie_word_embeddings=True,
        )
        model = AutoModelForCausalLM.from_config(config)
        quantize_(model, Int8WeightOnlyConfig())
        return model
    """
)

#: Settings a caller's environment could carry that would quiet the libraries without tiegraph's help.
_QUIETING = ("TRANSFORMERS_VERBOSITY", "TRANSFORMERS_NO_ADVISORY_WARNINGS", "TORCH_LOGS", "PYTHONWARNINGS")


def _inspect(tmp: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in _QUIETING}
    env |= {"HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run(
        [sys.executable, "-m", "tiegraph", *flags, "inspect", "tiny_quantized:make", "--allow-code"],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, subprocess.CompletedProcess[str]]:
    """``tiegraph inspect`` on a torchao-quantized tiny Llama, quiet (the default) and with ``-v``."""
    tmp = tmp_path_factory.mktemp("quiet")
    (tmp / "tiny_quantized.py").write_text(FACTORY)
    return {"quiet": _inspect(tmp), "verbose": _inspect(tmp, "-v")}


def _noise(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if any(word in line for word in NOISE)]


def test_inspect_stderr_has_no_torchao_import_noise(
    runs: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    """The quantized model was built and reported (torchao was imported and used), and stderr is empty."""
    result = runs["quiet"]
    assert result.returncode == 0, result.stderr
    assert "torchao.Int8Tensor" in result.stdout
    assert "untied-by-quantization" in result.stdout
    assert _noise(result.stderr) == []
    assert result.stderr == ""


def test_verbose_lets_the_noise_through(runs: dict[str, subprocess.CompletedProcess[str]]) -> None:
    """The control: the same run with -v shows every kind of that noise, so the quiet run had it to hide."""
    result = runs["verbose"]
    assert result.returncode == 0, result.stderr
    for word in NOISE:
        assert word in result.stderr, result.stderr
