"""Tasks from aggregated values: thresholds, labels, quorums and weights.

- a binary assay is one classification task (its +1/-1 labels);
- a dose-response assay gets one classification task per threshold: the T0 expert thresholds when given,
  otherwise the first of the plan's `auto_thresholds` that gives the training quorum (MELLODDY-TUNER's rule;
  tried from the most stringent end: descending for direction 'high', ascending for 'low');
- a dose-response assay with `use_in_regression` is also one regression task (values + censor flags).

Quorums: a classification task needs `min_train_actives` and `min_train_inactives` labels to be kept
(training_weight 1), and `min_eval_*_per_fold` of each in every fold to count in evaluation
(aggregation_weight 1, else 0). A regression task needs `min_regression_values` values of which
`min_regression_uncensored` uncensored; it counts in evaluation when every fold holds at least
`min_eval_actives_per_fold` uncensored values. Tasks failing the training quorum are dropped and listed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from data_prep.config import TaskRules


def threshold_labels(value: np.ndarray, censor: np.ndarray, threshold: float, direction: str) -> np.ndarray:
    """+1 active / -1 inactive / 0 unknown for values at one threshold.

    'high': active when the true value >= threshold. A '>v' value is active when v >= threshold and
    unknown otherwise; a '<v' value is inactive when v <= threshold and unknown otherwise. 'low' mirrors it.
    """
    if direction == "high":
        active = (value >= threshold) & (censor >= 0)
        inactive = (value < threshold) & (censor == 0) | (value <= threshold) & (censor < 0)
    else:
        active = (value <= threshold) & (censor <= 0)
        inactive = (value > threshold) & (censor == 0) | (value >= threshold) & (censor > 0)
    return np.where(active, 1, np.where(inactive, -1, 0)).astype(np.int8)


@dataclass
class TaskSet:
    """Kept tasks (table + label triplets) and dropped tasks with reasons."""

    n_folds: int
    class_rows: list[dict] = field(default_factory=list)
    regr_rows: list[dict] = field(default_factory=list)
    class_labels: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # (groups, ±1)
    regr_values: list[np.ndarray] = field(default_factory=list)  # groups
    dropped: list[dict] = field(default_factory=list)


def build_tasks(
    groups: pd.DataFrame, assays: pd.DataFrame, folds: np.ndarray, rules: TaskRules, n_folds: int
) -> TaskSet:
    """Tasks for every assay, in T0 order. `groups` holds aggregated values with their matrix `row`."""
    out = TaskSet(n_folds=n_folds)
    valid = groups[groups["n_records"] > 0]
    by_assay = {a: idx.to_numpy() for a, idx in valid.groupby("input_assay_id", sort=False).groups.items()}
    value_all = groups["value"].to_numpy()
    censor_all = groups["censor"].to_numpy()
    row_all = groups["row"].to_numpy()
    for assay_id, assay in assays.iterrows():
        if pd.notna(assay["rejected"]) or assay_id not in by_assay:
            continue
        gid = by_assay[assay_id]
        value, censor, fold = value_all[gid], censor_all[gid], folds[row_all[gid]]
        base = {"input_assay_id": assay_id, "assay_type": assay["assay_type"], "direction": assay["direction"]}
        if assay["is_binary"]:
            labels = np.where(value > 0, 1, -1).astype(np.int8)
            _add_class(out, rules, base, math.nan, "binary", gid, labels, fold)
            continue
        thresholds = list(assay["thresholds"])
        method = "expert"
        if not thresholds:
            method = "auto"
            chosen = _auto_threshold(value, censor, assay["direction"], rules)
            if chosen is None:
                out.dropped.append({**base, "kind": "classification", "threshold": math.nan,
                                    "reason": "no automatic threshold gives "
                                    f"{rules.min_train_actives} actives and {rules.min_train_inactives} "
                                    f"inactives (tried {', '.join(f'{t:g}' for t in rules.auto_thresholds)})"})
            thresholds = [] if chosen is None else [chosen]
        for t in thresholds:
            labels = threshold_labels(value, censor, t, assay["direction"])
            _add_class(out, rules, base, t, method, gid, labels, fold)
        if assay["use_in_regression"]:
            _add_regr(out, rules, base, gid, censor, fold)
    return out


def _auto_threshold(value: np.ndarray, censor: np.ndarray, direction: str, rules: TaskRules) -> float | None:
    order = sorted(rules.auto_thresholds, reverse=(direction == "high"))
    for t in order:
        labels = threshold_labels(value, censor, t, direction)
        if (labels > 0).sum() >= rules.min_train_actives and (labels < 0).sum() >= rules.min_train_inactives:
            return float(t)
    return None


def _per_fold(mask: np.ndarray, fold: np.ndarray, n_folds: int) -> np.ndarray:
    return np.bincount(fold[mask], minlength=n_folds)


def _add_class(out: TaskSet, rules: TaskRules, base: dict, threshold: float, method: str,
               gid: np.ndarray, labels: np.ndarray, fold: np.ndarray) -> None:
    act = _per_fold(labels > 0, fold, out.n_folds)
    ina = _per_fold(labels < 0, fold, out.n_folds)
    counts = {"actives": int(act.sum()), "inactives": int(ina.sum())}
    row = {**base, "kind": "classification", "threshold": threshold, "threshold_method": method, **counts}
    if counts["actives"] < rules.min_train_actives or counts["inactives"] < rules.min_train_inactives:
        out.dropped.append({**row, "reason": f"training quorum not met: {counts['actives']} actives, "
                            f"{counts['inactives']} inactives (needs {rules.min_train_actives} and "
                            f"{rules.min_train_inactives})"})
        return
    evaluable = (act >= rules.min_eval_actives_per_fold).all() and (ina >= rules.min_eval_inactives_per_fold).all()
    row.update(training_weight=1.0, aggregation_weight=1.0 if evaluable else 0.0, censored_weight=0.0)
    row.update({f"actives_fold{k}": int(act[k]) for k in range(out.n_folds)})
    row.update({f"inactives_fold{k}": int(ina[k]) for k in range(out.n_folds)})
    known = labels != 0
    out.class_rows.append(row)
    out.class_labels.append((gid[known], labels[known]))


def _add_regr(out: TaskSet, rules: TaskRules, base: dict, gid: np.ndarray, censor: np.ndarray,
              fold: np.ndarray) -> None:
    unc = _per_fold(censor == 0, fold, out.n_folds)
    cen = _per_fold(censor != 0, fold, out.n_folds)
    counts = {"uncensored": int(unc.sum()), "censored": int(cen.sum())}
    row = {**base, "kind": "regression", "threshold": math.nan, "threshold_method": "", **counts}
    n = counts["uncensored"] + counts["censored"]
    if n < rules.min_regression_values or counts["uncensored"] < rules.min_regression_uncensored:
        out.dropped.append({**row, "reason": f"regression quorum not met: {n} values, {counts['uncensored']} "
                            f"uncensored (needs {rules.min_regression_values} and "
                            f"{rules.min_regression_uncensored})"})
        return
    evaluable = (unc >= rules.min_eval_actives_per_fold).all()
    row.update(training_weight=1.0, aggregation_weight=1.0 if evaluable else 0.0,
               censored_weight=float(rules.censored_weight))
    row.update({f"uncensored_fold{k}": int(unc[k]) for k in range(out.n_folds)})
    row.update({f"censored_fold{k}": int(cen[k]) for k in range(out.n_folds)})
    out.regr_rows.append(row)
    out.regr_values.append(gid)


def task_table(tasks: TaskSet) -> pd.DataFrame:
    """tasks.parquet: classification tasks first, then regression; absent counts are 0."""
    rows = tasks.class_rows + tasks.regr_rows
    front = ["task_index", "kind", "input_assay_id", "threshold", "direction", "training_weight",
             "aggregation_weight", "censored_weight", "threshold_method", "assay_type",
             "actives", "inactives", "uncensored", "censored"]
    folds = [f"{c}_fold{k}" for c in ("actives", "inactives", "uncensored", "censored")
             for k in range(tasks.n_folds)]
    table = pd.DataFrame(rows, columns=[c for c in front if c != "task_index"] + folds)
    table.insert(0, "task_index", np.arange(len(table), dtype=np.int64))
    count_cols = ["actives", "inactives", "uncensored", "censored", *folds]
    table[count_cols] = table[count_cols].fillna(0).astype(np.int64)
    for col in ("threshold", "training_weight", "aggregation_weight", "censored_weight"):
        table[col] = table[col].astype(float)
    table["input_assay_id"] = table["input_assay_id"].astype(str)
    return table
