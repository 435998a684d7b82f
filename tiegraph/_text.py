"""Small wording helpers shared by the report, the pictures and the command line."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["did_you_mean", "nearest", "not_found", "one_line", "plural"]


def plural(n: int, word: str, words: str | None = None) -> str:
    """``n`` and the word, plural unless ``n`` is 1.

    Examples
    --------
    >>> plural(1, "slot"), plural(2, "slot"), plural(0, "tie group"), plural(3, "copy", "copies")
    ('1 slot', '2 slots', '0 tie groups', '3 copies')
    """
    return f"{n} {word if n == 1 else words or word + 's'}"


def nearest(word: str, choices: Iterable[str], n: int = 3, *, always: bool = False) -> list[str]:
    """The choices closest to ``word``: by spelling, then by the same last dotted part.

    With ``always``, the closest ones whatever the distance (so a message can always name some).

    Examples
    --------
    >>> nearest("lamma", ["llama", "gemma", "t5"])
    ['llama', 'gemma']
    >>> nearest("lm_head.wieght", ["lm_head.weight", "model.embed_tokens.weight"])
    ['lm_head.weight']
    >>> nearest("lm_head.bias", ["lm_head.weight", "decoder.bias", "embed.weight"])
    ['lm_head.weight', 'decoder.bias']
    """
    pool = sorted({c for c in choices if c})
    close = difflib.get_close_matches(word, pool, n=n, cutoff=0.6)
    if "." in word:
        tail = word.rsplit(".", 1)[-1]
        close += [c for c in pool if c.rsplit(".", 1)[-1] == tail and c not in close][: n - len(close)]
    if not close and always:
        close = difflib.get_close_matches(word, pool, n=n, cutoff=0.0)
    return close


def did_you_mean(word: str, choices: Iterable[str], n: int = 3) -> str:
    """``"; did you mean a, b?"`` for the choices close to ``word``, or ``""``.

    Examples
    --------
    >>> "unknown model type 'lamma'" + did_you_mean("lamma", ["llama", "t5"])
    "unknown model type 'lamma'; did you mean llama?"
    """
    close = nearest(word, choices, n)
    return f"; did you mean {', '.join(close)}?" if close else ""


def not_found(message: str, name: str, *choices: Iterable[str]) -> str:
    """The message, followed by the names nearest to ``name`` (always some, when there are names)."""
    close = nearest(name, [c for names in choices for c in names], always=True)
    if close:
        return f"{message}; nearest: {', '.join(repr(c) for c in close)}"
    return f"{message}; the model has no named modules or slots"


def one_line(exc: BaseException, limit: int | None = 300) -> str:
    r"""An exception's message on one line (whitespace runs collapsed), at most ``limit`` characters.

    The one helper that turns an exception into a line: the library's messages and the command line's
    (``limit=None``: the whole message) both use it.

    Examples
    --------
    >>> one_line(ValueError("bad\n  value")), one_line(KeyError())
    ('bad value', 'KeyError')
    """
    text = " ".join(str(exc).split())
    text = text if text else type(exc).__name__
    return text if limit is None or len(text) <= limit else text[: limit - 3] + "..."
