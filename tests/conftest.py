"""Fixtures for every part's tests, and the one place that decides what happens without `../shared`.

The public test data (`../shared/data`: raw MoleculeNet tables and partner consortia) sits beside the checkout in
CI but not in a fresh clone. A test that needs it asks for the `shared_data` / `shared_dir` fixture or carries the
`needs_shared` marker; without the folder such tests skip with one line naming it, so the rest of the suite (which
uses `examples/` or data the tests make) still runs. `FEDQSAR_REQUIRE_SHARED=1` (set by `.ci/run`) turns the
skip into a failure, so CI cannot go green by skipping.
"""

from __future__ import annotations

import os
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

MISSING_SHARED = (f"needs the public test data in {SHARED / 'data'} (the `shared` folder beside the checkout); "
                  "absent here")


def _require_shared() -> None:
    """Skip the calling test when `../shared/data` is absent (fail instead under FEDQSAR_REQUIRE_SHARED=1)."""
    if (SHARED / "data").is_dir():
        return
    if os.environ.get("FEDQSAR_REQUIRE_SHARED") == "1":
        pytest.fail(f"FEDQSAR_REQUIRE_SHARED=1 but the test {MISSING_SHARED}", pytrace=False)
    pytest.skip(MISSING_SHARED)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "needs_shared: reads ../shared/data; skipped with a reason when it is absent")


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("needs_shared") is not None:
        _require_shared()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """`../shared` beside the repository checkout (read-only; write outputs under tmp_path)."""
    _require_shared()
    return SHARED


@pytest.fixture(scope="session")
def shared_data(shared_dir: Path) -> Path:
    """`../shared/data`: raw/ (MoleculeNet wide tables) and consortia/ (partner T0/T1/T2 folders)."""
    return shared_dir / "data"
