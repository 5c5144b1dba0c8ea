"""Metrics equal scikit-learn/scipy on the same predictions; not-evaluable tasks; weighted aggregation."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from pk_helpers import make_tasks
from scipy import stats
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve

from partner_kit.metrics import (
    calibrated_average_precision,
    classification_metrics,
    evaluate_predictions,
    expected_calibration_error,
    regression_metrics,
)


@pytest.fixture
def scored():
    rng = np.random.default_rng(3)
    y = (rng.random(400) < 0.2).astype(int)
    prob = np.clip(0.2 + 0.35 * y + rng.normal(0, 0.2, 400), 0.001, 0.999)
    prob[:40] = np.round(prob[:40], 1)  # ties, and values on bin edges
    return y, prob


def test_classification_metrics_equal_scikit_learn(scored):
    y, prob = scored
    m = classification_metrics(np.where(y > 0, 1, -1), prob)
    assert m["auc_roc"] == pytest.approx(skm.roc_auc_score(y, prob), abs=1e-12)
    assert m["auc_pr"] == pytest.approx(skm.average_precision_score(y, prob), abs=1e-12)
    assert m["logloss"] == pytest.approx(skm.log_loss(y, prob), abs=1e-9)
    assert m["brier"] == pytest.approx(skm.brier_score_loss(y, prob), abs=1e-12)


def test_calibrated_auc_pr_equals_average_precision_at_the_data_positive_rate(scored):
    y, prob = scored
    assert calibrated_average_precision(y, prob, reference_rate=y.mean()) == pytest.approx(
        skm.average_precision_score(y, prob), abs=1e-12)


def test_calibrated_auc_pr_rescales_precision_to_the_reference_rate(scored):
    y, prob = scored
    # Hand computation at pi0 = 0.1 from scikit-learn's TP/FP counts per threshold.
    fpr, tpr, _ = skm.roc_curve(y, prob, drop_intermediate=False)
    fps, tps = (fpr * (y == 0).sum())[1:], (tpr * y.sum())[1:]   # counts per distinct threshold
    pi, pi0 = y.mean(), 0.1
    precision = tps / (tps + fps * pi * (1 - pi0) / (pi0 * (1 - pi)))
    recall = tps / tps[-1]
    expected = np.sum(np.diff(np.r_[0, recall]) * precision)
    assert calibrated_average_precision(y, prob, 0.1) == pytest.approx(expected, abs=1e-12)
    # A lower reference rate than the data's (0.2) lowers the calibrated value.
    assert calibrated_average_precision(y, prob, 0.1) < skm.average_precision_score(y, prob)


def test_expected_calibration_error_matches_scikit_learn_calibration_curve_bins(scored):
    y, prob = scored
    prob_true, prob_pred = calibration_curve(y, prob, n_bins=10, strategy="uniform")
    counts = np.bincount(np.searchsorted(np.linspace(0, 1, 11)[1:-1], prob), minlength=10)
    counts = counts[counts > 0]
    expected = np.sum(counts / counts.sum() * np.abs(prob_true - prob_pred))
    assert expected_calibration_error(y, prob) == pytest.approx(expected, abs=1e-12)


def test_task_with_one_class_is_not_evaluable_never_half():
    m = classification_metrics(np.array([1, 1, 1]), np.array([0.2, 0.9, 0.4]))
    assert all(math.isnan(v) for v in m.values())


def test_regression_metrics_equal_scikit_learn_and_scipy():
    rng = np.random.default_rng(0)
    y = rng.normal(6, 1, 100)
    pred = y + rng.normal(0, 0.5, 100)
    m = regression_metrics(y, pred)
    assert m["rmse"] == pytest.approx(math.sqrt(skm.mean_squared_error(y, pred)), abs=1e-12)
    assert m["r2"] == pytest.approx(skm.r2_score(y, pred), abs=1e-12)
    assert m["pearson_r"] == pytest.approx(stats.pearsonr(y, pred)[0], abs=1e-12)
    assert all(math.isnan(v) for v in regression_metrics(np.array([5.0, 5.0]), np.array([1.0, 2.0])).values())


def test_evaluate_predictions_flags_not_evaluable_tasks_and_weights_the_aggregate():
    tasks = make_tasks(3, 2)
    tasks["aggregation_weight"] = [1.0, 3.0, 1.0, 1.0, 0.0]
    rng = np.random.default_rng(1)
    n = 60
    yc = np.zeros((n, 3))
    yc[:, 0] = np.where(rng.random(n) < 0.3, 1, -1)
    yc[:, 1] = np.where(rng.random(n) < 0.5, 1, -1)
    yc[:30, 2] = -1                        # only inactives: not evaluable
    prob = rng.random((n, 3))
    yr = np.zeros((n, 2))
    yr[:, 0] = rng.normal(5, 1, n)
    yr[:, 1] = rng.normal(7, 1, n)
    censor = np.zeros((n, 2), np.int8)
    censor[:10, 0] = 1                     # censored values are left out of regression metrics
    regr = yr + rng.normal(0, 0.3, (n, 2))
    ev = evaluate_predictions(tasks, sp.csr_matrix(yc), prob, sp.csr_matrix(yr), sp.csr_matrix(censor), regr)
    table = ev.per_task
    assert table["evaluable"].tolist() == [True, True, False, True, True]
    assert math.isnan(table.loc[2, "auc_roc"]) and table.loc[2, "n_neg"] == 30 and table.loc[2, "n_pos"] == 0
    aucs = [skm.roc_auc_score(yc[:, j] > 0, prob[:, j]) for j in (0, 1)]
    assert ev["auc_roc"] == pytest.approx((aucs[0] + 3 * aucs[1]) / 4, abs=1e-12)
    assert ev.aggregate["n_class_evaluable"] == 2 and ev.aggregate["n_class_tasks"] == 3
    exact = censor[:, 0] == 0
    assert table.loc[3, "n"] == exact.sum() and table.loc[3, "n_censored"] == 10
    # regression task 4 has aggregation weight 0, so the aggregate is task 3's value
    assert ev["rmse"] == pytest.approx(math.sqrt(skm.mean_squared_error(yr[exact, 0], regr[exact, 0])))
    d = ev.to_dict()
    assert d["per_task"][2]["auc_roc"] is None
    pd.DataFrame(d["per_task"])  # JSON-ready records
