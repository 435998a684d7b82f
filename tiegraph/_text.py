"""Small wording helpers shared by the report, the pictures and the command line."""

from __future__ import annotations

__all__ = ["plural"]


def plural(n: int, word: str, words: str | None = None) -> str:
    """``n`` and the word, plural unless ``n`` is 1.

    Examples
    --------
    >>> plural(1, "slot"), plural(2, "slot"), plural(0, "tie group"), plural(3, "copy", "copies")
    ('1 slot', '2 slots', '0 tie groups', '3 copies')
    """
    return f"{n} {word if n == 1 else words or word + 's'}"
