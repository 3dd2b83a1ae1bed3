"""Where the tests find OSV advisories: the hand-written and copied records under
``tests/fixtures/osv``, and the real PyPI advisories in ``../shared/data/osv-pypi`` (CC-BY 4.0,
see its LICENSE) next to the repository, or next to its parent for a git worktree one level
deeper."""

from __future__ import annotations

import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "osv"
SHARED_OSV = next(
    (
        path
        for path in (
            base / "shared/data/osv-pypi/vulns" for base in (REPO.parent, REPO.parent.parent)
        )
        if path.is_dir()
    ),
    REPO.parent / "shared/data/osv-pypi/vulns",
)
#: For tests that read the real advisories: said plainly when they are not there.
needs_shared = pytest.mark.skipif(
    not SHARED_OSV.is_dir(), reason="../shared/data/osv-pypi is not here"
)
