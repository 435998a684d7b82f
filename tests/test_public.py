"""The package's public face: what ``dir(tiegraph)`` shows is what ``__all__`` promises."""

from __future__ import annotations

import tiegraph


def test_dir_shows_the_public_names_only() -> None:
    """``dir(tiegraph)`` listed ``annotations`` and ``nn`` (this module's own imports)."""
    names = dir(tiegraph)
    assert "annotations" not in names
    assert "nn" not in names
    assert names == sorted([*tiegraph.__all__, "__version__"])
    for name in tiegraph.__all__:
        assert getattr(tiegraph, name) is not None
