"""``tiegraph demo``: a tour of tiny models, wrapped and not, with a report and a picture for each."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from .._text import plural

if TYPE_CHECKING:
    from torch import nn

    from .._graph import TieGraph

__all__ = ["STOPS", "run_demo"]

TINY = {
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "vocab_size": 64,
}


def _llama(tie: bool = True) -> nn.Module:
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model("llama", tie_word_embeddings=tie, **TINY)
    model: nn.Module = AutoModelForCausalLM.from_config(config)
    return model


def tied_llama() -> nn.Module:
    """A tiny Llama with ``tie_word_embeddings=True``: ``lm_head`` shares the embedding's weight."""
    return _llama()


def lora_llama() -> nn.Module:
    """The tied Llama under PEFT LoRA on ``lm_head``: the tie moves to ``lm_head.base_layer``."""
    from peft import LoraConfig, get_peft_model

    return get_peft_model(_llama(), LoraConfig(r=4, target_modules=["lm_head"]))


def lora_tied_llama() -> nn.Module:
    """LoRA on ``lm_head`` with ``ensure_weight_tying=True``: adapters tied too, by transposed views."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=4, target_modules=["lm_head", "embed_tokens"], ensure_weight_tying=True)
    return get_peft_model(_llama(), config)


def modules_to_save_llama() -> nn.Module:
    """``modules_to_save=["lm_head"]``: the active copy of ``lm_head`` is a deepcopy, no longer tied."""
    from peft import LoraConfig, get_peft_model

    return get_peft_model(_llama(), LoraConfig(r=4, target_modules=["q_proj"], modules_to_save=["lm_head"]))


def compiled_wrapped_llama() -> nn.Module:
    """``torch.compile`` over a user's own wrapper module: canonical names drop both prefixes."""
    import torch

    class Wrapper(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

    return torch.compile(Wrapper(_llama()))  # type: ignore[return-value]


def t5() -> nn.Module:
    """A tiny T5: four names (``shared``, both ``embed_tokens``, ``lm_head``), one tensor."""
    from transformers import AutoConfig, AutoModelForSeq2SeqLM

    config = AutoConfig.for_model(
        "t5", d_model=16, d_ff=32, d_kv=8, num_layers=1, num_decoder_layers=1, num_heads=2, vocab_size=64
    )
    model: nn.Module = AutoModelForSeq2SeqLM.from_config(config)
    return model


def lying_llama() -> nn.Module:
    """A Llama that declares ``lm_head`` tied, whose ``lm_head.weight`` was replaced by a copy."""
    import torch

    model = _llama()
    head: Any = model.lm_head
    head.weight = torch.nn.Parameter(copy.deepcopy(head.weight.data))
    return model


#: (file stem, title, factory, the package the scene needs beyond transformers)
STOPS: list[tuple[str, str, Callable[[], nn.Module], str]] = [
    ("1-tied-llama", "tied Llama", tied_llama, ""),
    ("2-lora-llama", "tied Llama under PEFT LoRA on lm_head", lora_llama, "peft"),
    ("3-lora-tied-llama", "LoRA with ensure_weight_tying=True", lora_tied_llama, "peft"),
    ("4-modules-to-save", "PEFT modules_to_save=['lm_head'] (the untie)", modules_to_save_llama, "peft"),
    ("5-compiled-wrapper", "torch.compile over a user's wrapper", compiled_wrapped_llama, ""),
    ("6-t5", "T5: one tensor, four names", t5, ""),
    ("7-lying-llama", "a declaration that lies (lm_head replaced by a copy)", lying_llama, ""),
]


def run_demo(out: Path, stream: TextIO, report: Callable[[TieGraph], str]) -> list[Path]:
    """Build each stop, print its report to ``stream`` and write its picture into ``out``.

    Scenes whose package is not installed (PEFT) are skipped, with one line saying how to see them.

    Parameters
    ----------
    out
        Folder for the pictures (created).
    stream
        Where the reports go.
    report
        ``report(tg) -> str``: the text shown for each model.

    Returns
    -------
    list of Path
        The files written (DOT always; SVG when pygraphviz renders).
    """
    import importlib.util

    import torch

    import tiegraph

    from .quiet import stderr_silenced

    torch.manual_seed(0)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    picture_note = ""
    missing = {need for *_, need in STOPS if need and importlib.util.find_spec(need) is None}
    skipped = [n for n, (*_, need) in enumerate(STOPS, 1) if need in missing]
    if skipped:
        scenes = ", ".join(str(n) for n in skipped)
        stream.write(
            f"{plural(len(skipped), 'PEFT scene')} ({scenes}) skipped: PEFT is not installed; "
            "pip install peft shows them\n"
        )
    for n, (stem, title, factory, need) in enumerate(STOPS, 1):
        if need in missing:
            continue
        model = factory()
        tg = tiegraph.build_graph(model)
        doc = (factory.__doc__ or "").strip().replace("``", "")
        stream.write(f"\n== {n}/{len(STOPS)} {title}\n{doc}\n\n{report(tg)}\n")
        dot = tg.to_dot()
        path = out / f"{stem}.dot"
        path.write_text(dot)
        written.append(path)
        try:
            with stderr_silenced():
                svg = tg.to_svg()
        except Exception as exc:  # no renderer: DOT is enough
            picture_note = f"SVG not rendered ({type(exc).__name__}: {exc}); DOT files only"
            continue
        svg_path = out / f"{stem}.svg"
        svg_path.write_text(svg)
        written.append(svg_path)
    stream.write("\n")
    if picture_note:
        stream.write(f"note: {picture_note}\n")
    stream.write(f"pictures ({plural(len(written), 'file')}) in {out}\n")
    stream.flush()
    return written
