"""Output formats by file suffix: the one table :func:`tiegraph.export.write` and the command line read.

It imports nothing, so the command line reads it without loading torch.
"""

from __future__ import annotations

__all__ = ["FORMAT_OF_SUFFIX"]

#: The output format each file suffix stands for (lower case). :func:`tiegraph.export.write` writes every
#: one but text, the command line's report.
FORMAT_OF_SUFFIX = {
    ".dot": "dot",
    ".gv": "dot",
    ".svg": "svg",
    ".png": "png",
    ".pdf": "pdf",
    ".json": "json",
    ".txt": "text",
}
