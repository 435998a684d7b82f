"""Wrap a command-line model as asked: one PEFT LoRA config (``--peft``), then ``torch.compile``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from .._text import one_line
from .specs import UsageError

if TYPE_CHECKING:
    from torch import nn

__all__ = ["PEFT_KINDS", "parse_peft", "wrap"]

PEFT_KINDS = ("lora", "lora-tied", "modules-to-save")


def parse_peft(items: Sequence[str]) -> dict[str, list[str]]:
    """Parse ``--peft KIND:MODULE[,MODULE...]`` options into module lists per kind.

    Examples
    --------
    >>> parse_peft(["lora:lm_head,q_proj", "modules-to-save:embed_tokens"])
    {'lora': ['lm_head', 'q_proj'], 'lora-tied': [], 'modules-to-save': ['embed_tokens']}
    """
    out: dict[str, list[str]] = {k: [] for k in PEFT_KINDS}
    for item in items:
        kind, sep, modules = item.partition(":")
        names = [m.strip() for m in modules.split(",") if m.strip()]
        if not sep or kind not in out or not names:
            raise UsageError(
                f"bad --peft {item!r}: expected KIND:MODULE[,MODULE...], KIND one of {', '.join(PEFT_KINDS)}"
            )
        out[kind].extend(n for n in names if n not in out[kind])
    return out


def wrap(model: nn.Module, peft: dict[str, list[str]] | None, compile: bool) -> tuple[nn.Module, list[str]]:
    """Wrap with one PEFT LoRA config (all ``--peft`` options merged), then ``torch.compile``.

    Returns the wrapped model and one phrase per wrapper applied.
    """
    done: list[str] = []
    if peft and any(peft.values()):
        try:
            from peft import LoraConfig, get_peft_model
            from peft.utils.constants import DUMMY_TARGET_MODULES
        except ImportError:
            raise UsageError("--peft needs peft: pip install peft") from None
        targets = peft["lora"] + [m for m in peft["lora-tied"] if m not in peft["lora"]]
        config = LoraConfig(
            r=8,
            target_modules=targets or DUMMY_TARGET_MODULES,
            modules_to_save=list(peft["modules-to-save"]) or None,  # peft edits the list it is given
            ensure_weight_tying=bool(peft["lora-tied"]),
        )
        try:
            model = get_peft_model(model, config)
        except Exception as exc:
            raise UsageError(f"PEFT could not wrap the model: {one_line(exc)}") from None
        for kind in PEFT_KINDS:
            if peft[kind]:
                done.append(f"PEFT {kind} on {', '.join(peft[kind])}")
    if compile:
        import torch

        model = torch.compile(model)  # type: ignore[assignment]
        done.append("torch.compile")
    return model, done
