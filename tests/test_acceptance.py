"""Severity of every finding kind, and accepting known findings (tiegraph._acceptance)."""

from __future__ import annotations

from pathlib import Path

import pytest
from models import llama, llama_declared_but_copied, llama_flag_flipped_off
from torch import nn

import tiegraph
import tiegraph.testing
from tiegraph._acceptance import Acceptance, AcceptanceError, accept, parse, read_pyproject
from tiegraph._audit import KINDS
from tiegraph._finding import _SEVERITY, SEVERITIES
from tiegraph.cli.summary import summarise


def test_every_kind_declares_its_severity() -> None:
    """Each registered kind was registered with one of error/warning/info, not left to the default."""
    assert set(KINDS) <= set(_SEVERITY)
    assert {_SEVERITY[k] for k in KINDS} <= set(SEVERITIES)
    assert _SEVERITY["declared-not-tied"] == "error"
    assert _SEVERITY["unmatched-acceptance"] == "warning"


def test_report_shows_severity_and_acceptance() -> None:
    """The text report counts findings by severity and marks accepted ones; JSON carries both fields."""
    tg = tiegraph.build_graph(llama_declared_but_copied())
    text = tg.report()
    assert "Findings (2 errors)" in text
    assert "  [error] declared-not-tied: lm_head.weight, model.embed_tokens.weight" in text
    text = tg.report(accept=["declared-not-tied:lm_head"])
    assert "Findings (2 errors; 1 accepted)" in text
    assert "  [error, accepted] declared-not-tied:" in text
    data = summarise(tg, accept=["declared-not-tied", "tied-not-declared"])
    assert [(f["kind"], f["severity"], f["accepted"]) for f in data["findings"]] == [
        ("declared-not-tied", "error", True),
        ("config-says-tied-but-nothing-is", "error", False),
        ("unmatched-acceptance", "warning", False),
    ]
    assert "tied-not-declared (from accept=) matches no finding" in data["findings"][-1]["message"]


@pytest.mark.parametrize(
    ("text", "hit"),
    [
        ("declared-not-tied", True),
        ("declared-not-tied:lm_head", True),  # a module: the slots under it
        ("declared-not-tied:lm_head.weight", True),
        ("declared-not-tied:*.embed_tokens.weight", True),  # a glob
        ("declared-not-tied:lm_hea", False),  # a prefix that is no module
        ("declared-not-tied:model.layers", False),
        ("tied-not-declared:lm_head", False),  # another kind
    ],
)
def test_acceptance_matching(text: str, hit: bool) -> None:
    found = tiegraph.build_graph(llama_declared_but_copied()).audit()
    marked = accept(found, [text])
    assert marked[0].accepted is hit
    assert (marked[-1].kind == "unmatched-acceptance") is not hit


def test_unknown_kind_is_an_error() -> None:
    with pytest.raises(AcceptanceError, match="'tied-not-decalred' is not a finding kind"):
        parse("tied-not-decalred:lm_head")
    with pytest.raises(AcceptanceError, match="unmatched-acceptance"):  # named among the kinds, not accepted
        parse("unmatched-acceptance")


def test_pyproject_nearest(tmp_path: Path) -> None:
    """The nearest pyproject.toml is read; one without the section accepts nothing; bad input is an error."""
    (tmp_path / "pyproject.toml").write_text('[tool.tiegraph]\naccept = ["declared-not-tied:lm_head"]\n')
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    assert read_pyproject(deep) == [
        Acceptance("declared-not-tied", "lm_head", str(tmp_path / "pyproject.toml"))
    ]
    (tmp_path / "a" / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    assert read_pyproject(deep) == []
    (tmp_path / "a" / "pyproject.toml").write_text("[tool.tiegraph]\naccepts = []\n")
    with pytest.raises(AcceptanceError, match="unknown key 'accepts'"):
        read_pyproject(deep)
    (tmp_path / "a" / "pyproject.toml").write_text("[tool.tiegraph\n")
    with pytest.raises(AcceptanceError, match="cannot read it as TOML"):
        read_pyproject(deep)
    (tmp_path / "a" / "pyproject.toml").write_text("[tool.tiegraph]\naccept = 'declared-not-tied'\n")
    with pytest.raises(AcceptanceError, match="must be a list"):
        read_pyproject(deep)


def test_assert_no_findings() -> None:
    """The testing helper fails on errors and warnings, passes what is accepted, fails stale acceptances."""
    model = llama_declared_but_copied()
    with pytest.raises(AssertionError, match=r"\[error\] declared-not-tied"):
        tiegraph.testing.assert_no_findings(model)
    accepted = ["declared-not-tied:lm_head.weight", "config-says-tied-but-nothing-is"]
    tiegraph.testing.assert_no_findings(model, accept=accepted)
    with pytest.raises(AssertionError, match="unmatched-acceptance"):
        tiegraph.testing.assert_no_findings(llama(), accept=["declared-not-tied"])
    tiegraph.testing.assert_no_findings(llama())


def test_assert_ties_unchanged_accepts() -> None:
    """An accepted finding added by a step is no change; every other change still fails."""
    model = llama()
    before = tiegraph.build_graph(model)
    model.lm_head.weight = nn.Parameter(model.lm_head.weight.detach().clone())
    with pytest.raises(AssertionError, match="no longer shares memory"):
        tiegraph.testing.assert_ties_unchanged(before, model, accept=["declared-not-tied"])
    with pytest.raises(AssertionError, match="matches no finding"):
        tiegraph.testing.assert_ties_unchanged(before, before, accept=["declared-not-tied"])
    flipped = llama_flag_flipped_off()  # the same ties; only a finding is added
    with pytest.raises(AssertionError, match="new finding tied-although-config-says-not"):
        tiegraph.testing.assert_ties_unchanged(before, flipped)
    tiegraph.testing.assert_ties_unchanged(before, flipped, accept=["tied-although-config-says-not"])
