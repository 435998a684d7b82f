"""tiegraph against its peers and against one bare walk of the module tree.

Every workload is built once; then, in one run, each timed function is called once per round, rounds are
repeated and the order of the functions is rotated every round (so drift on a busy machine hits everyone
alike). Reported numbers are medians of ``time.perf_counter`` differences. The garbage collector is
collected before every round and disabled while a round runs (as :mod:`timeit` does), for every function.
Each call is also timed with ``time.thread_time`` (CPU time of this thread): on a shared machine the wall
clock also counts the time other processes hold the CPU, so ratios are given by both clocks.

Timed, per workload:

- ``tg build``: ``tiegraph.build_graph(model)`` (the index; the networkx graph is lazy)
- ``tg tied``: ``build_graph(model).tied_to_input_embedding()``
- ``tg groups``: ``build_graph(model).tie_groups()``
- ``accelerate``: ``accelerate.utils.find_tied_parameters(model)`` (identity of parameters only)
- ``peft``: ``peft.utils.other._get_module_names_tied_with_embedding(model)`` (declarations only)
- ``safetensors``: ``safetensors.torch._find_shared_tensors(state_dict)`` (CPU state dicts of plain tensors
  only: it raises on wrapper tensors such as torchao's; the state dict is made once, outside the timing)
- ``compat accelerate``, ``compat peft``, ``compat safetensors``: :mod:`tiegraph.compat`'s drop-ins for those
  three helpers, same arguments (each must cost at most its peer: see "Drop-ins beside their peers")
- ``named_parameters``: ``list(model.named_parameters(remove_duplicate=False))`` (floor)
- ``named_modules``: ``list(model.named_modules())`` (floor)
- ``read floor``: :func:`read_floor`, the least reading an exact answer of tiegraph's kind needs (every slot's
  tensor, every wrapper tensor's data components, each storage's data pointer, in C-level passes; no names,
  no checks, no answer): what is left of tiegraph's time above it is naming, declarations and the index

Memory (tracemalloc, separate from the timing): peak and retained bytes of ``build_graph`` (the index),
and the retained bytes of the lazily built networkx graph (``TieGraph.graph``), also per slot.

Usage::

    .venv/bin/python benchmarks/bench.py                       # every workload, prints the tables
    .venv/bin/python benchmarks/bench.py --publish             # RESULTS.md, the README, the docs page
    .venv/bin/python benchmarks/bench.py --markdown benchmarks/RESULTS.md
    .venv/bin/python benchmarks/bench.py --smoke               # tiny workloads, a few rounds (CI)
    .venv/bin/python benchmarks/bench.py --only llama-70b-meta --repeats 300
"""

from __future__ import annotations

import argparse
import datetime
import gc
import os
import platform
import statistics
import sys
import time
import tracemalloc
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import compress
from operator import attrgetter
from typing import Any

import torch
from torch import nn

import tiegraph
from tiegraph import compat

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import targets

from tiegraph._walk import slots_of, walk

# --------------------------------------------------------------------------------------------- workloads


@dataclass
class Workload:
    """A model built once, and how many rounds to time it for."""

    name: str
    model: nn.Module
    repeats: int
    note: str
    state_dict: dict[str, torch.Tensor] | None = None  # CPU workloads only
    slots: int = 0
    modules: int = 0
    timings: dict[str, list[float]] = field(default_factory=dict)  # perf_counter (wall) seconds
    cpu: dict[str, list[float]] = field(default_factory=dict)  # thread_time (CPU) seconds
    memory: dict[str, int] = field(default_factory=dict)
    cold: dict[str, list[float]] = field(default_factory=dict)  # thread_time right after gc.collect()
    answers: dict[str, str] = field(default_factory=dict)


def _llama(device: str, **overrides: Any) -> nn.Module:
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model("llama", tie_word_embeddings=True, **overrides)
    with torch.device(device):
        model: nn.Module = AutoModelForCausalLM.from_config(config)
    return model


