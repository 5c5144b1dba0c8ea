"""The simulate table: means over seeds with their spread, and no table at all when nothing is evaluable."""

from __future__ import annotations

import math

import pytest
from rich.console import Console

from consortium.plan import Plan
from consortium.simulate import any_evaluable, seed_dir, seed_values, summary_table
from data_prep.errors import InputError


def _row(seed: int, partner: str, single: float, fed: float, pooled: float = math.nan) -> dict:
    nan = math.nan
    return {"seed": seed, "partner": partner, "tasks": 3, "class_tasks": 3, "regr_tasks": 0, "best_round": 4,
            "single_auc_pr": single, "federated_auc_pr": fed, "pooled_auc_pr": pooled, "delta_auc_pr": fed - single,
            "single_auc_roc": nan, "federated_auc_roc": nan, "pooled_auc_roc": nan, "delta_auc_roc": nan,
            "single_r2": nan, "federated_r2": nan, "pooled_r2": nan, "delta_r2": nan}


def test_table_gives_the_mean_and_sd_over_seeds():
    rows = [_row(0, "A", 0.30, 0.34, 0.36), _row(1, "A", 0.32, 0.34, 0.35), _row(0, "B", 0.5, 0.5, 0.5),
            _row(1, "B", 0.5, 0.52, 0.5)]
    console = Console(width=200, record=True)
    console.print(summary_table(rows, "t"))
    text = console.export_text()
    # A: single mean 0.310 ± 0.014, Δ mean +0.030 ± 0.014; pooled shown because it was trained.
    assert "0.310 ±0.014" in text and "+0.030 ±0.014" in text and "0.355 ±0.007" in text
    assert "mean ± SD over 2 seeds" in text


def test_nothing_evaluable_is_detected():
    nan = math.nan
    assert not any_evaluable([_row(0, "A", nan, nan)])
    assert any_evaluable([_row(0, "A", nan, 0.2)])


def test_seeds_follow_the_plan_seed_and_get_their_own_directories(tmp_path):
    plan = Plan()
    assert seed_values(plan, 3) == [plan.training.seed, plan.training.seed + 1, plan.training.seed + 2]
    assert seed_dir(tmp_path, 5, 1) == tmp_path and seed_dir(tmp_path, 5, 3) == tmp_path / "seeds" / "5"
    with pytest.raises(InputError):
        seed_values(plan, 0)
