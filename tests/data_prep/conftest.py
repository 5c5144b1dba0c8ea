"""data_prep test fixtures: one cache of standardized structures shared by the slow end-to-end tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def std_cache(tmp_path_factory) -> Path:
    """Shared by the consortium and demo tests: the same chemicals recur across partners and sets."""
    return tmp_path_factory.mktemp("std-cache")