def llama_70b_meta() -> nn.Module:
    """Llama 3 70B shapes (80 layers, 8192 wide, 128k vocabulary), tied embeddings, on meta."""
    return _llama(
        "meta",
        num_hidden_layers=80,
        hidden_size=8192,
        intermediate_size=28672,
        num_attention_heads=64,
        num_key_value_heads=8,
        vocab_size=128256,
    )


def deepseek_v3_meta() -> nn.Module:
    """DeepSeek-V3 with its default config (61 layers, 256 routed experts), on meta."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model("deepseek_v3")
    with torch.device("meta"):
        model: nn.Module = AutoModelForCausalLM.from_config(config)
    return model


def t5_cpu(layers: int = 12) -> nn.Module:
    """A small T5 (shared embedding tied to both stacks' embeddings and the LM head), on CPU."""
    from transformers import AutoConfig, AutoModelForSeq2SeqLM

    config = AutoConfig.for_model(
        "t5",
        d_model=32,
        d_ff=64,
        d_kv=8,
        num_heads=4,
        num_layers=layers,
        num_decoder_layers=layers,
        vocab_size=512,
        tie_word_embeddings=True,
    )
    model: nn.Module = AutoModelForSeq2SeqLM.from_config(config)
    return model


def llama_thin_cpu(layers: int = 400) -> nn.Module:
    """A Llama with many thin layers (8 wide), tied embeddings, on CPU."""
    return _llama(
        "cpu",
        num_hidden_layers=layers,
        hidden_size=8,
        intermediate_size=16,
        num_attention_heads=2,
        num_key_value_heads=1,
        vocab_size=64,
    )


class _Layer(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(width, width))
        self.bias = nn.Parameter(torch.empty(width))


class _Block(nn.Module):
    def __init__(self, width: int, layers: int, number: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(_Layer(width) for _ in range(layers))
        first: torch.Tensor = self.layers[0].weight  # type: ignore[assignment]  # a _Layer's Parameter
        self.layers[-1].weight = first  # a tie inside the block
        # a view: a row slice (or, every other block, the transpose) of the first weight, as a buffer
        self.register_buffer("rows", first.detach()[:2] if number % 2 else first.detach().t())


class Synthetic(nn.Module):
    """About ``slots`` slots: blocks of layers with a tie and a view each, plus a tied embedding/head."""

    _tied_weights_keys = {"head.weight": "embed.weight"}  # noqa: RUF012 - read as a class attribute

    def __init__(self, slots: int, width: int = 8, layers: int = 24) -> None:
        super().__init__()
        per_block = 2 * layers + 1
        self.embed = nn.Embedding(16, width)
        self.head = nn.Linear(width, 16, bias=False)
        self.head.weight = self.embed.weight
        self.blocks = nn.ModuleList(_Block(width, layers, b) for b in range(max(1, (slots - 2) // per_block)))

    def get_input_embeddings(self) -> nn.Module:
        return self.embed


def synthetic_meta(slots: int = 100_000) -> nn.Module:
    with torch.device("meta"):
        return Synthetic(slots)


def peft_llama(layers: int = 16) -> nn.Module:
    """A tied Llama (CPU) wrapped by PEFT LoRA on the attention projections."""
    from peft import LoraConfig, get_peft_model

    base = _llama(
        "cpu",
        num_hidden_layers=layers,
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=128,
    )
    return get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))


# name -> (builder, repeats, on cpu)
FULL: list[tuple[str, Callable[[], nn.Module], int, str]] = [
    ("llama-70b-meta", llama_70b_meta, 200, "meta"),
    ("deepseek-v3-meta", deepseek_v3_meta, 100, "meta"),
    ("t5-cpu", t5_cpu, 200, "cpu"),
    ("llama-thin-cpu", llama_thin_cpu, 40, "cpu"),
    ("synthetic-100k-meta", synthetic_meta, 5, "meta"),
    ("peft-lora-llama-cpu", peft_llama, 200, "cpu"),
]


# build_graph on a quantized model must stay within 3x the plain one (targets.QUANTIZED_OVER_PLAIN)
def llama64_cpu(layers: int = 16, quantized: bool = False) -> nn.Module:
    """A tied Llama 64 wide on CPU; ``quantized``: every Linear made torchao Int8 (wrapper tensors)."""
    model = _llama("cpu", hidden_size=64, intermediate_size=64, num_hidden_layers=layers)
    if quantized:
        from torchao.quantization import Int8WeightOnlyConfig, quantize_

        quantize_(model, Int8WeightOnlyConfig())
    return model


FULL += [
    ("llama64-cpu (plain)", llama64_cpu, 200, "cpu"),
    # not "cpu": safetensors' _find_shared_tensors raises on wrapper tensors, so it is left out here
    ("llama64-cpu (torchao int8)", lambda: llama64_cpu(quantized=True), 200, "cpu, wrapper tensors"),
]

SMOKE: list[tuple[str, Callable[[], nn.Module], int, str]] = [
    ("llama-thin-cpu (8 layers)", lambda: llama_thin_cpu(8), 3, "cpu"),
    ("synthetic-500-meta", lambda: synthetic_meta(500), 3, "meta"),
    ("peft-lora-llama-cpu (2 layers)", lambda: peft_llama(2), 3, "cpu"),
    (
        "llama64-cpu (torchao int8, 2 layers)",
        lambda: llama64_cpu(2, quantized=True),
        3,
        "cpu, wrapper tensors",
    ),
]


def make(name: str, builder: Callable[[], nn.Module], repeats: int, device: str) -> Workload:
    model = builder()
    work = Workload(name, model, repeats, device)
    work.slots = tiegraph.build_graph(model).num_slots
    work.modules = sum(1 for _ in model.named_modules(remove_duplicate=False))
    if device == "cpu":
        work.state_dict = model.state_dict()
    return work


# --------------------------------------------------------------------------------------------- timing


def timed_functions(work: Workload) -> dict[str, Callable[[], object]]:
    from accelerate.utils import find_tied_parameters
    from peft.utils.other import _get_module_names_tied_with_embedding

    model = work.model
    build = tiegraph.build_graph
    fns: dict[str, Callable[[], object]] = {
        "tg build": lambda: build(model),
        "tg tied": lambda: build(model).tied_to_input_embedding(),
        "tg groups": lambda: build(model).tie_groups(),
        "accelerate": lambda: find_tied_parameters(model),
        "peft": lambda: _get_module_names_tied_with_embedding(model),
        "compat accelerate": lambda: compat.find_tied_parameters(model),
        "compat peft": lambda: compat.get_module_names_tied_with_embedding(model),
        "named_parameters": lambda: list(model.named_parameters(remove_duplicate=False)),
        "named_modules": lambda: list(model.named_modules()),
        "read floor": lambda: read_floor(model),
    }
    if work.state_dict is not None:
        from safetensors.torch import _find_shared_tensors

        state_dict = work.state_dict
        fns["safetensors"] = lambda: _find_shared_tensors(state_dict)
        fns["compat safetensors"] = lambda: compat.find_shared_tensors(state_dict)
    return fns


_STORAGE, _DATA_PTR = torch.Tensor.untyped_storage, torch.UntypedStorage.data_ptr
_PLAIN = frozenset({torch.Tensor, nn.Parameter})


def read_floor(model: nn.Module) -> list[int]:
    """The reads an exact storage answer cannot skip, and nothing else.

    Every slot's tensor (by the builder's own walk, the fastest known: :func:`tiegraph._walk.walk` and
    :func:`~tiegraph._walk.slots_of` without storage keys), each wrapper's data components (by its class's
    ``__tensor_flatten__`` names, read on the first tensor of the class only), their storages and their
    sorted data pointers. No names, no checks, no answer.
    """
    tensors = slots_of(walk(model), keys=False).tensors
    kinds = list(map(type, tensors))
    parts = list(compress(tensors, map(_PLAIN.__contains__, kinds)))
    wrappers: dict[Any, list[Any]] = {}  # subclass -> its tensors; each class has __tensor_flatten__
    for t, kind in zip(tensors, kinds, strict=True):
        if kind not in _PLAIN:
            wrappers.setdefault(kind, []).append(t)
    for kind, group in wrappers.items():
        names, _ = kind.__tensor_flatten__(group[0])
        for name in names:
            parts.extend(map(attrgetter(name), group))
    return sorted(map(_DATA_PTR, map(_STORAGE, parts)))


def run_timings(work: Workload, repeats: int) -> None:
    fns = timed_functions(work)
    names = list(fns)
    samples: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    clock, cpu_clock = time.perf_counter, time.thread_time
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in names:  # warm up: imports, caches, first-call costs
            fns[name]()
        for r in range(repeats):
            order = names[r % len(names) :] + names[: r % len(names)]
            gc.collect()
            gc.disable()
            try:
                for name in order:
                    fn = fns[name]
                    cpu_start = cpu_clock()
                    start = clock()
                    fn()
                    stop = clock()
                    cpu[name].append(cpu_clock() - cpu_start)
                    samples[name].append(stop - start)
            finally:
                gc.enable()
    work.timings, work.cpu = samples, cpu
    tg = tiegraph.build_graph(work.model)
    from accelerate.utils import find_tied_parameters

    work.answers = {
        "tg tied": ", ".join(tg.tied_to_input_embedding()) or "-",
        "tg groups": str(len(tg.tie_groups())),
        "accelerate groups": str(len(find_tied_parameters(work.model))),
    }
    if work.state_dict is not None:
        from safetensors.torch import _find_shared_tensors

        work.answers["safetensors groups"] = str(
            sum(1 for group in _find_shared_tensors(work.state_dict) if len(group) > 1)
        )


COLD = ("tg tied", "accelerate", "named_parameters", "read floor")


def run_cold(work: Workload, repeats: int) -> None:
    """Each of :data:`COLD` timed as the first call after a full ``gc.collect()``.

    A full collection walks every object of the process and leaves the CPU caches holding none of the
    model's or the library's objects: this is the cost of a single call in a script, which the rotated
    rounds (each function mostly right after another one that warmed the same objects) do not show.
    """
    fns = timed_functions(work)
    cold: dict[str, list[float]] = {name: [] for name in COLD}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(repeats):
            for name in COLD:
                gc.collect()
                gc.disable()
                try:
                    start = time.thread_time()
                    fns[name]()
                    cold[name].append(time.thread_time() - start)
                finally:
                    gc.enable()
    work.cold = cold


def run_memory(work: Workload) -> None:
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        tg = tiegraph.build_graph(work.model)
        current, peak = tracemalloc.get_traced_memory()
        work.memory["index peak"] = peak - base
        work.memory["index kept"] = current - base
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        _ = tg.graph
        work.memory["networkx kept"] = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    del tg
    gc.collect()


# --------------------------------------------------------------------------------------------- report


def median_ms(work: Workload, name: str, cpu: bool = False) -> float | None:
    samples = (work.cpu if cpu else work.timings).get(name)
    return statistics.median(samples) * 1e3 if samples else None


def ratio(work: Workload, top: str, bottom: str, cpu: bool = False) -> float | None:
    a, b = median_ms(work, top, cpu), median_ms(work, bottom, cpu)
    return a / b if a is not None and b else None


COLUMNS = [
    "tg build",
    "tg tied",
    "tg groups",
    "accelerate",
    "peft",
    "safetensors",
    "named_parameters",
    "named_modules",
    "read floor",
]
RATIOS = [
    ("tg tied / accelerate", "tg tied", "accelerate"),
    ("tg groups / accelerate", "tg groups", "accelerate"),
    ("tg tied / peft", "tg tied", "peft"),
    ("tg groups / safetensors", "tg groups", "safetensors"),
    ("tg build / named_parameters", "tg build", "named_parameters"),
    ("tg build / named_modules", "tg build", "named_modules"),
    ("read floor / accelerate", "read floor", "accelerate"),
]


def _ms(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def _x(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def _kib(value: int) -> str:
    return f"{value / 1024:,.0f} KiB"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def machine() -> list[str]:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    except OSError:
        pass
    versions = []
    for package in ("torch", "transformers", "accelerate", "peft", "safetensors", "networkx"):
        module = sys.modules.get(package) or __import__(package)
        versions.append(f"{package} {getattr(module, '__version__', '?')}")
    return [
        f"- date: {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}",
        f"- machine: {os.cpu_count()} CPUs (nproc), {cpu}, {platform.system()} {platform.machine()}",
        f"- Python {platform.python_version()}; {', '.join(versions)}",
    ]


#: each drop-in of tiegraph.compat against its peer's own helper, on every workload (target <= 1.0x)
DROP_INS = [(f"compat {p} / {p}", f"compat {p}", p) for p in ("accelerate", "peft", "safetensors")]


def report(works: list[Workload], smoke: bool, cli: dict[str, float] | None = None) -> str:
    lines = ["### Medians, wall clock (ms, time.perf_counter)", ""]
    lines += table(
        ["workload", "slots", "module paths", "rounds", *COLUMNS],
        [
            [w.name, f"{w.slots:,}", f"{w.modules:,}", str(len(w.timings["tg build"]))]
            + [_ms(median_ms(w, c)) for c in COLUMNS]
            for w in works
        ],
    )
    lines += ["", "### Medians, CPU time of the timing thread (ms, time.thread_time)", ""]
    lines += table(
        ["workload", *COLUMNS],
        [[w.name] + [_ms(median_ms(w, c, cpu=True)) for c in COLUMNS] for w in works],
    )
    lines += ["", "### Ratios of medians, wall / CPU (lower is better for tiegraph)", ""]
    lines += table(
        ["workload", *(label for label, _, _ in RATIOS)],
        [
            [w.name] + [f"{_x(ratio(w, a, b))} / {_x(ratio(w, a, b, cpu=True))}" for _, a, b in RATIOS]
            for w in works
        ],
    )
    lines += ["", "### Drop-ins beside their peers (CPU medians; target <= 1.00x on every workload)", ""]
    lines += table(
        ["workload", *(label for label, _, _ in DROP_INS)],
        [[w.name] + [_x(ratio(w, a, b, cpu=True)) for _, a, b in DROP_INS] for w in works],
    )
    lines += [
        "",
        "### Cold: first call after a full `gc.collect()` (CPU medians, ms; judged like the warm rounds)",
        "",
        "A single call in a script meets cold CPU caches; the rotated rounds above mostly time each function "
        "right after another that warmed the same objects (`tg tied` right after `tg build`).",
        "",
    ]
    lines += table(
        ["workload", "rounds", *COLD, "tg tied / accelerate", "tg tied / read floor"],
        [
            [w.name, str(len(w.cold[COLD[0]]))]
            + [_ms(statistics.median(w.cold[name]) * 1e3) for name in COLD]
            + [_x(statistics.median(w.cold["tg tied"]) / statistics.median(w.cold["accelerate"]))]
            + [_x(statistics.median(w.cold["tg tied"]) / statistics.median(w.cold["read floor"]))]
            for w in works
            if w.cold and all(w.cold.values())
        ],
    )
    lines += ["", "### Memory (tracemalloc)", ""]
    lines += table(
        [
            "workload",
            "index peak",
            "index peak / slot",
            "index kept",
            "index kept / slot",
            "networkx kept",
            "networkx / slot",
        ],
        [
            [
                w.name,
                _kib(w.memory["index peak"]),
                f"{w.memory['index peak'] / w.slots:,.0f} B",
                _kib(w.memory["index kept"]),
                f"{w.memory['index kept'] / w.slots:,.0f} B",
                _kib(w.memory["networkx kept"]),
                f"{w.memory['networkx kept'] / w.slots:,.0f} B",
            ]
            for w in works
        ],
    )
    lines += ["", "### What each found", ""]
    keys = ["tg tied", "tg groups", "accelerate groups", "safetensors groups"]
    lines += table(["workload", *keys], [[w.name] + [w.answers.get(k, "n/a") for k in keys] for w in works])
    if not smoke:
        lines += ["", "### Targets (see benchmarks/targets.py)", ""]
        lines += targets.tied_lines(works, ratio)
        lines += targets.other_lines(works, ratio, DROP_INS)
        if cli is not None:
            lines += ["", "### The command line (wall seconds, medians of fresh interpreters)", ""]
            lines += table(["command", "seconds"], [[f"`{k}`", f"{v:.3f}"] for k, v in cli.items()])
            lines += ["", *targets.cli_lines(cli)]
    lines += ["", *machine()]
    return "\n".join(lines) + "\n"


def replica_check_cost(smoke: bool) -> str:
    """One line: what ``tiegraph.distributed.check_tied_replicas`` costs per call (one gloo rank, CPU).

    The copies are an embedding and its head of Llama 3.2 1B's shape (128256 x 2048, bfloat16; 1000 x 64
    with --smoke): the fingerprint reads 16 rows whatever the size, so the all_gather dominates.
    """
    import tempfile

    import torch.distributed as dist

    import tiegraph.distributed

    rows, cols = (1000, 64) if smoke else (128256, 2048)
    model = nn.Module()
    model.embed = nn.Embedding(
        rows, cols, dtype=torch.bfloat16, _weight=torch.zeros(rows, cols, dtype=torch.bfloat16)
    )
    model.head = nn.Linear(cols, rows, bias=False, dtype=torch.bfloat16)
    ties = [["embed.weight", "head.weight"]]
    started_group = not dist.is_initialized()
    if started_group:
        store = dist.FileStore(os.path.join(tempfile.mkdtemp(), "store"), 1)
        dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        calls = 5 if smoke else 30
        tiegraph.distributed.check_tied_replicas(model, ties)  # warm up
        started = time.perf_counter()
        for _ in range(calls):
            tiegraph.distributed.check_tied_replicas(model, ties)
        per_call = (time.perf_counter() - started) / calls * 1000
    finally:
        if started_group:
            dist.destroy_process_group()
    return (
        f"\ncheck_tied_replicas (one gloo rank, CPU; two {rows} x {cols} bfloat16 copies): "
        f"{per_call:.2f} ms per call (mean of {calls}; 16 rows read per copy, then one all_gather_object)\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--smoke", action="store_true", help="tiny workloads, 3 rounds (CI: proves it runs)")
    parser.add_argument("--markdown", metavar="FILE", help="also write the tables as markdown to FILE")
    parser.add_argument("--only", action="append", metavar="NAME", help="run only these workloads")
    parser.add_argument("--repeats", type=int, help="rounds per workload (default: per workload)")
    parser.add_argument(
        "--publish", action="store_true", help="write RESULTS.md, the README's and the docs' tables"
    )
    args = parser.parse_args(argv)
    if args.publish and (args.smoke or args.only):
        parser.error("--publish needs the full run (no --smoke, no --only)")
    plan = SMOKE if args.smoke else FULL
    if args.only:
        plan = [entry for entry in plan if entry[0] in args.only]
        if not plan:
            parser.error(f"--only matched no workload; choose from {[entry[0] for entry in FULL + SMOKE]}")
    works = []
    for name, builder, repeats, device in plan:
        started = time.perf_counter()
        work = make(name, builder, repeats, device)
        took = time.perf_counter() - started
        print(f"{name}: built in {took:.1f} s; timing...", file=sys.stderr, flush=True)
        run_timings(work, args.repeats or repeats)
        run_cold(work, min(args.repeats or repeats, 60))
        run_memory(work)
        work.model = nn.Module()  # let the model go before the next one is built
        work.state_dict = None
        works.append(work)
        gc.collect()
    cli = None if args.smoke or args.only else targets.cli_times()
    text = report(works, args.smoke, cli)
    if not args.only:
        text += replica_check_cost(args.smoke)
    print(text)
    if args.publish:
        import publish

        found = [*targets.tied_lines(works, ratio), *targets.other_lines(works, ratio, DROP_INS)]
        found += targets.cli_lines(cli) if cli else []
        for path in publish.publish(works, text, ratio, machine(), found):
            print(f"wrote {path}", file=sys.stderr)
    if args.markdown:
        with open(args.markdown, "w") as out:
            out.write("## tiegraph benchmark results\n\n")
            out.write("Rerun: `.venv/bin/python benchmarks/bench.py --markdown benchmarks/RESULTS.md`\n\n")
            out.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
