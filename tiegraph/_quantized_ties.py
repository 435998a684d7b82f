"""The advice of ``untied-by-quantization``: what re-tying does, and how to keep each quantized end out.

What :meth:`transformers.PreTrainedModel.tie_weights` does to a pair quantized apart depends on which end
is quantized and on the library; measured with the pinned torch, transformers, torchao and bitsandbytes:

- only the target (the head) quantized: the unquantized source is put into the target. A torchao head
  drops its quantization; quanto's ``QLinear`` quantizes the float weight at every forward; a bitsandbytes
  layer holds a float weight its forward fails on; hqq's ``HQQLinear`` gets a weight it never computes with
  (it computes with ``W_q``); torch.ao's packed layers raise (``weight`` is a method there);
- a quantized source: its quantized tensor is put into the target. A torchao tensor computes in the layer
  it is put in (a ``torch.nn.Linear`` head), so the pair is one quantized weight again; a bitsandbytes weight
  computes only in a layer of its own format (an ``Embedding4bit`` weight in a ``Linear4bit`` head, not in
  a ``Linear8bitLt`` or a ``torch.nn.Linear``: the forward fails); other formats are not claimed.

How to leave a module out is said for the library that quantized it, read from the quantization label.
"""

from __future__ import annotations

__all__ = ["End", "keep_out", "retie"]

#: (module name, quantization label or None, module class name) for each end of a declared pair
End = tuple[str, str | None, str]


#: What ``model.tie_weights()`` does when only the target is quantized, by the library that quantized it
#: (fields: ``source``, ``module``, ``cls``); measured with the pinned versions.
_UNQUANTIZED_SOURCE = {
    "torchao": "is not the fix here: it would put the unquantized {source} back into {module} and drop its "
    "quantization",
    "quanto": "ties them again: it puts the unquantized {source} into {module}, whose {cls} then "
    "quantizes it at every forward instead of holding a frozen copy",
    "bitsandbytes": "is not the fix here: it would put the unquantized {source} into {module}, a {cls} that "
    "computes only with its own quantized format (the forward fails)",
    "hqq": "is not the fix here: it would give {module} a weight it does not compute with ({cls} computes "
    "with W_q), a tie in name only",
    "torch.ao": "is not the fix here: it raises (KeyError: {module} has a weight attribute already, the "
    "method that unpacks its packed weight)",
}


def retie(
    source: str, source_q: str | None, target_module: str, target_q: str | None, target_cls: str
) -> str:
    """What ``model.tie_weights()`` would do to the pair, as the clause the finding's message says.

    Examples
    --------
    >>> retie("embed.weight", None, "head", "torchao.Int8Tensor", "Linear")[:36]
    'model.tie_weights() is not the fix h'
    >>> retie("embed.weight", "torchao.Int8Tensor", "head", None, "Linear")[:44]
    'model.tie_weights() ties them again: it puts'
    """
    if not source_q:
        said = _UNQUANTIZED_SOURCE.get(_library(target_q or ""), _UNQUANTIZED_SOURCE["torchao"])
        return "model.tie_weights() " + said.format(source=source, module=target_module, cls=target_cls)
    moved = f"the quantized {source} ({source_q}) into {target_module}"
    if target_q:
        moved += f" in place of its own {target_q} copy"
    if source_q.startswith("torchao."):
        return (
            f"model.tie_weights() ties them again: it puts {moved}, which computes with it (a torchao "
            "tensor computes in the layer it is put in)"
        )
    if source_q.startswith("bitsandbytes.") and source_q == target_q:
        return (
            f"model.tie_weights() ties them again: it puts {moved}, and {target_module} ({target_cls}) "
            "computes with that format"
        )
    if source_q.startswith(("bitsandbytes.", "hqq", "torch.")):
        return (
            f"model.tie_weights() is not the fix here: it would put {moved}, a {target_cls} that cannot "
            "compute with that format (the forward fails)"
        )
    return (
        f"model.tie_weights() would put {moved}; check that {target_module} ({target_cls}) computes with "
        "that format before relying on it"
    )


def keep_out(ends: list[End]) -> str:
    """How to leave the quantized ends of a pair out of quantization, for the library of each one.

    torchao's filter is written for the whole pair: a filter that quantized the embedding alone would
    otherwise quantize the tied head once the pair is tied again (``torch.nn.Linear`` layers are what
    ``quantize_`` takes by default, so the embedding needs no name of its own).

    Examples
    --------
    >>> keep_out([("lm_head", None, "Linear"), ("embed", "torchao.Int8Tensor", "Embedding")])[-52:]
    "isinstance(m, torch.nn.Linear) and fqn != 'lm_head')"
    >>> keep_out([("lm_head", "quanto.qint8", "QLinear"), ("embed", None, "Embedding")])
    "quanto: quantize(model, weights=..., exclude=['lm_head'])"
    """
    by_library: dict[str, list[End]] = {}
    for end in ends:
        if end[1]:
            by_library.setdefault(_library(end[1]), []).append(end)
    parts = []
    for library, quantized in by_library.items():
        names = [name for name, _, _ in quantized]
        if library == "torchao":
            linear = [name for name, _, cls in ends if "Embedding" not in cls]
            parts.append(
                "torchao: quantize_(model, config, filter_fn=lambda m, fqn: isinstance(m, torch.nn.Linear)"
                f"{_excluding(linear)})"
            )
        elif library == "bitsandbytes":
            parts.append(_bitsandbytes(quantized))
        elif library == "quanto":
            parts.append(f"quanto: quantize(model, weights=..., exclude={names!r})")
        elif library == "hqq":
            parts.append(f"hqq: HqqConfig(..., skip_modules={names!r})")
        elif library == "torch.ao":
            spec = ", ".join(f"{name!r}: None" for name in names)
            parts.append(
                "torch.ao: quantize_dynamic(model, {torch.nn.Linear: "
                f"torch.ao.quantization.default_dynamic_qconfig, {spec}}})"
            )
        else:
            parts.append(f"keep {' and '.join(names)} in a floating-point dtype")
    return "; ".join(parts)


def _library(label: str) -> str:
    if label.startswith("torch.ao."):
        return "torch.ao"
    head = label.partition(".")[0]
    return "hqq" if head.startswith("hqq") else head


def _excluding(names: list[str]) -> str:
    if not names:
        return ""
    if len(names) == 1:
        return f" and fqn != {names[0]!r}"
    return f" and fqn not in {names!r}"


def _bitsandbytes(quantized: list[End]) -> str:
    layers = [name for name, _, cls in quantized if "Embedding" not in cls]
    embeddings = [name for name, _, cls in quantized if "Embedding" in cls]
    said = []
    if layers:
        said.append(f"BitsAndBytesConfig(llm_int8_skip_modules={layers!r})")
    if embeddings:
        said.append(f"keep {' and '.join(embeddings)} a torch.nn.Embedding (not Embedding4bit/Embedding8bit)")
    return "bitsandbytes: " + " and ".join(said)
