"""Assertions about ties for your own tests (pytest or unittest): the failure message says what changed.

>>> import torch, tiegraph.testing
>>> m = torch.nn.Module()
>>> m.embed, m.head = torch.nn.Embedding(8, 4), torch.nn.Linear(4, 8, bias=False)
>>> m.head.weight = m.embed.weight
>>> tiegraph.testing.assert_tied(m, "head", "embed")
>>> tiegraph.testing.assert_not_tied(m, "head", "embed")
Traceback (most recent call last):
...
AssertionError: head.weight shares memory with embed.weight
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from torch import nn

from ._acceptance import accept as apply_acceptances
from ._diff import as_graph, diff
from ._graph import view_of
from .errors import TiegraphError

if TYPE_CHECKING:
    from ._acceptance import Acceptance
    from ._build import InputEmbedding
    from ._graph import TieGraph

__all__ = [
    "assert_engines_load_trained_head",
    "assert_no_findings",
    "assert_not_tied",
    "assert_tied",
    "assert_ties_unchanged",
]


def _shared(model: TieGraph | nn.Module, a: str, b: str) -> tuple[list[tuple[str, str]], list[str]]:
    """Pairs (slot of a, slot of b) that share memory, and a phrase per slot of ``a`` saying what it shares.

    Slots are the ones a forward uses (the active ``modules_to_save`` copy, not the original); a full path
    into a copy the forward does not use asks about that copy, and is answered from memory.
    """
    view = view_of(as_graph(model, "model", None))
    side_a, side_b = view.resolve(a), view.resolve(b)
    if side_a and set(side_a) == set(side_b):
        names = ", ".join(sorted({view.slot_canonical(s) for s in side_a}))
        raise TiegraphError(
            f"{_name(a)} and {_name(b)} name the same slots ({names}): name two different modules or slots"
        )
    memory = not all(map(view.is_used, side_a + side_b))
    group = view.memory_group_of if memory else view.group_of
    slots = [s for s in range(view.num_slots) if memory or view.is_used(s)]
    only_a = [s for s in side_a if s not in set(side_b)]
    only_b = [s for s in side_b if s not in set(side_a)]
    by_group: dict[int, list[int]] = {}
    for s in only_b:
        by_group.setdefault(group(s), []).append(s)
    canon = view.slot_canonical
    pairs = sorted(
        {(canon(s), canon(t)) for s in only_a for t in by_group.get(group(s), ()) if canon(s) != canon(t)}
    )
    phrases = []
    for s in only_a:
        others = sorted({canon(t) for t in slots if group(t) == group(s) and canon(t) != canon(s)})
        phrases.append(f"{canon(s)} shares memory with {', '.join(others) if others else 'nothing'}")
    return pairs, sorted(set(phrases))


def _name(path: str) -> str:
    """A module path or slot name as a message shows it: the root module ``""`` by what it is."""
    return path if path else "the model root ('')"


def assert_tied(model: TieGraph | nn.Module, a: str, b: str) -> None:
    """Assert that some slot of ``a`` shares memory with some slot of ``b``.

    Parameters
    ----------
    model
        An ``nn.Module`` (its graph is built on the spot) or a :class:`tiegraph.TieGraph`.
    a, b
        Module paths or slot names, canonical (``"lm_head"``) or full (``"base_model.model.lm_head"``).

    Raises
    ------
    AssertionError
        If no slot of ``a`` shares memory with a slot of ``b``; the message says what each slot of ``a``
        shares memory with.
    PathNotFoundError
        If ``a`` or ``b`` names nothing in the model (a typo never passes).
    TiegraphError
        If ``a`` and ``b`` name the same slots (``assert_tied(m, "lm_head", "lm_head")`` asks nothing).

    Examples
    --------
    >>> import torch, tiegraph.testing
    >>> m = torch.nn.Module()
    >>> m.embed, m.head = torch.nn.Embedding(8, 4), torch.nn.Linear(4, 8, bias=False)
    >>> tiegraph.testing.assert_tied(m, "head", "embed")
    Traceback (most recent call last):
    ...
    AssertionError: head is not tied to embed: head.weight shares memory with nothing
    """
    __tracebackhide__ = True
    pairs, phrases = _shared(model, a, b)
    if not pairs:
        why = "; ".join(phrases) or f"{_name(a)} holds no tensor"
        raise AssertionError(f"{_name(a)} is not tied to {_name(b)}: {why}")


def assert_not_tied(model: TieGraph | nn.Module, a: str, b: str) -> None:
    """Assert that no slot of ``a`` shares memory with a slot of ``b`` (see :func:`assert_tied`).

    Raises
    ------
    AssertionError
        If some slot of ``a`` shares memory with a slot of ``b``; the message names every such pair.
    """
    __tracebackhide__ = True
    pairs, _ = _shared(model, a, b)
    if pairs:
        raise AssertionError("; ".join(f"{x} shares memory with {y}" for x, y in pairs))


def assert_no_findings(
    model: TieGraph | nn.Module,
    *,
    accept: Iterable[Acceptance | str] = (),
    input_embedding: InputEmbedding = None,
) -> None:
    """Assert that the audit finds no error or warning you did not accept (what ``--strict`` checks).

    Parameters
    ----------
    model
        An ``nn.Module`` (its graph is built on the spot) or a :class:`tiegraph.TieGraph`.
    accept
        ``"KIND"`` or ``"KIND:PATH"`` acceptances (``PATH`` a slot, a module it lies under, or a glob such
        as ``*.weight``); an acceptance that matches no finding fails too (it is stale and could hide a new
        finding later).
    input_embedding
        Passed to :func:`tiegraph.build_graph` when ``model`` is a module.

    Raises
    ------
    AssertionError
        Naming each failing finding (``info`` findings never fail).

    Examples
    --------
    >>> import torch, tiegraph.testing
    >>> class Tiny(torch.nn.Module):
    ...     _tied_weights_keys = {"head.weight": "embed.weight"}
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.embed = torch.nn.Embedding(8, 4)
    ...         self.head = torch.nn.Linear(4, 8, bias=False)
    >>> tiegraph.testing.assert_no_findings(Tiny(), accept=["declared-not-tied:head.weight"])
    >>> tiegraph.testing.assert_no_findings(Tiny())
    Traceback (most recent call last):
    ...
    AssertionError: [error] declared-not-tied: head.weight is declared tied to embed.weight (by Tiny) ...
    """
    __tracebackhide__ = True
    tg = as_graph(model, "model", input_embedding)
    failing = [f for f in apply_acceptances(tg.audit(), accept) if f.fails]
    if failing:
        raise AssertionError("\n".join(f"[{f.severity}] {f}" for f in failing))


def assert_ties_unchanged(
    before: TieGraph | nn.Module,
    after: TieGraph | nn.Module,
    *,
    input_embedding: InputEmbedding = None,
    accept: Iterable[Acceptance | str] = (),
) -> None:
    """Assert that nothing about the ties changed from ``before`` to ``after`` (see :func:`tiegraph.diff`).

    Parameters
    ----------
    before, after
        TieGraphs (built, or reloaded from JSON) or modules (built on the spot; a step that changes a model
        in place needs ``before = tiegraph.build_graph(model)`` taken before it).
    input_embedding
        Passed to :func:`tiegraph.build_graph` for a side given as a module.
    accept
        ``"KIND[:PATH]"`` acceptances (as for :func:`assert_no_findings`): a finding they match, added or
        resolved, is no change; an acceptance that matches no added or resolved finding fails.

    Raises
    ------
    AssertionError
        If ``tiegraph.diff(before, after)`` is true once accepted findings are set aside; the message is
        the diff.

    Examples
    --------
    >>> import torch, tiegraph, tiegraph.testing
    >>> m = torch.nn.Module()
    >>> m.embed, m.head = torch.nn.Embedding(8, 4), torch.nn.Linear(4, 8, bias=False)
    >>> m.head.weight = m.embed.weight
    >>> before = tiegraph.build_graph(m, input_embedding="embed")
    >>> tiegraph.testing.assert_ties_unchanged(before, torch.compile(m), input_embedding="embed")
    >>> m.head.weight = torch.nn.Parameter(m.embed.weight.detach().clone())
    >>> tiegraph.testing.assert_ties_unchanged(before, m, input_embedding="embed")
    Traceback (most recent call last):
    ...
    AssertionError: head.weight no longer shares memory with embed.weight
    tied to the input embedding embed: head before, nothing after
    resolved finding tied-not-declared-plain-module: embed.weight, head.weight
    """
    __tracebackhide__ = True
    d = diff(before, after, input_embedding=input_embedding)
    acceptances = list(accept)
    if acceptances:
        marked = apply_acceptances([*d.findings_added, *d.findings_resolved], acceptances)
        unmatched = [f for f in marked if f.kind == "unmatched-acceptance"]
        kept = {(f.kind, f.paths) for f in marked if not f.accepted}
        d = dataclasses.replace(
            d,
            findings_added=[f for f in d.findings_added if (f.kind, f.paths) in kept],
            findings_resolved=[f for f in d.findings_resolved if (f.kind, f.paths) in kept],
        )
        if unmatched:
            raise AssertionError("\n".join([*d.lines(), *(f.message for f in unmatched)]))
    if d:
        raise AssertionError(str(d))


def assert_engines_load_trained_head(
    model_or_folder: nn.Module | str | os.PathLike[str],
    engines: Sequence[str] | None = None,
    *,
    check_values: bool = True,
) -> None:
    """Assert that every engine you serve with loads the head you trained (see :mod:`tiegraph.engines`).

    Parameters
    ----------
    model_or_folder
        A transformers model in memory (the folder ``save_pretrained`` will write for it is predicted), a
        folder it wrote, or a hub id in the local hub cache.
    engines
        Engine ids (:data:`tiegraph.engines.ENGINE_IDS`), default every one.
    check_values
        Compare the saved head with the embedding by value where only the values decide (reads those two
        tensors); on by default, so the assertion never passes or fails on a guess.

    Raises
    ------
    AssertionError
        If some engine's head after load is not the head the folder means (a trained head dropped, a random
        or uninitialised head, a load error, the embedding replaced, companions dropped) or cannot be told;
        the message has one line per such engine, with its rule version and verdict.

    Examples
    --------
    >>> import torch, tiegraph.testing
    >>> from transformers import AutoConfig, AutoModelForCausalLM
    >>> config = AutoConfig.for_model("llama", hidden_size=16, intermediate_size=32, num_hidden_layers=1,
    ...     num_attention_heads=2, vocab_size=32, tie_word_embeddings=True)
    >>> model = AutoModelForCausalLM.from_config(config)
    >>> tiegraph.testing.assert_engines_load_trained_head(model, engines=["mlx-lm", "transformers-5"])
    >>> model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach() + 1)  # trained apart
    >>> tiegraph.testing.assert_engines_load_trained_head(model, engines=["mlx-lm", "transformers-5"])
    Traceback (most recent call last):
    ...
    AssertionError: 1 of 2 engines will not load the trained head:
      mlx-lm (mlx-lm 0.32.2): embedding instead of the folder head: ...
    """
    __tracebackhide__ = True
    from .engines import outcomes

    result = outcomes(model_or_folder, engines=engines, check_values=check_values)
    bad = [o for o in result if o.finding_kind is not None or o.head == "unknown"]
    if bad:
        lines = [f"  {o.engine} ({o.rule_version}): {o.verdict}" for o in bad]
        raise AssertionError(
            f"{len(bad)} of {len(result)} engines will not load the trained head:\n" + "\n".join(lines)
        )
