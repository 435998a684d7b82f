"""The rank side of ``tests/test_sharding_pipeline.py``: run as ``python tests/_pipe_workers.py OUT_DIR``.

Two gloo ranks run a real ``torch.distributed.pipelining`` GPipe schedule over a tiny tied language model
split in two manual ``PipelineStage`` s (rank 0: embedding and first layer; rank 1: second layer and the
head, a copy of the embedding), check the tied replicas before and after one SGD step, and check that
``check_ranks_agree`` takes the ``pipeline()`` tracer's uneven stages for what they are.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import torch
from torch import nn

warnings.filterwarnings("ignore", module=r"(transformers|torch)(\.|$)")

from _ranks import worker_main  # noqa: E402

import tiegraph.distributed  # noqa: E402

TIES = [["embed.weight", "head.weight"]]
VOCAB, HIDDEN = 64, 16


class TinyLM(nn.Module):
    """Embedding, two layers (a ModuleDict, so a stage keeps the full model's names), head tied to it."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed: nn.Module | None = nn.Embedding(VOCAB, HIDDEN)
        self.layers = nn.ModuleDict({str(i): nn.Linear(HIDDEN, HIDDEN) for i in range(2)})
        self.head: nn.Module | None = nn.Linear(HIDDEN, VOCAB, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x) if self.embed is not None else x
        for layer in self.layers.values():
            h = torch.tanh(layer(h))
        return self.head(h) if self.head is not None else h


def stage_module(model: TinyLM, index: int) -> TinyLM:
    """Stage ``index`` of two, made as torchtitan makes manual stages: a copy without the other parts."""
    stage = copy.deepcopy(model)
    if index == 0:
        del stage.layers["1"]
        stage.head = None
    else:
        del stage.layers["0"]
        stage.embed = None
    return stage


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.arange(24).reshape(4, 6) % VOCAB
    return ids, (ids + 1) % VOCAB


def loss_fn(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(logits.reshape(-1, VOCAB), target.reshape(-1))


def gpipe_step(rank: int) -> dict[str, Any]:
    from torch.distributed.pipelining import PipelineStage, ScheduleGPipe

    stage_mod = stage_module(TinyLM(), rank)
    stage = PipelineStage(stage_mod, rank, 2, torch.device("cpu"))
    schedule = ScheduleGPipe(stage, n_microbatches=2, loss_fn=loss_fn)
    out: dict[str, Any] = {
        "before": [m.ranks for m in tiegraph.distributed.check_tied_replicas(stage_mod, TIES)]
    }
    ids, target = batch()
    if rank == 0:
        schedule.step(ids)
    else:
        schedule.step(target=target)
    torch.optim.SGD(stage_mod.parameters(), lr=0.5).step()
    cheap = tiegraph.distributed.check_tied_replicas(stage_mod, TIES)
    exact = tiegraph.distributed.check_tied_replicas(stage_mod, TIES, exact=True)
    out["after"] = [[list(m.ranks), [list(r) for r in m.replicas], m.message] for m in cheap]
    out["after_exact"] = [[list(m.ranks), m.max_diff] for m in exact]
    out["agree"] = [str(d) for d in tiegraph.distributed.check_ranks_agree(stage_mod)]
    return out


def traced_stages(rank: int) -> dict[str, Any]:
    """The pipeline() tracer's stage on this rank: stage 0 keeps the tied head Parameter, stage 1 a copy."""
    from torch.distributed.pipelining import SplitPoint, pipeline

    model = TinyLM()
    pipe = pipeline(model, (batch()[0][:2],), split_spec={"layers.1": SplitPoint.BEGINNING})
    stage_mod = pipe.get_stage_module(rank)
    return {
        "params": sorted(n for n, _ in stage_mod.named_parameters(remove_duplicate=False)),
        "groups": tiegraph.build_graph(stage_mod).tie_groups(),
        "agree": [str(d) for d in tiegraph.distributed.check_ranks_agree(stage_mod)],
        "replicas": [list(m.ranks) for m in tiegraph.distributed.check_tied_replicas(stage_mod, TIES)],
    }


def run(rank: int) -> dict[str, Any]:
    return {"gpipe": gpipe_step(rank), "traced": traced_stages(rank)}


if __name__ == "__main__":
    worker_main(run)
