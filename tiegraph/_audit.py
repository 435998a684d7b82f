"""The audit: where declarations, the config flags and the memory disagree.

Every finding is computed from what a :class:`tiegraph.TieGraph` recorded (its tie groups, its declared
ties, the flags the builder read), through the read-only :class:`tiegraph._view.GraphView`, never from the
model: a graph reloaded from JSON audits the same.

Adding finding kinds
--------------------
A finding kind lives in its own room (``tiegraph/_deployed.py``, ...) as two things: a table of kinds, each
with the sentence it says (``str.format`` fields), and a function ``findings(view) -> list[Finding]``
that builds them with :func:`finding`. Register the pair with one line in :data:`FINDERS` below.
Import :class:`Finding` and :func:`finding` from :mod:`tiegraph._finding` (not from here, which imports
your room).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import _adapters, _checkpoint, _deployed, _identity, _parametrized
from ._canonical import join
from ._finding import Finder, Finding, finding, kinds
from ._graph import view_of
from ._storage import Components
from ._tie_flag import FLAG, flag_honored, governing_flag
from ._values import sentence
from .engines import _lint as declaration_lint
from .errors import NoInputEmbeddingError
from .sharding import _after as cut
from .sharding import _kept, _zero

if TYPE_CHECKING:
    from ._declared import Declaration
    from ._graph import TieGraph
    from ._view import GraphView

__all__ = ["FINDERS", "KINDS", "Finder", "Finding", "audit", "finding"]

#: The audit's own finding kinds, in report order, with the sentence each one says (``str.format`` fields).
#: :mod:`tiegraph._deployed`'s kinds (its own finder makes them) sit among them for the report order: like
#: the PEFT copy kind, they say why a declared pair is not tied.
_PAIR_KINDS: dict[str, str] = kinds(
    {
        "declared-not-tied": (
            "error",
            "{target} is declared tied to {source} (by {declared_by}) but they do not share memory, so they "
            "train and save as two tensors; call model.tie_weights() to tie them, or declare them untied "
            "(config.tie_word_embeddings=False) if the checkpoint really holds two different "
            "tensors{values}.",
        ),
        "modules-to-save-copy-untied": (
            "warning",
            "The PEFT modules_to_save copy {copy}, the one the forward uses, is not tied to {other}, "
            "although {declared_by} declares the tie{original} (peft#2777): training updates the copy alone, "
            "so the head and the embedding part ways; leave {module} out of modules_to_save to train them as "
            "one weight, or keep the copy and save with config.tie_word_embeddings=False so that a reload "
            "keeps both.",
        ),
    }
)
_GROUP_AND_FLAG_KINDS: dict[str, str] = kinds(
    {
        "group-dtype-or-shape-mismatch": (
            "error",
            "{paths} cannot be the same weight: {detail}; give them one dtype and shape (e.g. "
            "model.resize_token_embeddings() resizes both) before tying.",
        ),
        "unresolved-declaration": (
            "warning",
            "{declared_by} declares {declared_as} but {note}; fix that _tied_weights_keys entry (names are "
            "relative to the declaring module).",
        ),
        "tied-not-declared": (
            "warning",
            "{paths} share memory but no _tied_weights_keys declares it, so loaders and PEFT do not know "
            "they are one weight; declare the tie on the model, or untie them by giving {untie}.",
        ),
        "tied-not-declared-plain-module": (
            "info",
            "{paths} share memory; this model declares no ties at all (it is no transformers model and has "
            "no _tied_weights_keys), so that is information, not a failure; to have the tie checked (a later "
            "untie becomes declared-not-tied), declare it on the model's class: _tied_weights_keys = "
            "{declaration}.",
        ),
        "config-says-tied-but-nothing-is": (
            "error",
            "{flag} is True but the input embedding {embedding} shares memory with nothing; call "
            "model.tie_weights() if it should be tied, or set {flag}=False so the saved config says what "
            "the weights are.",
        ),
        "tied-although-config-says-not": (
            "error",
            "{paths} share memory although {flag} is False: save_pretrained stores one of them and "
            "from_pretrained, not tying, initializes the other afresh; set {flag}=True, or untie them by "
            "giving one a copy, nn.Parameter(weight.detach().clone()).",
        ),
        "input-embedding-is-declared-target": (
            "warning",
            "The input embedding's {target} is itself a declared tie target of {source} (by {declared_by}): "
            "tie_weights() replaces the embedding's weight with {source}, so edit, resize or adapt "
            "{source}, not the embedding.",
        ),
        "config-flags-disagree": (
            "warning",
            "{top} is {top_value} but {text} is {text_value}; {obeys}; give both the same value so the "
            "saved config says what the weights are.",
        ),
        "stale-tied-weights-keys": (
            "warning",
            "{target} is tied to {source}, but transformers' all_tied_weights_keys does not list it "
            "(tie_weights() does not refresh it, and loading and device maps read it); refresh it with "
            "model.all_tied_weights_keys = model.get_expanded_tied_weights_keys(all_submodels=True).",
        ),
    }
)
CORE_KINDS: dict[str, str] = {
    **_PAIR_KINDS,
    **_deployed.KINDS,
    **cut.KINDS,
    **_zero.KINDS,
    **_GROUP_AND_FLAG_KINDS,
}


def _core(kind: str, paths: list[str] | tuple[str, ...], **fields: Any) -> Finding:
    return finding(CORE_KINDS, kind, paths, **fields)


def audit(tg: TieGraph) -> list[Finding]:
    """Findings where the declared ties, ``config.tie_word_embeddings`` and the memory disagree.

    Parameters
    ----------
    tg
        A graph from :func:`tiegraph.build_graph` (or reloaded from JSON).

    Returns
    -------
    list of Finding
        Sorted by kind (in :data:`KINDS` order), then by paths. Empty when everything agrees.

    Notes
    -----
    Every finder in :data:`FINDERS` runs once. Declared pairs are judged one by one (``not-tied`` ones
    become ``declared-not-tied``, or the more specific PEFT copy, device or dtype/shape kind); tie groups
    are judged as wholes (a group whose slots are not all connected by declarations is
    ``tied-not-declared``; PEFT adapter slots, tied by PEFT's own ``ensure_weight_tying``, are left out of
    that check). O(slots + declarations).

    Examples
    --------
    >>> import torch, tiegraph
    >>> class Tiny(torch.nn.Module):
    ...     _tied_weights_keys = {"head.weight": "embed.weight"}
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.embed = torch.nn.Embedding(10, 4)
    ...         self.head = torch.nn.Linear(4, 10, bias=False)
    >>> [f.kind for f in tiegraph.build_graph(Tiny()).audit()]
    ['declared-not-tied']
    """
    view = view_of(tg)
    found = [f for finder in FINDERS for f in finder.find(view)]
    order = {kind: i for i, kind in enumerate(KINDS)}
    unique = dict.fromkeys(found)
    return sorted(unique, key=lambda f: (order.get(f.kind, len(order)), f.paths))


def core_findings(view: GraphView) -> list[Finding]:
    """The audit's own kinds (:data:`CORE_KINDS`): declared pairs, tie groups, and the tie flag."""
    found: list[Finding] = []
    ie = set(view.input_embedding_slots)
    # their own kinds say more than declared-not-tied: a device split, a quantized end, an FSDP2 or ZeRO-3 cut
    placed_or_quantized = {**_deployed.untied_pairs(view), **cut.split_pairs(view), **_zero.split_pairs(view)}
    for d in view.declarations:
        if (d.tie.target, d.tie.source) not in placed_or_quantized:
            found.extend(_pair_findings(view, d, ie))
    found.extend(_group_findings(view))
    found.extend(_flag_findings(view, ie, found))
    found.extend(_flags_disagree(view))
    return found


