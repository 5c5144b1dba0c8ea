"""Per-task and aggregated metrics of a partner's predictions on one fold.

Classification: AUC-ROC, AUC-PR (average precision), calibrated AUC-PR (precision rescaled to a reference
positive rate, default 0.1, as MELLODDY reported it; Siblini et al. 2020), log-loss, Brier score and expected
calibration error (10 equal-width probability bins, bins weighted by their share of the examples).
Regression (uncensored '=' values only, since a censored value is a bound, not a measurement): RMSE, R²,
Pearson r, Spearman ρ. Aggregates are `aggregation_weight`-weighted means over the tasks evaluable in the fold;
a task lacking both classes is "not evaluable": NaN with a flag, never 0.5. A regression task is evaluable on a
fold only with `min_values` uncensored values and a standard deviation of at least `min_std` there (the plan's
`tasks.min_eval_regression_*`, MELLODDY-TUNER's rule): R² of a near-constant fold (e.g. fifteen values of 11.9 and
one of 12.0) says nothing and would dominate the aggregate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats

REFERENCE_POSITIVE_RATE = 0.1
ECE_BINS = 10
CLASS_METRICS = ("auc_roc", "auc_pr", "auc_pr_cal", "logloss", "brier", "ece")
REGR_METRICS = ("rmse", "r2", "pearson_r", "spearman_r")
_EPS = 1e-7


def _binary_counts(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative true and false positives at each distinct score threshold, highest threshold first."""
    order = np.argsort(-score, kind="mergesort")
    y, score = y[order], score[order]
    last_of_run = np.r_[np.flatnonzero(np.diff(score)), y.size - 1]
    tp = np.cumsum(y)[last_of_run]
    fp = (last_of_run + 1) - tp
    return tp.astype(np.float64), fp.astype(np.float64)


def _ranking_metrics(y: np.ndarray, score: np.ndarray, reference_rate: float) -> tuple[float, float, float]:
    """(AUC-ROC, average precision, calibrated average precision) from one sort of the scores.

    Same definitions as scikit-learn's `roc_auc_score` (trapezoids, ties as one step) and
    `average_precision_score` (sum of recall steps times precision); computed here in one vectorised pass
    because scikit-learn's per-call input validation dominates when hundreds of tasks are scored every epoch.
    The tests check equality with scikit-learn.
    """
    tp, fp = _binary_counts(y, score)
    n_pos, n_neg = tp[-1], fp[-1]
    tpr, fpr = np.r_[0.0, tp / n_pos], np.r_[0.0, fp / n_neg]
    auc_roc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    recall_step = np.diff(tpr)
    average_precision = float(np.sum(recall_step * tp / (tp + fp)))
    pi = n_pos / (n_pos + n_neg)
    ratio = pi * (1 - reference_rate) / (reference_rate * (1 - pi))
    calibrated = float(np.sum(recall_step * tp / (tp + fp * ratio)))
    return auc_roc, average_precision, calibrated


def calibrated_average_precision(y: np.ndarray, score: np.ndarray,
                                 reference_rate: float = REFERENCE_POSITIVE_RATE) -> float:
    """Average precision with precision computed as if the positive rate were `reference_rate`.

    precision_c = TP / (TP + FP * pi (1 - pi0) / (pi0 (1 - pi))), pi = the fold's positive rate, pi0 the
    reference; summed over recall steps like scikit-learn's `average_precision_score`. With pi0 = pi it is the
    plain average precision, and tasks with different base rates become comparable.
    """
    y = np.asarray(y).astype(bool)
    pi = y.mean()
    if pi in (0.0, 1.0):
        return math.nan
    return _ranking_metrics(y, np.asarray(score, dtype=np.float64), reference_rate)[2]


