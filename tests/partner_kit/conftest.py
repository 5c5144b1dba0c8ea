"""Fixtures for partner_kit tests (helpers live in pk_helpers.py, importable by test modules)."""

from __future__ import annotations

import pytest
from pk_helpers import small_plan, synthetic_data

from consortium.plan import Plan
from data_prep.prepared import PreparedData


@pytest.fixture
def plan() -> Plan:
    return small_plan()


@pytest.fixture
def data(plan: Plan) -> PreparedData:
    return synthetic_data(plan)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny test models run fastest on one thread, and stay fast when other jobs share the CPU cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
