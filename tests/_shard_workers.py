"""The rank side of ``tests/test_sharding_fsdp.py``: run as ``python tests/_shard_workers.py OUT_DIR``.

Each rank joins a gloo group (FileStore at ``TIEGRAPH_TEST_STORE``, a timeout), and for every case of
:data:`PLANS` builds the same tiny tied model, applies the plan with torch's own ``fully_shard``, runs one
forward, backward and SGD step on the same batch as the other rank (so the averaged gradient is the
single-process one), and records what torch did: ``refused`` (a ``fully_shard`` call raised), ``raises``
(the first forward raised), or the full values of both ends after the step, which the test compares with
a tied and an untied single-process reference. It also records what tiegraph sees after the cut.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
warnings.filterwarnings("ignore", module=r"(transformers|torch)(\.|$)")

from _ranks import worker_main  # noqa: E402
from transformers import LlamaForCausalLM  # noqa: E402

import tiegraph  # noqa: E402
from tiegraph.sharding import fixed_plan  # noqa: E402

LR = 0.5


def llama(tie: str = "identity") -> LlamaForCausalLM:
    """The suite's tiny Llama, tied by identity or by storage only; the same weights on every rank."""
    from models import llama_tied

    torch.manual_seed(0)
    model = llama_tied()
    if tie == "storage":  # two Parameter objects over one storage
        model.lm_head.weight = nn.Parameter(model.model.embed_tokens.weight.data)
    elif tie == "untied":
        model.lm_head.weight = nn.Parameter(model.model.embed_tokens.weight.detach().clone())
    return model


class ViewTied(nn.Module):
    """An embedding and a projection whose weight is its transposed view (as PEFT's ensure_weight_tying)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(64, 16)
        self.proj = nn.Linear(64, 16, bias=False)
        self.proj.weight = nn.Parameter(self.embed.weight.t())

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.proj(torch.nn.functional.one_hot(ids, 64).float()) + self.embed(ids)
        return out


def layers(m: LlamaForCausalLM) -> list[nn.Module]:
    return list(m.model.layers)


#: case -> (model factory, plan from the model); the plans of issue text and a few more. A plan reads the
#: submodules of the model its factory built (a Llama's, or ViewTied's), so it takes that model as Any.
PLANS: dict[str, tuple[Callable[[], nn.Module], Callable[[Any], Any]]] = {
    "root-only": (llama, lambda m: [m]),
    "layers+root": (llama, lambda m: [*layers(m), m]),
    "group+layers+root": (llama, lambda m: [[m.model.embed_tokens, m.lm_head], *layers(m), m]),
    "torchtitan": (llama, lambda m: [*layers(m), [m.model.embed_tokens, m.model.norm, m.lm_head], m]),
    "split-no-root": (llama, lambda m: [*layers(m), m.model.embed_tokens, m.lm_head]),
    "split-with-root": (llama, lambda m: [*layers(m), m.model.embed_tokens, m]),
    "head-only-no-root": (llama, lambda m: [m.lm_head]),
    "policy-layers": (llama, lambda _m: {"transformer_layer_cls_to_wrap": ["LlamaDecoderLayer"]}),
    "policy-embedding": (
        llama,
        lambda _m: {"fsdp_transformer_layer_cls_to_wrap": "LlamaDecoderLayer,Embedding"},
    ),
    "storage-group": (lambda: llama("storage"), lambda m: [[m.model.embed_tokens, m.lm_head], m]),
    "storage-root": (lambda: llama("storage"), lambda m: [m]),
    "view-root": (ViewTied, lambda m: [m]),
}
#: the cases whose fixed plan (tiegraph.sharding.fixed_plan) is run for real too
FIXED = ("split-no-root", "split-with-root", "policy-embedding")


def ends(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(model, ViewTied):
        return model.embed.weight, model.proj.weight
    assert isinstance(model, LlamaForCausalLM)  # (fully_shard makes a subclass of the model's class)
    return model.model.embed_tokens.weight, model.lm_head.weight


def full(t: torch.Tensor) -> list[Any]:
    value = t.full_tensor() if hasattr(t, "full_tensor") else t
    return value.detach().tolist()


def step(model: nn.Module) -> None:
    ids = torch.arange(12).reshape(2, 6) % 64
    out = model(ids)
    logits = out.logits if hasattr(out, "logits") else out
    logits.float().pow(2).mean().backward()
    torch.optim.SGD(model.parameters(), lr=LR).step()


def apply(plan: Any, model: nn.Module) -> None:
    from torch.distributed.fsdp import fully_shard

    from tiegraph.sharding._plan import resolve

    for call in resolve(model, plan):
        fully_shard(list(call.modules) if len(call.modules) > 1 else call.modules[0])


def after_cut(model: nn.Module) -> dict[str, Any]:
    tg = tiegraph.build_graph(model)
    return {"groups": tg.tie_groups(), "audit": [[f.kind, f.message] for f in tg.audit()]}


def run_case(
    factory: Callable[[], nn.Module], plan_of: Callable[[nn.Module], Any], fixed: bool
) -> dict[str, Any]:
    model = factory()
    plan = plan_of(model)
    if fixed:
        plan = fixed_plan(model, plan)
    try:
        apply(plan, model)
    except NotImplementedError as error:
        return {"torch": "refused", "error": str(error)}
    seen = after_cut(model)
    try:
        step(model)
    except (ValueError, RuntimeError) as error:
        return {"torch": "raises", "error": str(error), **seen}
    embed, head = ends(model)
    return {"torch": "ran", "embed": full(embed), "head": full(head), **seen}


def run(_rank: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for case, (factory, plan_of) in PLANS.items():
        results[case] = run_case(factory, plan_of, fixed=False)
        if case in FIXED:
            results[case + "/fixed"] = run_case(factory, plan_of, fixed=True)
        dist.barrier()
    return results


if __name__ == "__main__":
    worker_main(run)