def _pair_findings(view: GraphView, d: Declaration, ie: set[int]) -> list[Finding]:
    """What one declared pair says: the most specific reason first."""
    tie = d.tie
    pair = [tie.target, tie.source]
    if tie.status == "unresolved":
        raw = f"{{{tie.declared_as[0]!r}: {tie.declared_as[1]!r}}}"
        return [
            _core("unresolved-declaration", pair, declared_by=tie.declarer, declared_as=raw, note=tie.note)
        ]
    if tie.status == "gated-off":
        if not tie.shares:
            return []
        return [_core("tied-although-config-says-not", pair, flag=join(tie.declared_by, FLAG))]
    found = []
    if d.target_slot in ie and d.source_slot not in ie:
        found.append(
            _core(
                "input-embedding-is-declared-target",
                pair,
                target=tie.target,
                source=tie.source,
                declared_by=tie.declarer,
            )
        )
    if tie.status != "tied":
        found.extend(_untied_pair(view, d))
    elif tie.listed is False:
        found.append(_core("stale-tied-weights-keys", pair, target=tie.target, source=tie.source))
    return found


def _untied_pair(view: GraphView, d: Declaration) -> list[Finding]:
    """A ``not-tied`` pair: its PEFT copy, a dtype or shape that cannot be one weight, or not-tied itself."""
    tie = d.tie
    pair = [tie.target, tie.source]
    t, s = d.target_slot, d.source_slot
    if "active" in (tie.target_copy, tie.source_copy):
        active = tie.target_copy == "active"
        copy, other = (tie.target_path, tie.source) if active else (tie.source_path, tie.target)
        module = view.module_belongs(view.slot_owner(t if active else s))
        return [
            _core(
                "modules-to-save-copy-untied",
                pair,
                copy=copy,
                other=other,
                declared_by=tie.declarer,
                original=_adapters.original_still_tied(view, d),
                module=module,
            )
        ]
    target, source = view.tensor(t), view.tensor(s)
    detail = _mismatch(target.dtype, target.shape, source.dtype, source.shape)
    if detail:
        return [_core("group-dtype-or-shape-mismatch", pair, detail=detail)]
    values = sentence(tie.values, tie.target, tie.source)
    return [
        _core(
            "declared-not-tied",
            pair,
            target=tie.target,
            source=tie.source,
            declared_by=tie.declarer,
            values=values,
        )
    ]


