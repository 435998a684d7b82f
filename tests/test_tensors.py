"""Tensors that are not plain (``tiegraph._tensors``): wrapper subclasses read as they are at each build.

Real torchao tensors only (``Int8Tensor`` from ``quantize_`` on CPU).
"""

from __future__ import annotations

import torch
from torch import nn


def quantized(config: str = "Int8WeightOnlyConfig", layers: int = 3) -> nn.Sequential:
    """``layers`` Linear(64, 64) layers, every weight quantized by torchao's ``config``."""
    from torchao import quantization as q

    torch.manual_seed(0)
    model = nn.Sequential(*(nn.Linear(64, 64) for _ in range(layers)))
    q.quantize_(model, getattr(q, config)())
    return model


def test_a_class_replacing_its_flatten_between_builds_is_read_as_it_is_now(build, monkeypatch):
    """Regression: ``__tensor_flatten__`` was cached per class for the life of the process."""
    model = quantized()
    kind = type(model[0].weight)
    model[1].register_buffer("scale_alias", model[0].weight.scale)
    assert build(model).tie_groups() == [["0.weight", "1.scale_alias"]]
    monkeypatch.setattr(kind, "__tensor_flatten__", lambda _: (["qdata"], {}))
    assert build(model).tie_groups() == []
    monkeypatch.undo()
    assert build(model).tie_groups() == [["0.weight", "1.scale_alias"]]