def expected_calibration_error(y: np.ndarray, prob: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """sum over equal-width bins of (bin share) * |observed positive rate - mean predicted probability|.

    Bin edges 0, 1/n, ..., 1; a probability equal to an inner edge goes to the lower bin (searchsorted left),
    the same binning as scikit-learn's `calibration_curve(strategy="uniform")`.
    """
    y = np.asarray(y, dtype=np.float64)
    prob = np.asarray(prob, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.searchsorted(edges[1:-1], prob)
    counts = np.bincount(idx, minlength=n_bins)
    gap = np.abs(np.bincount(idx, y, n_bins) - np.bincount(idx, prob, n_bins))
    return float(gap.sum() / max(counts.sum(), 1))


def classification_metrics(y: np.ndarray, prob: np.ndarray,
                           reference_rate: float = REFERENCE_POSITIVE_RATE) -> dict[str, float]:
    """Metrics of one task; `y` in {0,1} or {-1,+1}. NaN everywhere unless both classes are present."""
    y = (np.asarray(y) > 0).astype(np.float64)
    prob = np.asarray(prob, dtype=np.float64)
    if y.size == 0 or y.min() == y.max():
        return dict.fromkeys(CLASS_METRICS, math.nan)
    auc_roc, auc_pr, auc_pr_cal = _ranking_metrics(y, prob, reference_rate)
    clipped = np.clip(prob, _EPS, 1 - _EPS)
    return {
        "auc_roc": auc_roc,
        "auc_pr": auc_pr,
        "auc_pr_cal": auc_pr_cal,
        "logloss": float(-np.mean(y * np.log(clipped) + (1 - y) * np.log1p(-clipped))),
        "brier": float(np.mean((prob - y) ** 2)),
        "ece": expected_calibration_error(y, prob),
    }


def regression_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """RMSE, R², Pearson r and Spearman ρ of one task; NaN unless there are two distinct true values."""
    y = np.asarray(y, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    if y.size < 2 or np.all(y == y[0]):
        return dict.fromkeys(REGR_METRICS, math.nan)
    constant = bool(np.all(pred == pred[0]))
    r = math.nan if constant else float(stats.pearsonr(y, pred)[0])
    rho = math.nan if constant else float(stats.spearmanr(y, pred)[0])
    sse = float(np.sum((y - pred) ** 2))
    return {
        "rmse": math.sqrt(sse / y.size),
        "r2": 1.0 - sse / float(np.sum((y - y.mean()) ** 2)),
        "pearson_r": r,
        "spearman_r": rho,
    }


@dataclass
class Evaluation:
    """Metrics of one fold: `per_task` (one row per task, `evaluable` flag) and `aggregate` (weighted means)."""

    per_task: pd.DataFrame
    aggregate: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: NaN becomes None."""
        clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in self.aggregate.items()}
        rows = self.per_task.astype(object).where(self.per_task.notna(), None).to_dict(orient="records")
        return {"aggregate": clean, "per_task": rows}

    def __getitem__(self, key: str) -> float:
        return self.aggregate[key]


def _weighted_mean(values: pd.Series, weights: pd.Series) -> float:
    ok = values.notna() & (weights > 0)
    if not ok.any():
        return math.nan
    return float(np.average(values[ok], weights=weights[ok]))


def evaluate_predictions(tasks: pd.DataFrame, y_class: sp.csr_matrix, prob: np.ndarray,
                         y_regr: sp.csr_matrix, y_censor: sp.csr_matrix, regr_pred: np.ndarray,
                         reference_rate: float = REFERENCE_POSITIVE_RATE, *, min_values: int = 10,
                         min_std: float = 0.5) -> Evaluation:
    """Score dense predictions (rows x tasks) against the sparse labels of the same rows.

    `min_values` / `min_std`: the regression evaluation quorum on this fold (see the module docstring).
    """
    class_tasks = tasks[tasks["kind"] == "classification"]
    regr_tasks = tasks[tasks["kind"] == "regression"]
    records: list[dict[str, Any]] = []
    yc = sp.csc_matrix(y_class)
    for j, (_, task) in enumerate(class_tasks.iterrows()):
        start, end = yc.indptr[j], yc.indptr[j + 1]
        rows, labels = yc.indices[start:end], yc.data[start:end]
        m = classification_metrics(labels, prob[rows, j], reference_rate)
        records.append({"task_index": int(task["task_index"]), "kind": "classification",
                        "input_assay_id": task["input_assay_id"], "n": int(labels.size),
                        "n_pos": int((labels > 0).sum()), "n_neg": int((labels < 0).sum()),
                        "evaluable": not math.isnan(m["auc_roc"]), **m})
    yr = sp.csc_matrix(y_regr)
    censor_flags = sp.csr_matrix(y_censor).toarray()
    for j, (_, task) in enumerate(regr_tasks.iterrows()):
        start, end = yr.indptr[j], yr.indptr[j + 1]
        rows, values = yr.indices[start:end], yr.data[start:end]
        censor = censor_flags[rows, j]
        exact = censor == 0
        y_exact = values[exact]
        quorum = y_exact.size >= max(min_values, 2) and float(np.std(y_exact)) >= min_std
        m = (regression_metrics(y_exact, regr_pred[rows[exact], j]) if quorum
             else dict.fromkeys(REGR_METRICS, math.nan))
        records.append({"task_index": int(task["task_index"]), "kind": "regression",
                        "input_assay_id": task["input_assay_id"], "n": int(exact.sum()),
                        "n_censored": int((~exact).sum()), "evaluable": not math.isnan(m["rmse"]), **m})
    columns = ["task_index", "kind", "input_assay_id", "n", "n_pos", "n_neg", "n_censored", "evaluable",
               *CLASS_METRICS, *REGR_METRICS]
    per_task = pd.DataFrame.from_records(records, columns=columns)
    weights = per_task["task_index"].map(tasks.set_index("task_index")["aggregation_weight"]).astype(float)
    aggregate: dict[str, float] = {}
    for name in (*CLASS_METRICS, *REGR_METRICS):
        aggregate[name] = _weighted_mean(per_task[name].astype(float), weights)
    is_class = per_task["kind"] == "classification"
    aggregate["n_class_tasks"] = int(is_class.sum())
    aggregate["n_class_evaluable"] = int((per_task["evaluable"] & is_class).sum())
    aggregate["n_regr_tasks"] = int((~is_class).sum())
    aggregate["n_regr_evaluable"] = int((per_task["evaluable"] & ~is_class).sum())
    # Tasks that enter the aggregates: evaluable on this fold and with aggregation weight > 0.
    scored = per_task["evaluable"].astype(bool) & (weights > 0)
    aggregate["n_class_scored"] = int((scored & is_class).sum())
    aggregate["n_regr_scored"] = int((scored & ~is_class).sum())
    return Evaluation(per_task=per_task, aggregate=aggregate)
