"""Replicas at run time: whether the copies of a tie that live on different ranks are still equal.

Each rank fingerprints the copies it holds (shape, dtype, and the hashed bytes and float64 sum of 16
evenly spaced rows), the ranks exchange the fingerprints with one ``all_gather_object`` of a few
hundred bytes, and every rank gets the same list of :class:`ReplicaMismatch`. ``exact=True`` exchanges the
tensors themselves and gives the largest difference.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..errors import TiegraphError

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup

__all__ = ["ReplicaMismatch", "check_tied_replicas", "fingerprint"]

_SAMPLED_ROWS = 16


@dataclass(frozen=True)
class ReplicaMismatch:
    """A tie whose copies on different ranks are no longer equal.

    Attributes
    ----------
    group
        The tie group's slot names, sorted.
    replicas
        Every copy found: ``(rank, slot name)``, sorted.
    ranks
        The ranks whose copy differs from the first copy (the lowest rank's, first slot name).
    max_diff
        With ``exact=True``: the largest absolute difference from the first copy; else None.
    message
        One sentence: what differs and what to do.
    """

    group: tuple[str, ...]
    replicas: tuple[tuple[int, str], ...]
    ranks: tuple[int, ...]
    max_diff: float | None
    message: str

    def __str__(self) -> str:
        return self.message


def fingerprint(tensor: torch.Tensor) -> tuple[Any, ...]:
    """Shape, dtype, and the exact bytes (hashed) and float64 sum of 16 evenly spaced rows of ``tensor``.

    Cost does not grow with the vocabulary: 16 rows are read whatever the tensor's size. A training step
    changes every row of a tied head (its gradient is dense over the vocabulary), so copies that trained
    apart differ in every sampled row; a copy that differs in a few rows only (a partial load) needs
    ``exact=True`` in :func:`check_tied_replicas`.

    Examples
    --------
    >>> import torch
    >>> t = torch.arange(6.0).reshape(3, 2)
    >>> fingerprint(t) == fingerprint(t.clone()), fingerprint(t) == fingerprint(t + 1e-6)
    (True, False)
    """
    local = tensor.to_local() if hasattr(tensor, "to_local") else tensor
    data = local.detach()
    if data.is_meta:
        return (tuple(tensor.shape), str(tensor.dtype), None, None)
    rows = data.reshape(data.shape[0], -1) if data.dim() else data.reshape(1, 1)
    count = rows.shape[0]
    picked = sorted({i * (count - 1) // (_SAMPLED_ROWS - 1) for i in range(_SAMPLED_ROWS)}) if count else []
    sample = (
        rows.index_select(0, torch.tensor(picked, dtype=torch.long, device=rows.device)).cpu().contiguous()
    )
    digest = hashlib.sha1(sample.view(torch.uint8).numpy().tobytes(), usedforsecurity=False).hexdigest()
    return (tuple(tensor.shape), str(tensor.dtype), float(sample.sum(dtype=torch.float64)), digest)


def _local(model: nn.Module, ties: Sequence[Sequence[str]], exact: bool) -> dict[tuple[int, str], Any]:
    tensors: dict[str, torch.Tensor] = dict(model.named_parameters(remove_duplicate=False))
    tensors.update(model.named_buffers(remove_duplicate=False))
    out: dict[tuple[int, str], Any] = {}
    for number, group in enumerate(ties):
        for slot in group:
            if slot in tensors:
                t = tensors[slot]
                out[(number, slot)] = (fingerprint(t), t.detach().to("cpu", copy=True) if exact else None)
    return out


def _default_ties(model: nn.Module) -> list[list[str]]:
    from .._build import build_graph
    from .._graph import view_of
    from ._kept import replica_ties

    tg = build_graph(model)
    pairs = [[t.target, t.source] for t in tg.declared_ties() if t.status in ("tied", "not-tied")]
    groups = [*tg.tie_groups(full_paths=True), *pairs, *replica_ties(view_of(tg))]
    return [sorted(set(g)) for g in groups]


def _mismatch(
    group: Sequence[str], copies: list[tuple[int, str, Any]], exact: bool
) -> ReplicaMismatch | None:
    copies.sort(key=lambda c: (c[0], c[1]))
    first_fp, first_tensor = copies[0][2]
    differ = [(rank, slot, data) for rank, slot, data in copies if data[0] != first_fp]
    if not differ:
        return None
    max_diff = None
    if exact:
        max_diff = max(float((d[1].double() - first_tensor.double()).abs().max()) for _, _, d in differ)
    ranks = tuple(sorted({rank for rank, _, _ in differ}))
    where = ", ".join(f"{slot} on rank {rank}" for rank, slot, _ in differ)
    diff = f" (max |difference| {max_diff:.3g})" if max_diff is not None else ""
    message = (
        f"tie {' = '.join(sorted(group))}: {where} differs from {copies[0][1]} on rank {copies[0][0]}{diff}; "
        "the copies are no longer one weight: sync them (all-reduce the tied gradients across these ranks, "
        "or copy one into the others after a load) and keep them on one stage where you can"
    )
    return ReplicaMismatch(
        tuple(sorted(group)), tuple((r, s) for r, s, _ in copies), ranks, max_diff, message
    )


def check_tied_replicas(
    model: nn.Module,
    ties: Iterable[Sequence[str]] | None = None,
    group: ProcessGroup | None = None,
    *,
    exact: bool = False,
) -> list[ReplicaMismatch]:
    """Compare every copy of each tie across the ranks of ``group`` (a collective: call it on every rank).

    Parameters
    ----------
    model
        This rank's module (a pipeline stage), its slots named as the whole model names them.
    ties
        The tie groups to check, as slot names (e.g. ``f.paths`` of
        :func:`tiegraph.sharding.check_stage_split`'s findings, or the whole model's
        ``tie_groups(full_paths=True)``). Default: the tie groups and the declared ties this rank sees,
        and the ties an engine keeps across ranks (DeepSpeed ``TiedLayerSpec`` weights, Megatron-core's
        shared embedding); pass the same ``ties`` on every rank.
    group
        The process group; None for the default group.
    exact
        Exchange the tensors themselves and report the largest difference (costs a full copy per replica).

    Returns
    -------
    list of ReplicaMismatch
        The same list on every rank; empty when every copy of every tie is equal.

    Notes
    -----
    16 rows read per local copy (their bytes hashed, their float64 sum) and one ``all_gather_object`` of
    the fingerprints: the cost does not grow with the vocabulary (``benchmarks/bench.py`` reports it).
    Use it at start, after a checkpoint load and every N steps.

    Examples
    --------
    Under ``torchrun``, after a step of each pipeline stage::

        ties = [["embed.weight", "head.weight"]]
        for mismatch in tiegraph.distributed.check_tied_replicas(stage_module, ties):
            print(mismatch)
    """
    import torch.distributed as dist

    if not isinstance(model, nn.Module):
        raise TypeError(f"check_tied_replicas expects a torch.nn.Module, got {type(model).__name__}")
    if not dist.is_available() or not dist.is_initialized():
        raise TiegraphError(
            "check_tied_replicas needs torch.distributed: call torch.distributed.init_process_group(...) on "
            "every rank first"
        )
    groups = [list(g) for g in (ties if ties is not None else _default_ties(model))]
    local = _local(model, groups, exact)
    gathered: list[Any] = [None] * dist.get_world_size(group)
    dist.all_gather_object(gathered, (dist.get_rank(), local), group=group)
    found = []
    for number, names in enumerate(groups):
        copies = [
            (rank, slot, data) for rank, held in gathered for (n, slot), data in held.items() if n == number
        ]
        mismatch = _mismatch(names, copies, exact) if len(copies) >= 2 else None
        if mismatch is not None:
            found.append(mismatch)
    return found
