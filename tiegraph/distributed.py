"""Ties under ``torch.distributed``: whether all ranks see the same tie groups.

:func:`tiegraph.build_graph` already sees through DDP, FSDP1, FSDP2 ``fully_shard`` (a DTensor slot is read
through its local shard, never gathered) and activation-checkpoint wrappers, so every rank can build its
own graph. :func:`check_ranks_agree` then exchanges the small answers (canonical tie groups, tied targets,
input embedding) between the ranks and gives every rank the same list of :class:`Disagreement`.

Examples
--------
What one rank contributes (no process group needed for this part), and how two ranks compare:

>>> import torch, tiegraph.distributed
>>> m = torch.nn.Module()
>>> m.embed, m.head = torch.nn.Embedding(8, 4), torch.nn.Linear(4, 8, bias=False)
>>> m.head.weight = m.embed.weight
>>> tied = tiegraph.distributed.rank_summary(m, input_embedding="embed")
>>> tied["tie_groups"]
[['embed.weight', 'head.weight']]
>>> [d.kind for d in tiegraph.distributed.compare([dict(tied, rank=0), dict(tied, rank=1)])]
[]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import nn

from ._build import InputEmbedding, build_graph
from .errors import ConfigurationError, NoInputEmbeddingError, TiegraphError
from .sharding._replicas import ReplicaMismatch, check_tied_replicas

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup

__all__ = [
    "KINDS",
    "Disagreement",
    "ReplicaMismatch",
    "check_ranks_agree",
    "check_tied_replicas",
    "compare",
    "rank_summary",
]

#: Disagreement kinds, in the order they are reported.
KINDS = ("error", "input-embedding", "tie-group", "tied-target")


@dataclass(frozen=True)
class Disagreement:
    """One answer that differs between ranks.

    Attributes
    ----------
    kind
        One of :data:`KINDS`: ``error`` (a rank could not build its graph), ``input-embedding``,
        ``tie-group`` (a group of canonical slot names some ranks have and others do not), ``tied-target``
        (a module some ranks see tied to the input embedding and others do not).
    value
        The group (tuple of canonical slot names), the module path, the input embedding path, or the error.
    ranks
        The (global) ranks that have ``value``, sorted.
    missing
        The ranks that do not, sorted.
    message
        One sentence saying what differs and what to do.

    Examples
    --------
    >>> d = Disagreement("tied-target", "lm_head", (0,), (1,), "...")
    >>> d.kind, d.ranks, d.missing
    ('tied-target', (0,), (1,))
    """

    kind: str
    value: Any
    ranks: tuple[int, ...]
    missing: tuple[int, ...]
    message: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"


def rank_summary(model: nn.Module, *, input_embedding: InputEmbedding = None) -> dict[str, Any]:
    """What one rank sees: the small, picklable answers :func:`check_ranks_agree` exchanges.

    Parameters
    ----------
    model
        The model as this rank holds it (wrapped or not).
    input_embedding
        Passed to :func:`tiegraph.build_graph`.

    Returns
    -------
    dict
        ``input_embedding`` (canonical path or None), ``tie_groups`` (canonical, sorted lists),
        ``tied`` (canonical tied targets, or None when there is no input embedding) and ``error`` (None, or
        the error that stopped the build, as text).

    Examples
    --------
    >>> import torch
    >>> m = torch.nn.Module()
    >>> m.embed, m.head = torch.nn.Embedding(8, 4), torch.nn.Linear(4, 8, bias=False)
    >>> m.head.weight = m.embed.weight
    >>> summary = rank_summary(m, input_embedding="embed")
    >>> summary["tie_groups"], summary["tied"], summary["error"]
    ([['embed.weight', 'head.weight']], ['head'], None)
    """
    summary: dict[str, Any] = {"input_embedding": None, "tie_groups": [], "tied": None, "error": None}
    try:
        tg = build_graph(model, input_embedding=input_embedding)
        summary["input_embedding"] = tg.input_embedding()
        summary["tie_groups"] = tg.tie_groups()
        summary["slots"] = tg.component("")  # every slot, canonical: what this rank can judge
        try:
            summary["tied"] = tg.tied_to_input_embedding()
        except NoInputEmbeddingError:
            summary["tied"] = None
    except Exception as error:  # reported to every rank instead of leaving the others waiting
        summary["error"] = f"{type(error).__name__}: {error}"
    return summary


def check_ranks_agree(
    model: nn.Module, group: ProcessGroup | None = None, *, input_embedding: InputEmbedding = None
) -> list[Disagreement]:
    """Build the tie graph on every rank and list where the ranks disagree (the same list on every rank).

    Call it on every rank of ``group`` (it is a collective). Each rank builds its graph from its own model
    (no parameter is gathered or copied; a DTensor is read through its local shard), then the ranks
    exchange their canonical tie groups, tied targets and input embedding with
    ``torch.distributed.all_gather_object``.

    Parameters
    ----------
    model
        This rank's model, wrapped or not (DDP, FSDP1, FSDP2 ``fully_shard``, activation checkpointing, ...).
    group
        The process group to compare within; None for the default group.
    input_embedding
        Passed to :func:`tiegraph.build_graph` on every rank.

    Returns
    -------
    list of Disagreement
        Sorted by kind (:data:`KINDS` order), then value. Empty when every rank sees the same ties.

    Raises
    ------
    TypeError
        If ``model`` is not an ``nn.Module`` (raised before any communication, on the rank that passed it).
    TiegraphError
        If torch.distributed is not available or not initialised, or this process is not in ``group``.

    Notes
    -----
    One graph build per rank plus one ``all_gather_object`` of a few hundred bytes. A rank whose build
    fails still takes part, so the others never wait forever: its error comes back as an ``error``
    disagreement on every rank. With NCCL, ``all_gather_object`` uses the current CUDA device: call
    ``torch.cuda.set_device(local_rank)`` first.

    Examples
    --------
    Run under ``torchrun --nproc-per-node 2`` (see ``examples/ranks_agree.py``)::

        dist.init_process_group("gloo")
        model = fully_shard(model)
        for d in tiegraph.distributed.check_ranks_agree(model):
            print(d)
    """
    if not isinstance(model, nn.Module):
        kind = type(model)
        raise TypeError(
            f"check_ranks_agree expects a torch.nn.Module, got {kind.__module__}.{kind.__qualname__}"
        )
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        raise TiegraphError(
            "check_ranks_agree needs torch.distributed: call torch.distributed.init_process_group(...) on "
            "every rank first (or pass group=)"
        )
    if dist.get_rank(group) < 0:
        raise TiegraphError(
            f"this process (global rank {dist.get_rank()}) is not a member of the group passed to "
            "check_ranks_agree; call it only on the group's ranks, or pass group=None for the default group"
        )
    summary = rank_summary(model, input_embedding=input_embedding)
    summary["rank"] = dist.get_rank()
    gathered: list[Any] = [None] * dist.get_world_size(group)
    dist.all_gather_object(gathered, summary, group=group)
    return compare(gathered)


def compare(summaries: list[dict[str, Any]]) -> list[Disagreement]:
    """Disagreements between rank summaries (as made by :func:`rank_summary`, with a ``rank`` key).

    Pure and deterministic: every rank calls it on the same gathered list and gets the same answer.

    Raises
    ------
    ConfigurationError
        If a summary of a rank that built its graph lacks a key :func:`rank_summary` writes.

    Examples
    --------
    >>> tied = {"rank": 0, "input_embedding": "embed", "tie_groups": [["embed.weight", "head.weight"]],
    ...         "tied": ["head"], "error": None}
    >>> untied = dict(tied, rank=1, tie_groups=[], tied=[])
    >>> for d in compare([tied, untied]):
    ...     print(d)
    tie-group: tie group embed.weight, head.weight is on rank 0 but not on rank 1; ...
    tied-target: head is tied to the input embedding on rank 0 but not on rank 1; ...
    >>> compare([tied, dict(tied, rank=1)])
    []
    """
    ranks = [int(s.get("rank", i)) for i, s in enumerate(summaries)]
    found: list[Disagreement] = []
    errors = {r: s["error"] for r, s in zip(ranks, summaries, strict=True) if s.get("error")}
    for rank, error in sorted(errors.items()):
        others = tuple(r for r in ranks if r != rank)
        found.append(
            Disagreement(
                "error",
                error,
                (rank,),
                others,
                f"rank {rank} could not build its tie graph ({error}); fix that rank's model or arguments "
                "and check again",
            )
        )
    if errors:
        return found
    _check_keys(ranks, summaries)
    # a pipeline stage without the input embedding (None, with its slot list) is no disagreement
    embeddings = {
        r: s["input_embedding"]
        for r, s in zip(ranks, summaries, strict=True)
        if s["input_embedding"] is not None or s.get("slots") is None
    }
    for value in sorted(set(embeddings.values()), key=repr):
        have = tuple(sorted(r for r, v in embeddings.items() if v == value))
        if len(have) < len(embeddings):
            missing = tuple(sorted(set(embeddings) - set(have)))
            found.append(
                Disagreement(
                    "input-embedding",
                    value,
                    have,
                    missing,
                    f"the input embedding is {value!r} on {_ranks(have)} but not on {_ranks(missing)}; "
                    "build every rank's model the same way (or pass input_embedding=)",
                )
            )
    found += _set_disagreements(
        "tie-group",
        ranks,
        [{tuple(g) for g in s["tie_groups"]} for s in summaries],
        lambda g: f"tie group {', '.join(g)} is",
        summaries,
    )
    found += _set_disagreements(
        "tied-target",
        ranks,
        [set(s["tied"] or ()) for s in summaries],
        lambda m: f"{m} is tied to the input embedding",
        summaries,
    )
    return found


#: The keys :func:`compare` reads from the summary of a rank that built its graph.
_KEYS = ("input_embedding", "tie_groups", "tied")


def _check_keys(ranks: list[int], summaries: list[dict[str, Any]]) -> None:
    """Raise :class:`~tiegraph.errors.ConfigurationError` for the first summary lacking a key of ``_KEYS``."""
    for rank, summary in zip(ranks, summaries, strict=True):
        missing = [key for key in _KEYS if key not in summary]
        if missing:
            raise ConfigurationError(
                f"the summary of rank {rank} has no {', '.join(map(repr, missing))}: compare() takes what "
                f"rank_summary() returns, one per rank (keys {', '.join(map(repr, _KEYS))}; 'error' when its "
                "build failed)"
            )


def _judges(summary: dict[str, Any], kind: str, value: Any) -> bool:
    """Whether a rank holds what ``value`` is about (a pipeline stage may hold only part of the model).

    A rank without the slots of a tie group (or the module of a tied target, or any input embedding)
    cannot disagree about it: that is stage asymmetry, not a different model. Summaries without
    ``slots`` (every rank holds the whole model) judge everything.
    """
    slots = summary.get("slots")
    if slots is None:
        return True
    if kind == "tie-group":
        return set(value) <= set(slots)
    prefix = value + "."
    return summary.get("tied") is not None and any(s.startswith(prefix) for s in slots)


def _set_disagreements(
    kind: str,
    ranks: list[int],
    sets: list[set[Any]],
    say: Callable[[Any], str],
    summaries: list[dict[str, Any]] | None = None,
) -> list[Disagreement]:
    out = []
    for value in sorted(set().union(*sets)):
        have = tuple(sorted(r for r, s in zip(ranks, sets, strict=True) if value in s))
        judging = [
            r for r, s in zip(ranks, summaries or [{}] * len(ranks), strict=True) if _judges(s, kind, value)
        ]
        missing = tuple(sorted(set(judging) - set(have)))
        if not missing:
            continue
        out.append(
            Disagreement(
                kind,
                value,
                have,
                missing,
                f"{say(value)} on {_ranks(have)} but not on {_ranks(missing)}; every rank should hold the "
                "same model: tie or untie the same way on every rank (e.g. model.tie_weights() on every "
                "rank before wrapping)",
            )
        )
    return out


def _ranks(ranks: tuple[int, ...]) -> str:
    if len(ranks) == 1:
        return f"rank {ranks[0]}"
    return "ranks " + ", ".join(str(r) for r in ranks)
