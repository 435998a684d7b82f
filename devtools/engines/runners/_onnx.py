"""Read the head and the embedding out of an exported ONNX graph (optimum, the ONNX Runtime GenAI builder).

The head is the vocabulary-sized weight of the last MatMul/Gemm before the ``logits`` output (transposed
back when stored as hidden x vocab); the embedding is the data input of the ``Gather`` reading ``input_ids``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _const(graph: Any, name: str, producers: dict[str, Any]) -> np.ndarray | None:
    """The value behind ``name``: an initializer, possibly through Transpose/Cast/Identity nodes."""
    from onnx import numpy_helper

    inits = {i.name: i for i in graph.initializer}
    if name in inits:
        value: np.ndarray = numpy_helper.to_array(inits[name]).astype(np.float32)
        return value
    node = producers.get(name)
    if node is None or node.op_type not in ("Transpose", "Cast", "Identity", "DequantizeLinear"):
        return None
    inner = _const(graph, node.input[0], producers)
    if inner is not None and node.op_type == "Transpose":
        transposed: np.ndarray = inner.T
        return transposed
    return inner


def _producers(graph: Any) -> dict[str, Any]:
    return {out: node for node in graph.node for out in node.output}


def head_and_embedding(
    model_path: Path, vocab: int
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """The (vocab x hidden) head, the embedding and a bias added to the logits (``None`` where not found)."""
    import onnx

    graph = onnx.load(str(model_path)).graph
    producers = _producers(graph)
    emb = None
    for node in graph.node:
        if node.op_type == "Gather" and emb is None:
            value = _const(graph, node.input[0], producers)
            if value is not None and value.ndim == 2 and value.shape[0] >= vocab:
                emb = value
    head, bias, seen, todo = None, None, set(), [o.name for o in graph.output if "logits" in o.name]
    while todo and head is None:
        name = todo.pop()
        node = producers.get(name)
        if node is None or name in seen:
            continue
        seen.add(name)
        if node.op_type == "Add" and bias is None:  # BART's final_logits_bias, added to the head's logits
            for arg in node.input:
                value = _const(graph, arg, producers)
                if value is not None and value.size >= vocab:
                    bias = value.reshape(-1)
        if node.op_type in ("MatMul", "Gemm", "MatMulNBits"):
            for arg in node.input[1:2]:
                value = _const(graph, arg, producers)
                if value is not None and value.ndim == 2:
                    transb = any(a.name == "transB" and a.i for a in node.attribute)
                    head = value if (transb or value.shape[0] >= vocab) else value.T
        todo += list(node.input)
    return head, emb, bias