def _flag_findings(view: GraphView, ie: set[int], found: list[Finding]) -> list[Finding]:
    """The governing tie flag against the input embedding's ties (``found``: the pair and group findings)."""
    if not ie:
        return []
    flag_name, flag = governing_flag(view)
    if flag is None:
        return []
    tg = view.tg
    tied_to = tg.tied_to_input_embedding()
    embedding = tg.input_embedding() or ""
    if flag:
        resolved = any(d.tie.status in ("tied", "not-tied") for d in view.declarations)
        # a split device map, a quantization, an FSDP2 cut or a PEFT copy explains an untied embedding
        # better than a flag
        explained = (
            _deployed.explains_untied(view)
            or bool(cut.split_pairs(view))
            or bool(_zero.split_pairs(view))
            or any(f.kind == "modules-to-save-copy-untied" for f in found)
        )
        if not tied_to and resolved and not explained and not flag_honored(view):
            return [
                _core("config-says-tied-but-nothing-is", [embedding], flag=flag_name, embedding=embedding)
            ]
        return []
    explained_gated = any(f.kind == "tied-although-config-says-not" for f in found)  # by a gated-off pair
    if tied_to and not explained_gated:
        return [_core("tied-although-config-says-not", [embedding, *tied_to], flag=flag_name)]
    return []


def _flags_disagree(view: GraphView) -> list[Finding]:
    """The top-level and the text config's tie flags differ: say which one transformers obeys.

    transformers reads ``config.tie_word_embeddings`` of the module that declares the tie (its own config:
    the root's top-level one, or an inner language model's text config).
    """
    flags = view.tie_config
    top, text = flags.tie_word_embeddings, flags.text_tie_word_embeddings
    if top is None or text is None or top == text:
        return []
    tg = view.tg
    embedding = tg.input_embedding()
    try:
        state = "tied to " + ", ".join(tg.tied_to_input_embedding()) if tg.tied_to_input_embedding() else ""
    except NoInputEmbeddingError:
        state = ""
    state = f"the input embedding is {state or 'tied to nothing'}" if embedding is not None else ""
    declared = next((d.tie for d in view.declarations if d.tie.status != "unresolved"), None)
    if declared is None:
        obeys = "transformers obeys neither: no _tied_weights_keys declares a tie"
    else:
        flag = join(declared.declared_by, "config.tie_word_embeddings")
        by = declared.declarer
        obeys = f"transformers obeys {flag}={declared.flag} (the config of {by}, which declares the tie)"
        obeys += f", so {state}" if state else ""
    return [
        _core(
            "config-flags-disagree",
            [embedding] if embedding else ["config.tie_word_embeddings"],
            top="config.tie_word_embeddings",
            top_value=top,
            text="config.text_config.tie_word_embeddings",
            text_value=text,
            obeys=obeys,
        )
    ]


def _mismatch(
    dtype_a: str, shape_a: tuple[int, ...] | None, dtype_b: str, shape_b: tuple[int, ...] | None
) -> str:
    """Why two tensors cannot be one weight ('' if they can: same dtype, same or transposed shape).

    An unknown shape (None: the model changed before the graph read it) is not a mismatch.
    """
    parts = []
    if dtype_a != dtype_b:
        parts.append(f"dtypes {dtype_a} and {dtype_b}")
    if shape_a is None or shape_b is None:
        pass
    elif tuple(shape_a) != tuple(shape_b) and tuple(shape_a) != tuple(reversed(shape_b)):
        parts.append(f"shapes {tuple(shape_a)} and {tuple(shape_b)}")
    return " and ".join(parts)


