"""Storage cases: the share relation on exact bytes, one small model each.

Every case is a builder function registered with :func:`case`; its docstring says which behaviour it pins
and the decorator holds the expected answers (full names; canonical ones where they differ). Each case runs
on every device in ``devices`` (CPU and meta unless a case says otherwise): on meta every ``data_ptr()`` is
0, so the storage object is what tells storages apart.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

import tiegraph

Builder = Callable[[str], nn.Module]
BuildFn = Callable[..., tiegraph.TieGraph]  # the conftest `build` fixture: build_graph + check_invariants


@dataclass(frozen=True)
class Case:
    build: Builder
    groups: list[list[str]]  # tie_groups(full_paths=True)
    canonical_groups: list[list[str]]  # tie_groups()
    components: dict[str, list[str]]  # component(name, full_paths=True)
    canonical_components: dict[str, list[str]]  # component(name)
    input_embedding: str | None = None
    tied: list[str] | None = None  # tied_to_input_embedding(full_paths=True)
    canonical_tied: list[str] | None = None  # tied_to_input_embedding()
    devices: tuple[str, ...] = ("cpu", "meta")

    @property
    def name(self) -> str:
        return self.build.__name__


CASES: list[Case] = []


def case(
    *,
    groups: list[list[str]],
    canonical_groups: list[list[str]] | None = None,
    components: dict[str, list[str]] | None = None,
    canonical_components: dict[str, list[str]] | None = None,
    input_embedding: str | None = None,
    tied: list[str] | None = None,
    canonical_tied: list[str] | None = None,
    devices: tuple[str, ...] = ("cpu", "meta"),
) -> Callable[[Builder], Builder]:
    """Register a builder with its expected answers; canonical answers default to the full ones."""

    def register(build: Builder) -> Builder:
        assert build.__doc__, f"case {build.__name__} must say in its docstring what it pins"
        comps = components or {}
        CASES.append(
            Case(
                build=build,
                groups=groups,
                canonical_groups=groups if canonical_groups is None else canonical_groups,
                components=comps,
                canonical_components=comps if canonical_components is None else canonical_components,
                input_embedding=input_embedding,
                tied=tied,
                canonical_tied=tied if canonical_tied is None else canonical_tied,
                devices=devices,
            )
        )
        return build

    return register


def holder(**tensors: torch.Tensor) -> nn.Module:
    """A bare module owning ``tensors``: Parameters as parameters, anything else as buffers."""
    m = nn.Module()
    for name, t in tensors.items():
        if isinstance(t, nn.Parameter):
            m.register_parameter(name, t)
        else:
            m.register_buffer(name, t)
    return m


def tree(**children: nn.Module) -> nn.Module:
    root = nn.Module()
    for name, child in children.items():
        root.add_module(name, child)
    return root


def P(t: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(t, requires_grad=t.is_floating_point())


# --------------------------------------------------------------------------------------------------
# 1-D slices and strides


@case(groups=[["a.w", "b.w"]], components={"a.w": ["a.w", "b.w"], "b": ["a.w", "b.w"]})
def transposed_view_shares(device: str) -> nn.Module:
    """A ``.t()`` view reads the same bytes as its base, so it shares.

    safetensors' ``_end_ptr`` uses ``view(-1)`` and crashes on transposed views (``save_model`` of a PEFT
    model with ``ensure_weight_tying=True``, whose adapters are tied by transposed views).
    """
    w = torch.zeros(4, 6, device=device)
    return tree(a=holder(w=P(w)), b=holder(w=P(w.t())))


@case(
    groups=[["emb.weight", "head.weight"]],
    components={"head": ["emb.weight", "head.weight"]},
    input_embedding="emb",
    tied=["head"],
)
def transposed_tie_to_embedding_is_a_tied_target(device: str) -> nn.Module:
    """A head whose weight is ``nn.Parameter(emb.weight.t())`` is tied by storage, with no object identity.

    accelerate's ``find_tied_parameters`` compares Python identity and misses it; the byte relation finds it.
    """
    emb = nn.Embedding(6, 4, device=device)
    head = nn.Linear(6, 4, bias=False, device=device)
    head.weight = nn.Parameter(emb.weight.t())
    return tree(emb=emb, head=head)


@case(groups=[["a.w", "b.w"]], components={"a.w": ["a.w", "b.w"]})
def two_parameter_objects_over_one_tensor_share(device: str) -> nn.Module:
    """Two distinct ``nn.Parameter`` objects over the same tensor share by storage, not by identity."""
    w = torch.zeros(3, 2, device=device)
    return tree(a=holder(w=P(w)), b=holder(w=P(w)))


@case(groups=[], components={"a.w": ["a.w"], "b.w": ["b.w"]})
def adjacent_halves_do_not_share(device: str) -> nn.Module:
    """``big[:4]`` and ``big[4:]`` read one storage but no common byte: not tied.

    safetensors groups by storage and must then split by byte range; a storage-pointer check alone ties them
    (safetensors#202: slices count as shared).
    """
    big = torch.zeros(8, device=device)
    return tree(a=holder(w=P(big[:4])), b=holder(w=P(big[4:])))


@case(
    groups=[["a.w", "b.w", "c.w"]],
    components={"c.w": ["a.w", "b.w", "c.w"], "b.w": ["a.w", "b.w", "c.w"]},
)
def base_and_two_disjoint_slices_are_one_group(device: str) -> nn.Module:
    """``A``, ``A[10:20]``, ``A[50:60]`` are one group (each slice overlaps ``A``).

    safetensors ``_find_shared_tensors`` sets ``last_stop = stop`` while sweeping sorted ranges, so the end
    of ``A[10:20]`` hides ``A``'s and it splits the three into ``[{A, A[10:20]}, {A[50:60]}]``.
    """
    a = torch.zeros(100, device=device)
    return tree(a=holder(w=P(a)), b=holder(w=P(a[10:20])), c=holder(w=P(a[50:60])))


@case(groups=[["a.w", "b.w", "c.w"]], components={"a.w": ["a.w", "b.w", "c.w"]})
def overlap_is_transitive_through_a_middle_slice(device: str) -> nn.Module:
    """``x[0:10]`` and ``x[12:20]`` share no byte, but both overlap ``x[5:15]``: a group is a connected
    component of the share relation, not a clique."""
    x = torch.zeros(20, device=device)
    return tree(a=holder(w=P(x[0:10])), b=holder(w=P(x[5:15])), c=holder(w=P(x[12:20])))


@case(
    groups=[["even.w", "quarter.w"], ["odd.w", "third.w"]],
    components={
        "even.w": ["even.w", "quarter.w"],
        "odd.w": ["odd.w", "third.w"],
        "odd": ["odd.w", "third.w"],
    },
)
def interleaved_strided_views_do_not_share(device: str) -> nn.Module:
    """``x[0::2]`` and ``x[1::2]`` have overlapping extents but no common element: not tied.

    Exact elements, not extents: ``x[0::4]`` lies inside ``x[0::2]`` (tied); ``x[3::6]`` = {3, 9} meets
    ``x[1::2]`` at 3 and 9 (tied) but never ``x[0::2]``.
    """
    x = torch.zeros(12, device=device)
    return tree(
        even=holder(w=P(x[0::2])),
        odd=holder(w=P(x[1::2])),
        quarter=holder(w=P(x[0::4])),
        third=holder(w=P(x[3::6])),
    )


@case(
    groups=[],
    components={
        "a.w": ["a.w"],
        "b.w": ["b.w"],
        "c.w": ["c.w"],
        "d.w": ["d.w"],
        "e.buf": ["e.buf"],
        "f.w": ["f.w"],
        "g.w": ["g.w"],
    },
)
def empty_tensors_share_with_nothing(device: str) -> nn.Module:
    """Empty tensors share with nothing: an empty slice of a storage, an empty column block, and two unrelated
    empty parameters (on CPU both may report ``data_ptr() == 0``) are all untied. The rule is taken over
    "same object": one empty Parameter registered under two names (``f.w``, ``g.w``) is not a tie group
    either, as no byte of it can be read through both names."""
    a = torch.zeros(8, device=device)
    w = torch.zeros(3, 4, device=device)
    nothing = P(torch.empty(0, 2, device=device))
    return tree(
        a=holder(w=P(a)),
        b=holder(w=P(a[3:3])),
        c=holder(w=P(torch.empty(0, device=device))),
        d=holder(w=P(torch.empty(0, 5, device=device))),
        e=holder(buf=w[:, 2:2]),
        f=holder(w=nothing),
        g=holder(w=nothing),
    )


@case(
    groups=[],
    components={"a.w": ["a.w"], "b.w": ["b.w"]},
)
def unrelated_storages_of_equal_shape_do_not_share(device: str) -> nn.Module:
    """Two fresh tensors never share, even on meta where every ``data_ptr()`` is 0 (a pointer-keyed check
    would tie every meta tensor; safetensors skips meta altogether)."""
    return tree(a=holder(w=P(torch.zeros(4, device=device))), b=holder(w=P(torch.zeros(4, device=device))))


# --------------------------------------------------------------------------------------------------
# buffers, modules, aliases


@case(
    groups=[["a.pos", "b.pos"], ["c.w", "d.mask"]],
    components={"b.pos": ["a.pos", "b.pos"], "d": ["c.w", "d.mask"]},
)
def shared_buffers_count(device: str) -> nn.Module:
    """Buffers are slots: one tensor registered as a (persistent) buffer and a non-persistent buffer is a
    tie group, and a buffer that views a parameter's row shares with that parameter (Bert's tied bias is
    this shape)."""
    pos = torch.zeros(5, device=device)
    w = P(torch.zeros(3, 4, device=device))
    a = holder(pos=pos)
    b = nn.Module()
    b.register_buffer("pos", pos, persistent=False)
    return tree(a=a, b=b, c=holder(w=w), d=holder(mask=w.detach()[1]))


@case(
    groups=[["x.v", "z.v"], ["x.w", "y.w"]],
    components={
        "x.w": ["x.w", "y.w"],
        "x.v": ["x.v", "z.v"],
        "x": ["x.v", "x.w", "y.w", "z.v"],
        "y": ["x.w", "y.w"],
    },
)
def module_with_slots_in_two_groups_does_not_merge_them(device: str) -> nn.Module:
    """A module holding one slot of each of two groups leaves them two groups: groups are components of
    ``shares`` over slots, never over modules (``component`` of the module is their union)."""
    p = P(torch.zeros(2, device=device))
    q = P(torch.zeros(3, device=device))
    return tree(x=holder(w=p, v=q), y=holder(w=p), z=holder(v=q))


@case(
    groups=[
        ["a.bias", "b.c.bias"],
        ["a.weight", "b.c.weight"],
        ["decoder.embed.weight", "embed.weight", "head.weight"],
    ],
    components={
        "b.c": ["a.bias", "a.weight", "b.c.bias", "b.c.weight"],
        "a.weight": ["a.weight", "b.c.weight"],
        "decoder.embed": ["decoder.embed.weight", "embed.weight", "head.weight"],
    },
    input_embedding="decoder.embed",
    tied=["head"],
)
def module_under_two_paths_reports_every_path(device: str) -> nn.Module:
    """A module registered under two paths gives every path (torch's ``remove_duplicate=False``): its slots
    tie across paths in the tie groups, but an alias path of the input embedding's module (as PEFT prompt
    learning's ``word_embeddings``) is the input embedding itself, not a tied target (DESIGN.md). The
    primary path is the first ``named_modules()`` path (``embed``), even when the caller names the alias.

    accelerate#2984: shared modules are missed when only the first path is walked.
    """
    block = nn.Linear(2, 3, device=device)
    emb = nn.Embedding(5, 3, device=device)
    head = nn.Linear(3, 5, bias=False, device=device)
    head.weight = emb.weight
    b = tree(c=block)
    decoder = tree(embed=emb)
    return tree(a=block, b=b, embed=emb, decoder=decoder, head=head)


@case(
    groups=[["emb.weight", "head.weight", "mid.w"]],
    components={"emb": ["emb.weight", "head.weight", "mid.w"]},
    input_embedding="emb",
    tied=["head", "mid"],
)
def tied_targets_follow_the_component(device: str) -> nn.Module:
    """Tied targets are read from the component, like tie groups: ``head.weight = A[12:20]`` shares no byte
    with ``emb.weight = A[0:10]`` but both overlap ``mid.w = A[5:15]``, so ``head`` is tied too."""
    a = torch.zeros(20, device=device)
    emb = nn.Embedding(10, 1, device=device)
    emb.weight = P(a[0:10].view(10, 1))
    return tree(emb=emb, mid=holder(w=P(a[5:15])), head=holder(weight=P(a[12:20])))


@case(
    groups=[["emb.inner.weight", "head.weight"], ["emb.side.w", "head_side.w"]],
    components={"emb": ["emb.inner.weight", "emb.side.w", "head.weight", "head_side.w"]},
    input_embedding="emb",
    tied=["head", "head_side"],
)
def everything_under_the_input_embedding_counts(device: str) -> nn.Module:
    """The input embedding is its module *and everything under it* (a LoRA- or ``modules_to_save``-wrapped
    embedding counts its base layer and adapters): a slot tied to ``emb.side.w``, a submodule's slot, makes
    its owner a tied target; ``emb.inner`` itself never is."""
    emb = nn.Module()
    emb.inner = inner = nn.Embedding(6, 4, device=device)
    emb.side = side = holder(w=P(torch.zeros(4, 2, device=device)))
    head = nn.Linear(4, 6, bias=False, device=device)
    head.weight = inner.weight
    return tree(emb=emb, head=head, head_side=holder(w=P(side.get_parameter("w").t())))


class _Same(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@case(
    groups=[["emb.weight", "head.parametrizations.weight.original"]],
    canonical_groups=[["emb.weight", "head.weight"]],
    components={
        "head.weight": ["emb.weight", "head.parametrizations.weight.original"],
        "head": ["emb.weight", "head.parametrizations.weight.original"],
        "head.parametrizations.weight.original": ["emb.weight", "head.parametrizations.weight.original"],
    },
    canonical_components={
        "head.weight": ["emb.weight", "head.weight"],
        "emb": ["emb.weight", "head.weight"],
    },
    input_embedding="emb",
    tied=["head.parametrizations.weight"],
    canonical_tied=["head"],
)
def parametrized_weight_is_followed_to_original(device: str) -> nn.Module:
    """``torch.nn.utils.parametrize`` moves the real tensor to ``head.parametrizations.weight.original``:
    that is the slot (full name), canonically ``head.weight``; the parametrization list belongs to ``head``.
    """
    emb = nn.Embedding(6, 4, device=device)
    head = nn.Linear(4, 6, bias=False, device=device)
    head.weight = emb.weight
    parametrize.register_parametrization(head, "weight", _Same())
    return tree(emb=emb, head=head)


# --------------------------------------------------------------------------------------------------
# 2-D blocks


@case(groups=[], components={"left.w": ["left.w"], "right.w": ["right.w"]})
def column_blocks_do_not_share(device: str) -> nn.Module:
    """``W[:, :4]`` and ``W[:, 4:]`` interleave row by row: their byte extents overlap, their bytes do not."""
    w = torch.zeros(3, 8, device=device)
    return tree(left=holder(w=P(w[:, :4])), right=holder(w=P(w[:, 4:])))


@case(
    groups=[["left.w", "one.w", "row.w"]],
    components={"row.w": ["left.w", "one.w", "row.w"], "one.w": ["left.w", "one.w", "row.w"]},
)
def column_block_and_row_share(device: str) -> nn.Module:
    """``W[:, :4]`` and ``W[1:2, :]`` share ``W[1, :4]``; ``W[1, 3:]`` meets ``W[:, :4]`` in exactly one
    element, ``W[1, 3]``."""
    w = torch.zeros(3, 8, device=device)
    return tree(left=holder(w=P(w[:, :4])), row=holder(w=P(w[1:2, :])), one=holder(w=P(w[1, 3:])))


@case(groups=[], components={"left.w": ["left.w"], "part.w": ["part.w"]})
def column_block_and_row_remainder_do_not_share(device: str) -> nn.Module:
    """``W[:, :4]`` (elements 0-3, 8-11, 16-19) and ``W[1:2, 4:]`` (elements 12-15): the row part lies inside
    the block's extent and touches none of its elements."""
    w = torch.zeros(3, 8, device=device)
    return tree(left=holder(w=P(w[:, :4])), part=holder(w=P(w[1:2, 4:])))


@case(groups=[["a.w", "b.w"]], components={"a.w": ["a.w", "b.w"]})
def transposed_column_slice_shares_with_row_slice(device: str) -> nn.Module:
    """``W.t()[1]`` is column 1 of ``W`` (stride 8); it meets ``W[2]`` at ``W[2, 1]``."""
    w = torch.zeros(3, 8, device=device)
    return tree(a=holder(w=P(w.t()[1])), b=holder(w=P(w[2])))


# --------------------------------------------------------------------------------------------------
# different dtypes over one storage


@case(groups=[["a.w", "b.bits"]], components={"b.bits": ["a.w", "b.bits"]})
def dtype_view_shares_its_bytes(device: str) -> nn.Module:
    """``x.view(torch.int32)`` of a float32 ``x`` reads the same bytes: tied (element size differs, bytes
    don't)."""
    x = torch.zeros(8, device=device)
    return tree(a=holder(w=P(x)), b=holder(bits=x.view(torch.int32)))


@case(
    groups=[["c.w", "e.last"]],
    components={"c.w": ["c.w", "e.last"], "d.next": ["d.next"], "f.w": ["f.w"], "g.h16": ["g.h16"]},
)
def dtype_view_overlap_is_byte_exact(device: str) -> nn.Module:
    """Overlap is decided per byte, not per element of either dtype. Over a float32 ``x`` (32 bytes):
    ``x[:2]`` (bytes 0-7) meets ``x.view(uint8)[7:8]`` (byte 7); ``x.view(uint8)[8:10]`` (bytes 8-9),
    ``x.view(float16)[5:6]`` (bytes 10-11) and ``x[3:]`` (bytes 12-31) meet nothing."""
    x = torch.zeros(8, device=device)
    return tree(
        c=holder(w=P(x[:2])),
        d=holder(next=x.view(torch.uint8)[8:10]),
        e=holder(last=x.view(torch.uint8)[7:8]),
        f=holder(w=P(x[3:])),
        g=holder(h16=x.view(torch.float16)[5:6]),
    )


# --------------------------------------------------------------------------------------------------
# separate storage objects over the same memory (CPU only: meta has no memory to alias)


@case(groups=[["a.w", "b.w"], ["c.w", "d.w"]], components={"e.w": ["e.w"]}, devices=("cpu",))
def numpy_views_of_one_array_share(_device: str) -> nn.Module:
    """Two ``torch.from_numpy`` views of one array are two storage objects; overlapping ranges share at
    different base pointers (``arr[:8]``, ``arr[4:]``); of another array, ``other[::2]`` meets
    ``other[2::4]`` and an odd element (``other[1::2][:1]``) meets neither."""
    arr, other = np.zeros(16, dtype=np.float32), np.zeros(16, dtype=np.float32)
    return tree(
        a=holder(w=P(torch.from_numpy(arr[:8]))),
        b=holder(w=P(torch.from_numpy(arr[4:]))),
        c=holder(w=P(torch.from_numpy(other[::2]))),
        d=holder(w=P(torch.from_numpy(other[2::4]))),
        e=holder(w=P(torch.from_numpy(other[1::2][:1]))),
    )


@case(groups=[["a.w", "b.w", "c.w"]], components={"d.w": ["d.w"]}, devices=("cpu",))
def frombuffer_twice_over_one_buffer_shares(_device: str) -> nn.Module:
    """``torch.frombuffer`` twice over one buffer (at offset 0 and at 8 bytes) shares; a range of the same
    buffer past both (``d``, a third storage) does not."""
    buf = bytearray(64)
    return tree(
        a=holder(w=P(torch.frombuffer(buf, dtype=torch.float32, count=8))),
        b=holder(w=P(torch.frombuffer(buf, dtype=torch.float32, count=4, offset=8))),
        c=holder(w=P(torch.frombuffer(buf, dtype=torch.float32, count=4))),
        d=holder(w=P(torch.frombuffer(buf, dtype=torch.float32, offset=32))),
    )


@case(groups=[["a.w", "b.w"]], components={"c.w": ["c.w"]}, devices=("cpu",))
def set_onto_a_sub_storage_shares(_device: str) -> nn.Module:
    """``set_`` onto a slice of a storage (``untyped_storage()[8:16]``: a storage object at another base
    pointer) shares with ``base[:4]`` (bytes 0-15 of the whole storage); a slice past it (bytes 16-47)
    does not."""
    base = torch.zeros(16)
    sub = base.untyped_storage()[16:48]
    return tree(
        a=holder(w=P(base[:4])),
        b=holder(w=P(torch.empty(0).set_(base.untyped_storage()[8:16], 0, (2,), (1,)))),
        c=holder(w=P(torch.empty(0).set_(sub, 0, (8,), (1,)))),
    )


# --------------------------------------------------------------------------------------------------
# the tests


def _params(cases: Iterable[Case]) -> list[Any]:
    """One pytest.param per case and device."""
    return [pytest.param(c, d, id=f"{c.name}-{d}") for c in cases for d in c.devices]


PARAMS = _params(CASES)


@pytest.mark.parametrize(("case_", "device"), PARAMS)
def test_tie_groups(build: BuildFn, case_: Case, device: str) -> None:
    tg = build(case_.build(device), input_embedding=case_.input_embedding)
    assert tg.tie_groups(full_paths=True) == case_.groups
    assert tg.tie_groups() == case_.canonical_groups


@pytest.mark.parametrize(("case_", "device"), _params(c for c in CASES if c.components))
def test_component(build: BuildFn, case_: Case, device: str) -> None:
    tg = build(case_.build(device), input_embedding=case_.input_embedding)
    for name, expected in case_.components.items():
        assert tg.component(name, full_paths=True) == expected, name
    for name, expected in case_.canonical_components.items():
        assert tg.component(name) == expected, name


@pytest.mark.parametrize(("case_", "device"), _params(c for c in CASES if c.tied is not None))
def test_tied_to_input_embedding(build: BuildFn, case_: Case, device: str) -> None:
    model = case_.build(device)
    tg = build(model, input_embedding=case_.input_embedding)
    assert tg.tied_to_input_embedding(full_paths=True) == case_.tied
    assert tg.tied_to_input_embedding() == case_.canonical_tied
    assert (
        tiegraph.tied_to_input_embedding(model, input_embedding=case_.input_embedding) == case_.canonical_tied
    )


def test_every_case_states_what_it_pins() -> None:
    """The table is not empty and every case runs on at least one device."""
    assert len(CASES) >= 15
    assert all(c.devices for c in CASES)
