"""Statistics of a variant comparison (single vs federated vs pooled), the way a MELLODDY reviewer reads them.

Pure numpy/scipy, no model code: inputs are per-task test labels and predictions (one array per variant and
seed), outputs JSON-ready dicts.

- Per-task metrics: AUC-PR (scikit-learn's `average_precision_score`), AUC-ROC (`roc_auc_score`), calibrated
  AUC-PR (precision rescaled to a 10 % positive rate, as MELLODDY reported it), R² for regression; all of them
  also with integer sample weights, which is how a bootstrap replicate of the test compounds is scored without
  copying rows.
- Bootstrap (percentile, 95 %): each replicate redraws the partner's test compounds (one draw shared by every
  variant and seed, so differences stay paired), the tasks, and the seeds; a statistic over tasks is computed per
  seed and averaged over the drawn seeds. The interval is therefore about the test set, the task panel and the
  training seed together.
- DeLong's test for two correlated AUC-ROCs (fast version, Sun & Xu 2014) per task on seed-averaged
  predictions, Benjamini–Yekutieli-adjusted across tasks (valid under any dependence between tasks).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

REFERENCE_POSITIVE_RATE = 0.1
CLASS_METRICS = ("auc_pr", "auc_roc", "auc_pr_cal")
REGR_METRICS = ("r2", "pearson_r")
METRICS = (*CLASS_METRICS, *REGR_METRICS)
METRIC_KIND = {**dict.fromkeys(CLASS_METRICS, "classification"), **dict.fromkeys(REGR_METRICS, "regression")}
VARIANTS = ("single", "federated", "pooled")
#: (a, b): statistics of a − b
PAIRS = (("federated", "single"), ("pooled", "single"), ("federated", "pooled"))
ALPHA = 0.05
DEFAULT_REPLICATES = 1000
_CHUNK = 200  # replicates scored at once: bounds memory to ~_CHUNK x (rows of the largest task) floats


# ---- metrics (weighted; weights None = every row once) ------------------------------------------------------
def ranking_metrics(y: np.ndarray, score: np.ndarray, weights: np.ndarray | None = None,
                    reference_rate: float = REFERENCE_POSITIVE_RATE) -> dict[str, np.ndarray]:
    """AUC-PR, AUC-ROC and calibrated AUC-PR of one task, for each row of `weights` (shape (B, n)) at once.

    One sort of the scores serves every replicate: thresholds are the distinct scores (ties form one step, as in
    scikit-learn), true/false positives are cumulative weight sums at the last row of each tie run. A replicate
    without both classes gives NaN. With `weights` None the result has shape (1,) and is computed in float64;
    replicate weights (integer counts, exact in float32) are summed in float32 to halve the memory traffic.
    """
    if weights is None:
        return _ranking_columns(y, score, np.ones((np.asarray(y).size, 1), np.float64), reference_rate)
    cols = np.atleast_2d(np.asarray(weights)).T
    if np.any(cols != np.round(cols)):  # non-integer weights: float32 sums
        return _ranking_columns(y, score, cols.astype(np.float32), reference_rate)
    return _ranking_columns(y, score, cols.astype(np.int32), reference_rate)


def _ranking_columns(y: np.ndarray, score: np.ndarray, w: np.ndarray,
                     reference_rate: float = REFERENCE_POSITIVE_RATE) -> dict[str, np.ndarray]:
    """`ranking_metrics` with weights as columns, (n, B).

    Written as sums over the positives, which is the same as scikit-learn's sums over thresholds: with TP(i)
    and FP(i) the positive and negative weight scored >= positive i (its tie run included) and FP'(i) the
    negative weight scored > it,
        AUC-PR  = sum_i w_i TP(i) / (TP(i) + FP(i)) / P,   calibrated: FP(i) scaled by pi (1 - pi0) / (pi0 (1 - pi)),
        AUC-ROC = sum_i w_i (N - (FP(i) + FP'(i)) / 2) / (P N)   (trapezoids: ties count half).
    Only one cumulative sum over the rows is needed (negatives and positives apart), and the rest runs over
    the positives alone.
    """
    return _ranking_apply(_rank_order(y, score), w, reference_rate)


@dataclass(frozen=True)
class _RankOrder:
    """What `_ranking_apply` needs from one sort of a task's scores (computed once, reused for every replicate)."""

    neg: np.ndarray  # row positions of the negatives, highest score first
    pos: np.ndarray  # row positions of the positives, highest score first
    fp_incl: np.ndarray  # per positive (that order): how many negatives score >= it
    fp_strict: np.ndarray  # ... score > it
    tp_incl: np.ndarray  # ... how many positives score >= it


def _rank_order(y: np.ndarray, score: np.ndarray) -> _RankOrder:
    y = np.asarray(y, dtype=bool)
    score = np.asarray(score, dtype=np.float64)
    neg_rows, pos_rows = np.flatnonzero(~y), np.flatnonzero(y)
    neg_order = np.argsort(-score[neg_rows], kind="mergesort")
    pos_order = np.argsort(-score[pos_rows], kind="mergesort")
    neg_key, pos_key = -score[neg_rows][neg_order], -score[pos_rows][pos_order]
    return _RankOrder(neg=neg_rows[neg_order], pos=pos_rows[pos_order],
                      fp_incl=np.searchsorted(neg_key, pos_key, side="right"),
                      fp_strict=np.searchsorted(neg_key, pos_key, side="left"),
                      tp_incl=np.searchsorted(pos_key, pos_key, side="right"))


def _ranking_apply(order: _RankOrder, w: np.ndarray,
                   reference_rate: float = REFERENCE_POSITIVE_RATE) -> dict[str, np.ndarray]:
    # integer counts are summed as int32 (exact, and twice as fast as float cumulative sums), then used as float32
    dtype = np.float64 if w.dtype == np.float64 else np.float32
    wn, wp = w[order.neg], w[order.pos]
    cum_neg = np.zeros((wn.shape[0] + 1, w.shape[1]), w.dtype)
    np.cumsum(wn, axis=0, out=cum_neg[1:])
    cum_pos = np.zeros((wp.shape[0] + 1, w.shape[1]), w.dtype)
    np.cumsum(wp, axis=0, out=cum_pos[1:])
    fp_incl = cum_neg[order.fp_incl].astype(dtype)
    fp_strict = cum_neg[order.fp_strict].astype(dtype)
    tp_incl = cum_pos[order.tp_incl].astype(dtype)
    wp = wp.astype(dtype)
    n_pos, n_neg = cum_pos[-1].astype(np.float64), cum_neg[-1].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc_roc = (np.sum(wp * (n_neg.astype(dtype) - (fp_incl + fp_strict) / 2), axis=0, dtype=np.float64)
                   / (n_pos * n_neg))
        # tp_incl >= w_i, so a zero denominator only occurs in terms multiplied by w_i = 0
        auc_pr = np.sum(wp * tp_incl / np.maximum(tp_incl + fp_incl, 1e-30), axis=0, dtype=np.float64) / n_pos
        pi = n_pos / (n_pos + n_neg)
        ratio = (pi * (1 - reference_rate) / (reference_rate * (1 - pi))).astype(dtype)
        cal = np.sum(wp * tp_incl / np.maximum(tp_incl + fp_incl * ratio, 1e-30), axis=0, dtype=np.float64) / n_pos
    nan = np.where((n_pos > 0) & (n_neg > 0), 0.0, np.nan)
    return {"auc_pr": auc_pr + nan, "auc_roc": auc_roc + nan, "auc_pr_cal": cal + nan}


def r2_score(y: np.ndarray, pred: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Coefficient of determination (scikit-learn's `r2_score`, sample weights allowed) per weight row; NaN if
    the weighted values are constant."""
    y = np.asarray(y, np.float64)
    pred = np.asarray(pred, np.float64)
    w = np.ones((1, y.size), np.float64) if weights is None else np.atleast_2d(np.asarray(weights, np.float64))
    total = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (w @ y) / total
        ss_tot = w @ (y * y) - total * mean * mean
        ss_res = w @ ((y - pred) ** 2)
        r2 = 1.0 - ss_res / ss_tot
    return np.where(ss_tot > 1e-12 * np.maximum(w @ (y * y), 1e-300), r2, np.nan)


def pearson_r(y: np.ndarray, pred: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Pearson correlation (scipy's `pearsonr` on the rows repeated by their weights) per weight row; NaN if
    either side is constant."""
    y = np.asarray(y, np.float64)
    pred = np.asarray(pred, np.float64)
    w = np.ones((1, y.size), np.float64) if weights is None else np.atleast_2d(np.asarray(weights, np.float64))
    # centre on the unweighted means first: the weighted moments below then lose no precision
    yc, pc = y - y.mean(), pred - pred.mean()
    total = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        my, mp = (w @ yc) / total, (w @ pc) / total
        cov = (w @ (yc * pc)) / total - my * mp
        vy = (w @ (yc * yc)) / total - my * my
        vp = (w @ (pc * pc)) / total - mp * mp
        r = cov / np.sqrt(vy * vp)
    # constant in this draw (up to rounding, relative to the full set's spread) or in the full set: undefined
    ok = (vy > 1e-12 * max(float(np.mean(yc * yc)), 1e-300)) & (vp > 1e-12 * max(float(np.mean(pc * pc)), 1e-300))
    return np.where(ok, np.clip(r, -1.0, 1.0), np.nan)


def task_metrics(kind: str, y: np.ndarray, pred: np.ndarray,
                 weights: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Every metric of `METRICS` for one task (NaN for the other kind's metrics); `weights` (B, n) or None."""
    cols = None if weights is None else np.atleast_2d(np.asarray(weights)).T.astype(np.float32)
    return _task_metrics_columns(kind, y, pred, cols)


def _task_metrics_columns(kind: str, y: np.ndarray, pred: np.ndarray, cols: np.ndarray | None) -> dict[str, np.ndarray]:
    n_rep = 1 if cols is None else cols.shape[1]
    out = dict.fromkeys(METRICS, np.full(n_rep, np.nan))
    if kind == "classification":
        w = np.ones((np.asarray(y).size, 1), np.float64) if cols is None else cols
        out.update(_ranking_columns(y, pred, w))
    else:
        w = None if cols is None else cols.T.astype(np.float64)
        out["r2"] = r2_score(y, pred, w)
        out["pearson_r"] = pearson_r(y, pred, w)
    return out


# ---- DeLong ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DeLongResult:
    auc_a: float
    auc_b: float
    var_a: float
    var_b: float
    cov: float
    z: float
    p: float


def delong_test(y: np.ndarray, score_a: np.ndarray, score_b: np.ndarray) -> DeLongResult:
    """Two-sided DeLong test of AUC(a) = AUC(b) on the same rows (fast midrank algorithm, Sun & Xu 2014).

    Structural components: V10(x_i) = share of negatives scored below positive i (ties ½), V01(y_j) = share of
    positives scored above negative j; Var(AUC_a − AUC_b) = (S10 contrast)/m + (S01 contrast)/n. Identical
    predictions give z = 0, p = 1.
    """
    y = np.asarray(y, dtype=bool)
    m, n = int(y.sum()), int((~y).sum())
    if m < 2 or n < 2:
        raise ValueError("DeLong needs at least two positives and two negatives")
    v10, v01, auc = [], [], []
    for score in (np.asarray(score_a, np.float64), np.asarray(score_b, np.float64)):
        tz = sps.rankdata(score)
        tx = sps.rankdata(score[y])
        ty = sps.rankdata(score[~y])
        auc.append((tz[y].sum() - m * (m + 1) / 2) / (m * n))
        v10.append((tz[y] - tx) / n)
        v01.append(1.0 - (tz[~y] - ty) / m)
    s10 = np.cov(np.vstack(v10))
    s01 = np.cov(np.vstack(v01))
    s = s10 / m + s01 / n
    var_diff = s[0, 0] + s[1, 1] - 2 * s[0, 1]
    diff = auc[0] - auc[1]
    if var_diff <= 1e-15:
        z, p = 0.0, 1.0
    else:
        z = diff / math.sqrt(var_diff)
        p = float(2 * sps.norm.sf(abs(z)))
    return DeLongResult(float(auc[0]), float(auc[1]), float(s[0, 0]), float(s[1, 1]), float(s[0, 1]),
                        float(z), p)


def by_adjust(p: Sequence[float]) -> np.ndarray:
    """Benjamini–Yekutieli adjusted p-values (scipy's `false_discovery_control(method="by")`); NaN stays NaN."""
    p = np.asarray(p, np.float64)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    if ok.any():
        out[ok] = sps.false_discovery_control(p[ok], method="by")
    return out


# ---- per-partner evaluation data -------------------------------------------------------------------------
@dataclass
class TaskPanel:
    """One partner's evaluable test tasks with every variant's predictions aligned on the same rows.

    `pos[t]` indexes `rows` (the partner's distinct test compounds) for task t's labelled rows, `y[t]` the labels,
    `pred[variant][t]` an (n_seeds, n_t) array in `seeds` order.
    """

    partner: str
    tasks: pd.DataFrame  # task_index, kind, input_assay_id, assay_type, n, n_pos, n_neg, aggregation_weight
    rows: np.ndarray
    pos: list[np.ndarray]
    y: list[np.ndarray]
    pred: dict[str, list[np.ndarray]]
    seeds: list[int]
    excluded: pd.DataFrame = field(default_factory=pd.DataFrame)  # tasks below the evaluation quorum, with why

    @property
    def variants(self) -> list[str]:
        return [v for v in VARIANTS if v in self.pred]


@dataclass(frozen=True)
class Quorum:
    """Evaluation quorum per fold (the plan's `tasks.min_eval_*`; regression defaults as MELLODDY-TUNER)."""

    min_actives: int = 10
    min_inactives: int = 10
    min_regression_values: int = 10
    min_regression_std: float = 0.5

    @classmethod
    def from_plan(cls, plan: dict[str, Any]) -> Quorum:
        rules = plan.get("tasks", {}) if isinstance(plan, dict) else {}
        return cls(int(rules.get("min_eval_actives_per_fold", 10)), int(rules.get("min_eval_inactives_per_fold", 10)),
                   int(rules.get("min_eval_regression_values_per_fold", 10)),
                   float(rules.get("min_eval_regression_std", 0.5)))

    def reason(self, kind: str, y: np.ndarray) -> str | None:
        """Why a task's fold labels miss the quorum, or None when it counts."""
        if kind == "classification":
            n_pos, n_neg = int((y > 0).sum()), int((y <= 0).sum())
            if n_pos < self.min_actives or n_neg < self.min_inactives:
                return (f"{n_pos} actives / {n_neg} inactives (needs {self.min_actives} / "
                        f"{self.min_inactives})")
            return None
        if y.size < max(self.min_regression_values, 2):
            return f"{y.size} uncensored values (needs {self.min_regression_values})"
        if float(np.std(y)) < self.min_regression_std:
            return f"standard deviation {float(np.std(y)):.3g} (needs {self.min_regression_std})"
        return None


def build_panel(partner: str, tasks: pd.DataFrame, predictions: dict[tuple[str, int], pd.DataFrame],
                quorum: Quorum, assay_types: dict[str, str] | None = None, test_fold: int = 0) -> TaskPanel:
    """Align the variants' long-format test predictions (key (variant, seed)) into a `TaskPanel`.

    Regression tasks keep their uncensored rows only. Every variant and seed must hold the same (row, task)
    pairs with the same labels, else ValueError naming the first mismatch (the caller turns it into an
    InputError naming the files).
    """
    assay_types = assay_types or {}
    seeds = sorted({s for _, s in predictions})
    variants = [v for v in VARIANTS if any(k[0] == v for k in predictions)]
    for v in variants:
        missing = [s for s in seeds if (v, s) not in predictions]
        if missing:
            raise ValueError(f"variant '{v}' lacks seed(s) {missing} that other variants have")
    ref_key = (variants[0], seeds[0])
    frames = {}
    for key, frame in predictions.items():
        f = frame[(frame["kind"] == "classification") | (frame["censor"] == 0)]
        frames[key] = f.sort_values(["task_index", "row"], kind="stable").reset_index(drop=True)
    ref = frames[ref_key]
    for key, f in frames.items():
        if len(f) != len(ref) or not (np.array_equal(f["row"].to_numpy(), ref["row"].to_numpy())
                                      and np.array_equal(f["task_index"].to_numpy(), ref["task_index"].to_numpy())
                                      and np.allclose(f["y"].to_numpy(), ref["y"].to_numpy())):
            raise ValueError(f"{key[0]} (seed {key[1]}) was scored on other test rows or labels than "
                             f"{ref_key[0]} (seed {ref_key[1]}); compare models of the same prepared data and folds")
    info = tasks.set_index("task_index")
    rows = np.unique(ref["row"].to_numpy())
    keep, excluded, pos, ys = [], [], [], []
    pred: dict[str, list[np.ndarray]] = {v: [] for v in variants}
    bounds = np.flatnonzero(np.diff(ref["task_index"].to_numpy())) + 1
    starts = np.r_[0, bounds]
    ends = np.r_[bounds, len(ref)]
    for start, end in zip(starts, ends, strict=True):
        if end <= start:
            continue
        t = int(ref["task_index"].iat[start])
        kind = str(ref["kind"].iat[start])
        y = ref["y"].to_numpy()[start:end]
        meta = info.loc[t] if t in info.index else pd.Series(dtype=object)
        assay = str(meta.get("input_assay_id", t))
        weight = float(meta.get("aggregation_weight", 1.0) if pd.notna(meta.get("aggregation_weight", 1.0)) else 1.0)
        why = quorum.reason(kind, y) or (None if weight > 0 else "aggregation_weight 0")
        record = {"task_index": t, "test_fold": int(test_fold), "kind": kind, "input_assay_id": assay,
                  "assay_type": assay_types.get(assay, "unknown"), "n": int(y.size),
                  "n_pos": int((y > 0).sum()) if kind == "classification" else None,
                  "n_neg": int((y <= 0).sum()) if kind == "classification" else None,
                  "aggregation_weight": weight}
        if why:
            excluded.append({**record, "reason": why})
            continue
        keep.append(record)
        pos.append(np.searchsorted(rows, ref["row"].to_numpy()[start:end]))
        ys.append(y)
        for v in variants:
            pred[v].append(np.vstack([frames[(v, s)]["pred"].to_numpy()[start:end] for s in seeds]))
    labelled = set(ref["task_index"].unique().tolist())
    for t, meta in info.iterrows():
        if int(t) not in labelled:
            assay = str(meta.get("input_assay_id", t))
            excluded.append({"task_index": int(t), "test_fold": int(test_fold), "kind": str(meta.get("kind")),
                             "input_assay_id": assay,
                             "assay_type": assay_types.get(assay, "unknown"), "n": 0, "n_pos": None, "n_neg": None,
                             "aggregation_weight": meta.get("aggregation_weight"),
                             "reason": "no uncensored label in the test fold"})
    columns = ["task_index", "test_fold", "kind", "input_assay_id", "assay_type", "n", "n_pos", "n_neg",
               "aggregation_weight"]
    return TaskPanel(partner=partner, tasks=pd.DataFrame.from_records(keep, columns=columns), rows=rows, pos=pos,
                     y=ys, pred=pred, seeds=seeds,
                     excluded=pd.DataFrame.from_records(excluded, columns=[*columns, "reason"]))


def merge_panels(panels: Sequence[TaskPanel]) -> TaskPanel:
    """One partner's panels of several test folds as one: tasks side by side (a task tested on two folds counts
    twice, once per fold), compounds the union of the folds' (disjoint) test compounds, so a bootstrap replicate
    redraws all of them. Every panel must hold the same variants and as many seeds (with `simulate --rotate` each
    fold has its own seed: the merged seed axis is then labelled 'a/b/c', one seed per fold)."""
    first = panels[0]
    for p in panels[1:]:
        if len(p.seeds) != len(first.seeds) or p.variants != first.variants:
            raise ValueError(f"test folds {int(first.tasks['test_fold'].iat[0]) if len(first.tasks) else '?'} and "
                             f"{int(p.tasks['test_fold'].iat[0]) if len(p.tasks) else '?'} were run with different "
                             "seeds or variants")
    rows = np.unique(np.concatenate([p.rows for p in panels]))
    if rows.size != sum(p.rows.size for p in panels):
        raise ValueError("the test folds share compounds; folds must partition the partner's rows")
    pos = [np.searchsorted(rows, p.rows[i]) for p in panels for i in p.pos]
    return TaskPanel(partner=first.partner, tasks=pd.concat([p.tasks for p in panels], ignore_index=True),
                     rows=rows, pos=pos, y=[y for p in panels for y in p.y],
                     pred={v: [a for p in panels for a in p.pred[v]] for v in first.variants},
                     seeds=first.seeds if all(p.seeds == first.seeds for p in panels) else
                     ["/".join(str(p.seeds[k]) for p in panels) for k in range(len(first.seeds))],
                     excluded=pd.concat([p.excluded for p in panels], ignore_index=True))


# ---- metrics of every task, variant, seed, replicate ---------------------------------------------------------
@dataclass
class PanelScores:
    """`point[v][metric]`: (S, T) metric on the full test set; `boot[v][metric]`: (S, B, T) per replicate."""

    panel: TaskPanel
    point: dict[str, dict[str, np.ndarray]]
    boot: dict[str, dict[str, np.ndarray]]


def score_panel(panel: TaskPanel, n_boot: int = DEFAULT_REPLICATES,
                rng: np.random.Generator | None = None) -> PanelScores:
    """Every metric for every (variant, seed, task), on the test set and on `n_boot` compound resamples.

    A replicate draws the partner's distinct test compounds with replacement (multinomial counts) and scores each
    task with those counts as sample weights: the same draw for every variant and seed (paired differences).
    """
    rng = rng or np.random.default_rng(0)
    n_s, n_t, n_c = len(panel.seeds), len(panel.pos), panel.rows.size
    point = {v: {m: np.full((n_s, n_t), np.nan) for m in METRICS} for v in panel.variants}
    boot = {v: {m: np.full((n_s, n_boot, n_t), np.nan) for m in METRICS} for v in panel.variants}
    kinds = panel.tasks["kind"].tolist()
    for t in range(n_t):
        for v in panel.variants:
            for s in range(n_s):
                for m, val in task_metrics(kinds[t], panel.y[t], panel.pred[v][t][s]).items():
                    point[v][m][s, t] = val[0]
    orders = {(t, v, s): _rank_order(panel.y[t] > 0, panel.pred[v][t][s]) for t in range(n_t)
              if kinds[t] == "classification" for v in panel.variants for s in range(n_s)}
    for start in range(0, n_boot, _CHUNK):
        size = min(_CHUNK, n_boot - start)
        counts = rng.multinomial(n_c, np.full(n_c, 1.0 / n_c), size=size) if n_c else np.zeros((size, 0))
        columns = np.ascontiguousarray(counts.T, dtype=np.int32)  # (compounds, replicates)
        for t in range(n_t):
            w = columns[panel.pos[t]]
            for v in panel.variants:
                for s in range(n_s):
                    if kinds[t] == "classification":
                        values = _ranking_apply(orders[(t, v, s)], w)
                    else:
                        values = _task_metrics_columns(kinds[t], panel.y[t], panel.pred[v][t][s], w)
                    for m, val in values.items():
                        boot[v][m][s, start:start + size, t] = val
    return PanelScores(panel=panel, point=point, boot=boot)


# ---- statistics over tasks ---------------------------------------------------------------------------------
def interval(replicates: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval; NaN replicates (a statistic undefined in that draw) are left out."""
    r = np.asarray(replicates, np.float64)
    r = r[~np.isnan(r)]
    if r.size == 0:
        return math.nan, math.nan
    lo, hi = np.percentile(r, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return float(lo), float(hi)


def _over_tasks(a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    """Statistics of a − b over the last (task) axis; a and b (..., T)."""
    d = a - b
    with np.errstate(invalid="ignore", divide="ignore"), _quiet():
        valid = ~np.isnan(d)
        n = valid.sum(axis=-1)
        rel = np.where(b < 1, d / (1 - b), np.nan)
        return {
            "mean_delta": np.nanmean(d, axis=-1),
            "median_delta": np.nanmedian(d, axis=-1),
            "share_improved": np.where(n > 0, np.sum(d > 0, axis=-1) / np.maximum(n, 1), np.nan),
            "relative_improvement": np.nanmedian(rel, axis=-1),
        }


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence numpy's 'mean of empty slice' warnings: an empty slice is a NaN statistic, which is intended."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


@dataclass
class ScoreSet:
    """One partner's scores, or several partners' side by side (tasks concatenated) for the consortium level."""

    point: dict[str, dict[str, np.ndarray]]
    boot: dict[str, dict[str, np.ndarray]]
    kinds: np.ndarray
    variants: list[str]
    n_seeds: int
    n_boot: int


def combine(scores: Sequence[PanelScores]) -> ScoreSet:
    """Concatenate the task axes of partners scored with the same seeds and replicate count."""
    variants = [v for v in VARIANTS if all(v in s.point for s in scores)]
    n_boot = scores[0].boot[variants[0]][METRICS[0]].shape[1]
    point = {v: {m: np.concatenate([s.point[v][m] for s in scores], axis=-1) for m in METRICS} for v in variants}
    boot = {v: {m: np.concatenate([s.boot[v][m] for s in scores], axis=-1) for m in METRICS} for v in variants}
    kinds = np.concatenate([s.panel.tasks["kind"].to_numpy(dtype=object) for s in scores])
    return ScoreSet(point, boot, kinds, variants, len(scores[0].panel.seeds), n_boot)


def score_set(scores: PanelScores) -> ScoreSet:
    """One partner's scores as a `ScoreSet`."""
    return combine([scores])


def _estimate(point: float, reps: np.ndarray) -> dict[str, float | None]:
    lo, hi = interval(reps)
    return {"estimate": _clean(point), "low": _clean(lo), "high": _clean(hi)}


def _clean(x: float) -> float | None:
    x = float(x)
    return None if math.isnan(x) else x


def summarize(scores: ScoreSet, rng: np.random.Generator | None = None) -> dict[str, Any]:
    """Per variant the mean metric, per pair every delta statistic, each with its bootstrap interval.

    Point estimates: the statistic over all tasks per seed, averaged over seeds. Replicate b: compound draw b
    (already in `boot`), tasks drawn with replacement, seeds drawn with replacement, the statistic per drawn seed
    averaged. Regression tasks count for R² and Pearson r, classification tasks for the three ranking metrics.
    """
    rng = rng or np.random.default_rng(1)
    n_s, n_b = scores.n_seeds, scores.n_boot
    seed_draw = rng.integers(0, n_s, size=(n_b, n_s))
    out: dict[str, Any] = {"variants": {}, "pairs": {}, "n_tasks": {}}
    task_draws = {}
    for m in METRICS:
        idx = np.flatnonzero(scores.kinds == METRIC_KIND[m])
        out["n_tasks"][m] = int(idx.size)
        task_draws[m] = idx[rng.integers(0, idx.size, size=(n_b, idx.size))] if idx.size else None

    def reps(arr: np.ndarray, m: str) -> np.ndarray:
        """(S, B, T) -> (S, B, T') with the replicate's task draw."""
        draw = task_draws[m]
        return np.take_along_axis(arr, np.broadcast_to(draw, (arr.shape[0], *draw.shape)), axis=-1)

    def seed_avg(stat: np.ndarray) -> np.ndarray:
        """(S, B) -> (B,): the statistic averaged over each replicate's drawn seeds."""
        with _quiet():
            return np.nanmean(stat[seed_draw, np.arange(n_b)[:, None]], axis=1)

    for v in scores.variants:
        out["variants"][v] = {}
        for m in METRICS:
            if task_draws[m] is None:
                continue
            idx = np.flatnonzero(scores.kinds == METRIC_KIND[m])
            with _quiet():
                est = np.nanmean(np.nanmean(scores.point[v][m][:, idx], axis=-1))
                rep = seed_avg(np.nanmean(reps(scores.boot[v][m], m), axis=-1))
            out["variants"][v][m] = _estimate(est, rep)
    for a, b in PAIRS:
        if a not in scores.variants or b not in scores.variants:
            continue
        pair: dict[str, Any] = {}
        for m in METRICS:
            if task_draws[m] is None:
                continue
            idx = np.flatnonzero(scores.kinds == METRIC_KIND[m])
            point = _over_tasks(scores.point[a][m][:, idx], scores.point[b][m][:, idx])
            boot = _over_tasks(reps(scores.boot[a][m], m), reps(scores.boot[b][m], m))
            with _quiet():
                pair[m] = {k: _estimate(np.nanmean(point[k]), seed_avg(boot[k]))
                           for k in ("mean_delta", "median_delta", "share_improved", "relative_improvement")}
            pair[m]["n_tasks"] = int(idx.size)
            pair[m]["mean_delta_per_seed"] = [_clean(x) for x in point["mean_delta"]]
            with _quiet():
                pair[m]["_mean_delta_reps"] = seed_avg(boot["mean_delta"])
                pair[m]["_mean_delta_point"] = float(np.nanmean(point["mean_delta"]))
        out["pairs"][f"{a}-{b}"] = pair
    by_metric = {m: _uplift_share(out["pairs"], m) for m in ("auc_pr", "r2") if out["n_tasks"][m]}
    out["pooled_uplift_share_by_metric"] = by_metric
    # the headline share: on AUC-PR, or on R² for a consortium without evaluable classification tasks
    out["pooled_uplift_share"] = by_metric.get("auc_pr") or by_metric.get("r2") or {
        "metric": None, "reported": False, "why": "no evaluable task"}
    for pair in out["pairs"].values():
        for m in pair.values():
            m.pop("_mean_delta_reps", None)
            m.pop("_mean_delta_point", None)
    return out


def _uplift_share(pairs: dict[str, Any], metric: str = "auc_pr") -> dict[str, Any]:
    """(fed − single) / (pooled − single) of mean AUC-PR, with its interval; only where the pooled uplift's
    interval excludes 0 (otherwise there is no uplift to capture and the ratio is noise)."""
    fed, pooled = pairs.get("federated-single", {}).get(metric), pairs.get("pooled-single", {}).get(metric)
    if not fed or not pooled:
        return {"metric": metric, "reported": False, "why": "no pooled model in this comparison"}
    lo, hi = pooled["mean_delta"]["low"], pooled["mean_delta"]["high"]
    if lo is None or hi is None or lo <= 0 <= hi:
        return {"metric": metric, "reported": False,
                "why": "the pooled uplift's 95 % interval includes 0: there is no uplift distinguishable from noise"}
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = fed["_mean_delta_reps"] / pooled["_mean_delta_reps"]
    est = fed["_mean_delta_point"] / pooled["_mean_delta_point"]
    return {"metric": metric, "reported": True, **_estimate(est, ratio)}


def delong_tasks(panel: TaskPanel, a: str, b: str) -> pd.DataFrame:
    """Per classification task: DeLong z and p of AUC-ROC(a) vs AUC-ROC(b), predictions averaged over seeds."""
    records = []
    for t, kind in enumerate(panel.tasks["kind"]):
        if kind != "classification":
            continue
        y = panel.y[t] > 0
        if min(y.sum(), (~y).sum()) < 2:  # only with a plan quorum below 2: no variance estimate, no test
            records.append({"task_index": int(panel.tasks["task_index"].iat[t]), "test_fold": _fold(panel, t),
                            "auc_a": math.nan, "auc_b": math.nan, "z": math.nan, "p": math.nan})
            continue
        res = delong_test(y, panel.pred[a][t].mean(axis=0), panel.pred[b][t].mean(axis=0))
        records.append({"task_index": int(panel.tasks["task_index"].iat[t]), "test_fold": _fold(panel, t),
                        "auc_a": res.auc_a, "auc_b": res.auc_b, "z": res.z, "p": res.p})
    return pd.DataFrame.from_records(records, columns=["task_index", "test_fold", "auc_a", "auc_b", "z", "p"])


def _fold(panel: TaskPanel, t: int) -> int:
    return int(panel.tasks["test_fold"].iat[t]) if "test_fold" in panel.tasks else 0


def delong_counts(frame: pd.DataFrame, alpha: float = ALPHA) -> dict[str, Any]:
    """Adjust `frame.p` by BY (adds `p_by`) and count tasks significantly better / worse at `alpha`."""
    frame["p_by"] = by_adjust(frame["p"].to_numpy()) if len(frame) else []
    sig = frame["p_by"] < alpha
    return {"n_tasks": len(frame), "alpha": alpha, "correction": "Benjamini-Yekutieli",
            "better": int((sig & (frame["auc_a"] > frame["auc_b"])).sum()),
            "worse": int((sig & (frame["auc_a"] < frame["auc_b"])).sum())}