def _group_findings(view: GraphView) -> list[Finding]:
    """Per tie group: split devices, mixed dtypes, and slots no declaration connects."""
    out: list[Finding] = []
    links: dict[int, list[int]] = {}
    for tie in view.declarations:
        if tie.resolved:
            links.setdefault(tie.target_slot, []).append(tie.source_slot)
    for slots in view.groups():
        names = sorted({view.slot_canonical(s) for s in slots})
        tensors = {view.tensor(s) for s in slots}
        dtypes = sorted({t.dtype for t in tensors})
        if len(dtypes) > 1:
            out.append(_core("group-dtype-or-shape-mismatch", names, detail="dtypes " + " and ".join(dtypes)))
        undeclared = _unconnected(view, slots, links)
        if undeclared and (view.declarations or view.tie_config.config is not None):
            out.append(_core("tied-not-declared", undeclared, untie=_untie(view, slots)))
        elif undeclared:
            out.append(
                _core("tied-not-declared-plain-module", undeclared, declaration=_declaration(view, slots))
            )
    return out


def _untie(view: GraphView, slots: list[int]) -> str:
    """How to give one end its own copy: a buffer is registered again, a parameter made anew."""
    buffers = sorted({view.slot_canonical(s) for s in slots if not view.is_parameter(s)})
    if buffers:
        attr = buffers[0].rsplit(".", 1)[-1]
        return (
            f"the buffer {buffers[0]} its own copy, register_buffer({attr!r}, {attr}.detach().clone()) on "
            "its module"
        )
    return "one a copy, nn.Parameter(weight.detach().clone())"


def _declaration(view: GraphView, slots: list[int]) -> str:
    """A ``_tied_weights_keys`` dict declaring a tie group, relative to the root.

    Every other slot maps to the input embedding's slot (else to the first name).
    """
    names = sorted({view.slot_canonical(s) for s in slots})
    ie = [view.slot_canonical(s) for s in slots if s in set(view.input_embedding_slots)]
    source = ie[0] if ie else names[0]
    return "{" + ", ".join(f"{name!r}: {source!r}" for name in names if name != source) + "}"


def _unconnected(view: GraphView, slots: list[int], links: dict[int, list[int]]) -> list[str]:
    """Canonical names of a tie group when declarations do not connect all of it, else []."""
    # adapter slots (lora_A.default, ...) belong to a tuner layer; PEFT ties them on purpose
    # and a slot seen through another path of the input embedding's module (PEFT prompt learning's
    # word_embeddings) is the embedding's own slot, named again
    model_slots = [
        s
        for s in slots
        if view.module_canonical(view.slot_owner(s)) == view.module_belongs(view.slot_owner(s))
        and not view.is_input_embedding_alias(view.slot_owner(s))
    ]
    names = {view.slot_canonical(s) for s in model_slots}
    if len(names) < 2:
        return []
    parts = Components[str]()
    for t in model_slots:
        for s in links.get(t, ()):
            a, b = view.slot_canonical(t), view.slot_canonical(s)
            if b in names:
                parts.union(a, b)
    roots = {parts.find(name) for name in names}
    return sorted(names) if len(roots) > 1 else []


# ---------------------------------------------------------------------------------------------- registry

#: Every finder the audit runs. A room adding finding kinds registers here, one line:
#: ``Finder(myroom.KINDS, myroom.findings),``.
FINDERS: list[Finder] = [
    Finder(CORE_KINDS, core_findings),
    Finder(_deployed.KINDS, _deployed.findings),
    Finder(cut.KINDS, cut.findings),
    Finder(_zero.KINDS, _zero.findings),
    Finder(_kept.KINDS, _kept.findings),
    Finder(_adapters.KINDS, _adapters.findings),
    Finder(_checkpoint.KINDS, _checkpoint.findings),
    Finder(declaration_lint.KINDS, declaration_lint.findings),
    Finder(_identity.KINDS, _identity.findings),
    Finder(_parametrized.KINDS, _parametrized.findings),
]


#: Every finding kind, in report order, with the sentence it says.
KINDS: dict[str, str] = {kind: text for finder in FINDERS for kind, text in finder.kinds.items()}
