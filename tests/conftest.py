"""Fixtures for every part's tests: the read-only public data in the `shared` folder beside the checkout."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = (ROOT / ".." / "shared").resolve()

# The test folders tests/data_prep, tests/partner_kit, tests/consortium have no __init__.py and carry the
# packages' names; with `tests/` on sys.path (pytest puts it there for this file) Python would import them
# as namespace packages shadowing the real ones (the editable install's finder comes after the path
# finder). The repository root first on sys.path makes the real, regular packages win.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """`../shared` beside the repository checkout (read-only; write outputs under tmp_path)."""
    if not (SHARED / "data").is_dir():
        pytest.fail(
            f"the public test data is missing: expected {SHARED / 'data'} (the `shared` folder beside the "
            "repository checkout, holding data/raw and data/consortia). Tests read it in place.",
            pytrace=False,
        )
    return SHARED


@pytest.fixture(scope="session")
def shared_data(shared_dir: Path) -> Path:
    """`../shared/data`: raw/ (MoleculeNet wide tables) and consortia/ (partner T0/T1/T2 folders)."""
    return shared_dir / "data"
