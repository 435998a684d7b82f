"""Quantization labels: the format of a slot's tensor, and the layer classes that expect a quantized weight.

:func:`quantization` names the format (``"torchao.Int8Tensor"``, ``"bitsandbytes.nf4"``, ``"quanto.qint8"``,
``"hqq.4bit"``, ``"torch.float8_e4m3fn"``) or None for a plain float tensor; the build step
:mod:`tiegraph._served` and the slow path (:mod:`tiegraph._expand`) record it per slot.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

__all__ = ["is_packed_layer_type", "is_quantized_layer_type", "packed_quantization", "quantization"]

_PLAIN = (torch.Tensor, nn.Parameter)

# module classes whose weight is expected to be quantized: (top-level package, class names)
_QUANTIZED_LAYERS: dict[str, frozenset[str]] = {
    "bitsandbytes": frozenset(
        {"Linear4bit", "LinearFP4", "LinearNF4", "Linear8bitLt", "Embedding4bit", "Embedding8bit"}
    ),
    "hqq": frozenset({"HQQLinear"}),
}


def quantization(tensor: torch.Tensor, module: nn.Module | None = None, attr: str = "") -> str | None:
    """The quantization format of a tensor sitting at ``module.attr``, or None for a plain float tensor.

    Examples
    --------
    >>> import torch
    >>> quantization(torch.zeros(2)) is None, quantization(torch.zeros(2, dtype=torch.float8_e4m3fn))
    (True, 'torch.float8_e4m3fn')
    """
    kind = type(tensor)
    package = kind.__module__.partition(".")[0]
    if kind not in _PLAIN:
        if package == "torchao":  # the class is the format (Int8Tensor, Float8Tensor, ...)
            return f"torchao.{kind.__name__}"
        if package == "optimum" and kind.__module__.startswith("optimum.quanto"):
            qtype = getattr(tensor, "qtype", None)
            name = getattr(qtype, "name", None)
            return f"quanto.{name}" if name else f"quanto.{kind.__name__}"
        if package == "bitsandbytes":
            if kind.__name__ == "Params4bit":
                quantized = getattr(tensor, "bnb_quantized", False)
                return f"bitsandbytes.{getattr(tensor, 'quant_type', '4bit')}" if quantized else None
            if kind.__name__ == "Int8Params":
                return "bitsandbytes.int8" if tensor.dtype == torch.int8 else None
    if module is not None and _package(module) == "hqq" and attr == "W_q":
        meta = getattr(module, "meta", None)
        nbits = meta.get("nbits") if isinstance(meta, dict) else None
        return f"hqq.{nbits}bit" if nbits else "hqq"
    dtype = tensor.dtype
    if dtype.is_floating_point and dtype.itemsize == 1:
        return str(dtype)
    return None


def _package(module: nn.Module) -> str:
    return type(module).__module__.partition(".")[0]


@functools.lru_cache(maxsize=4096)
def is_packed_layer_type(kind: type) -> bool:
    """A torch.ao quantized layer class (``quantize_dynamic``, ``convert``): its weight is packed, no slot."""
    return kind.__module__.startswith(_PACKED) and not kind.__name__.endswith("PackedParams")


_PACKED = ("torch.ao.nn.quantized.", "torch.nn.quantized.")


def packed_quantization(module: nn.Module) -> str | None:
    """The label of a torch.ao quantized layer's packed weight: ``torch.ao.dynamic.qint8``, ...; else None.

    Examples
    --------
    >>> import torch
    >>> layer = torch.ao.nn.quantized.dynamic.Linear(4, 4)
    >>> packed_quantization(layer), packed_quantization(torch.nn.Linear(4, 4))
    ('torch.ao.dynamic.qint8', None)
    """
    kind: type = type(module)
    if not is_packed_layer_type(kind):
        return None
    packed = next((c for c in module.children() if type(c).__name__.endswith("PackedParams")), None)
    dtype = getattr(packed, "dtype", None)
    if not isinstance(dtype, torch.dtype):
        return None
    flavour = "dynamic" if ".dynamic." in kind.__module__ else "quantized"
    return f"torch.ao.{flavour}.{str(dtype).rpartition('.')[2]}"


@functools.lru_cache(maxsize=4096)
def is_quantized_layer_type(kind: type) -> bool:
    """A layer class that computes with a quantized weight (bitsandbytes ``Linear4bit``, hqq, ...).

    Such a layer holding a plain float weight is broken: forward expects the quantized format. Asked once
    per class by the builder.
    """
    names = _QUANTIZED_LAYERS.get(kind.__module__.partition(".")[0])
    return names is not None and any(k.__name__ in names for k in kind.__mro__)
