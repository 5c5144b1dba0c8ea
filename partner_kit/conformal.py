"""Per-task inductive conformal prediction, calibrated on the validation fold, stored as JSON beside the model.

Why conformal: a chemist reading "0.62 active" needs to know what the number promises. A conformal set does: at
significance ε, the set {active}, {inactive}, both or empty contains the true label for at least 1 − ε of
molecules *of each class* (Mondrian, class-conditional, so the rare actives get the guarantee too, not only the
inactives that dominate the fold), provided the molecule is exchangeable with the calibration compounds.

- Classification: nonconformity of label c is 1 − P(c) (P(active) = the head's probability); the p-value of c is
  (#calibration compounds of class c at least as nonconforming + 1) / (n_c + 1). The set holds every c with
  p-value > ε.
- Regression: nonconformity |y − ŷ| in the assay's units on exactly measured ('=') values; the interval is
  ŷ ± the ⌈(n + 1)(1 − ε)⌉-th smallest calibration residual (unbounded when the fold is too small for ε).

Calibration uses the validation fold only (never the test fold); `evaluate` measures validity (empirical error rate)
and efficiency (share of single-label sets; mean interval width for regression) on the test fold. The model file is
JSON (sorted calibration scores per task and class), so it cannot carry code and reads anywhere.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from data_prep.atomic import write_text_atomic
from data_prep.errors import InputError

CONFORMAL_JSON = "conformal.json"
DEFAULT_SIGNIFICANCE = 0.2
FORMAT = "fedqsar conformal v1"
_DECIMALS = 6  # scores are stored and compared at this precision, so saved and fresh models agree exactly
CLASSES = ("inactive", "active")


def _scores(values: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(values, dtype=np.float64), _DECIMALS)


@dataclass
class ConformalModel:
    """Sorted calibration nonconformity scores per task: classification per class, regression residuals."""

    #: task_index -> {"kind": ..., "scores": {name: sorted float64 array}} (arrays: one request scores 2,000 tasks)
    tasks: dict[int, dict[str, Any]] = field(default_factory=dict)

    # ---- classification ---------------------------------------------------------------------------------------
    def p_values(self, task_index: int, prob_active: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(p-value of 'inactive', p-value of 'active') per molecule; NaN where the class was never calibrated
        (or the probability is NaN: a molecule without prediction)."""
        entry = self.tasks.get(int(task_index))
        prob = np.asarray(prob_active, dtype=np.float64)
        if entry is None or entry["kind"] != "classification":
            nan = np.full(prob.shape, np.nan)
            return nan, nan.copy()
        out = []
        for label, alpha in ((0, _scores(prob)), (1, _scores(1.0 - prob))):
            cal = entry["scores"][CLASSES[label]]
            if cal.size == 0:
                out.append(np.full(prob.shape, np.nan))
                continue
            at_least = cal.size - np.searchsorted(cal, alpha, side="left")  # cal sorted ascending
            out.append(np.where(np.isnan(prob), np.nan, (at_least + 1.0) / (cal.size + 1.0)))
        return out[0], out[1]

    def p_value_matrix(self, task_indices: list[int], prob_active: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`p_values` for many tasks at once: prob_active is (molecules x tasks), results the same shape.

        One `searchsorted` over every task's sorted scores, each task shifted into its own interval [2k, 2k + 1]
        (scores lie in [0, 1]), instead of a Python loop over 2,000 tasks per request.
        """
        prob = np.asarray(prob_active, dtype=np.float64).reshape(-1, len(task_indices))
        index = self._class_index(tuple(int(t) for t in task_indices))
        out = []
        for label, alpha in ((0, _scores(prob)), (1, _scores(1.0 - prob))):
            flat, start, count = index[label]
            shift = 2.0 * np.arange(len(task_indices))
            below = np.searchsorted(flat, alpha + shift, side="left") - start  # calibration scores < alpha
            with np.errstate(invalid="ignore", divide="ignore"):
                out.append(np.where((count > 0) & ~np.isnan(prob), (count - below + 1.0) / (count + 1.0), np.nan))
        return out[0], out[1]

    def _class_index(self, task_indices: tuple[int, ...]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        cache = self.__dict__.setdefault("_index_cache", {})
        if task_indices not in cache:
            index = []
            for label in CLASSES:
                parts = [self._class_scores(t, label) + 2.0 * k for k, t in enumerate(task_indices)]
                count = np.array([len(part) for part in parts], dtype=np.float64)
                start = np.concatenate([[0], np.cumsum(count)[:-1]]).astype(np.int64)
                index.append((np.concatenate(parts) if parts else np.zeros(0), start, count))
            cache[task_indices] = index
        return cache[task_indices]

    def _class_scores(self, task_index: int, label: str) -> np.ndarray:
        entry = self.tasks.get(task_index)
        if entry is None or entry["kind"] != "classification":
            return np.zeros(0)
        return entry["scores"][label]

    # ---- regression -------------------------------------------------------------------------------------------
    def half_width(self, task_index: int, significance: float) -> float:
        """Interval half-width at `significance` (inf when too few calibration values; NaN if uncalibrated)."""
        entry = self.tasks.get(int(task_index))
        if entry is None or entry["kind"] != "regression" or not entry["scores"]["residual"].size:
            return math.nan
        cal = entry["scores"]["residual"]
        k = math.ceil((len(cal) + 1) * (1.0 - significance))
        return math.inf if k > len(cal) else float(cal[k - 1])

    # ---- storage ----------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "calibration": "validation fold", "tasks": [
            {"task_index": idx, "kind": entry["kind"],
             "scores": {name: values.tolist() for name, values in entry["scores"].items()}}
            for idx, entry in sorted(self.tasks.items())]}

    @classmethod
    def from_dict(cls, obj: Any, source: str = CONFORMAL_JSON) -> ConformalModel:
        if not isinstance(obj, dict) or obj.get("format") != FORMAT or not isinstance(obj.get("tasks"), list):
            raise InputError(f"{source} is not a conformal calibration file ({FORMAT!r}); retrain the model "
                             "or delete the file to predict without conformal sets")
        tasks: dict[int, dict[str, Any]] = {}
        try:
            for entry in obj["tasks"]:
                kind = entry["kind"]
                names = CLASSES if kind == "classification" else ("residual",)
                scores = {n: np.sort(np.asarray(entry["scores"][n], dtype=np.float64)) for n in names}
                if any(v.ndim != 1 or not np.isfinite(v).all() for v in scores.values()):
                    raise ValueError("scores must be flat lists of finite numbers")
                tasks[int(entry["task_index"])] = {"kind": kind, "scores": scores}
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{source}: malformed task entry ({exc!r}); retrain the model or delete the file "
                             "to predict without conformal sets") from None
        return cls(tasks)

    def save(self, model_dir: str | Path) -> Path:
        path = Path(model_dir) / CONFORMAL_JSON
        write_text_atomic(path, json.dumps(self.to_dict()) + "\n")
        return path

    @classmethod
    def load(cls, model_dir: str | Path) -> ConformalModel | None:
        """The model directory's calibration, or None for a model made before conformal calibration existed."""
        path = Path(model_dir) / CONFORMAL_JSON
        if not path.is_file():
            return None
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"{path} is not valid JSON ({exc}); retrain the model or delete the file") from None
        return cls.from_dict(obj, str(path))


def calibrate(valid_predictions: pd.DataFrame, tasks: pd.DataFrame) -> ConformalModel:
    """Calibration scores from the validation fold's long-format predictions (see `partner_kit.model_outputs`)."""
    model = ConformalModel()
    groups = dict(tuple(valid_predictions.groupby("task_index", sort=False)))
    for task in tasks.itertuples(index=False):
        idx = int(task.task_index)
        frame = groups.get(idx, valid_predictions.iloc[:0])
        y, pred = frame["y"].to_numpy(np.float64), frame["pred"].to_numpy(np.float64)
        if task.kind == "classification":
            scores = {"inactive": np.sort(_scores(pred[y <= 0])), "active": np.sort(_scores(1.0 - pred[y > 0]))}
        else:
            exact = frame["censor"].to_numpy() == 0
            scores = {"residual": np.sort(_scores(np.abs(y[exact] - pred[exact])))}
        model.tasks[idx] = {"kind": str(task.kind), "scores": scores}
    return model


def prediction_sets(p_inactive: np.ndarray, p_active: np.ndarray, significance: float) -> list[str]:
    """'active', 'inactive', 'both' or 'empty' per molecule ('' where the task has no calibration)."""
    names = []
    for p0, p1 in zip(np.asarray(p_inactive), np.asarray(p_active), strict=True):
        if math.isnan(p0) or math.isnan(p1):
            names.append("")
            continue
        inside = (p0 > significance, p1 > significance)
        names.append({(True, True): "both", (False, True): "active", (True, False): "inactive"}.get(inside, "empty"))
    return names


def prediction_set_matrix(p_inactive: np.ndarray, p_active: np.ndarray, significance: float) -> np.ndarray:
    """`prediction_sets` for arrays of any shape (object array of the same names)."""
    p0, p1 = np.asarray(p_inactive), np.asarray(p_active)
    with np.errstate(invalid="ignore"):
        in0, in1 = p0 > significance, p1 > significance
    names = np.select([in0 & in1, in1, in0], ["both", "active", "inactive"], "empty").astype(object)
    names[np.isnan(p0) | np.isnan(p1)] = ""
    return names


def evaluate(conformal: ConformalModel, test_predictions: pd.DataFrame, significance: float) -> pd.DataFrame:
    """Per task on held-out predictions: n, validity (error rate; ≤ significance when calibrated well), efficiency.

    Classification efficiency = share of single-label sets; regression efficiency = mean interval width
    (exactly measured values only). Also the per-class error rates, which Mondrian calibration bounds separately.
    """
    rows = []
    for idx, frame in test_predictions.groupby("task_index", sort=True):
        entry = conformal.tasks.get(int(idx))
        if entry is None:
            continue
        y, pred = frame["y"].to_numpy(np.float64), frame["pred"].to_numpy(np.float64)
        record: dict[str, Any] = {"task_index": int(idx), "kind": entry["kind"], "significance": significance}
        if entry["kind"] == "classification":
            p0, p1 = conformal.p_values(int(idx), pred)
            sets = np.array(prediction_sets(p0, p1, significance))
            known = sets != ""
            covered = np.where(y > 0, p1 > significance, p0 > significance)
            single = np.isin(sets, ("active", "inactive"))
            record.update(n=int(known.sum()), validity=_mean(~covered[known]), efficiency=_mean(single[known]),
                          error_active=_mean(~covered[known & (y > 0)]),
                          error_inactive=_mean(~covered[known & (y <= 0)]))
        else:
            exact = frame["censor"].to_numpy() == 0
            half = conformal.half_width(int(idx), significance)
            miss = np.abs(y[exact] - pred[exact]) > half
            record.update(n=int(exact.sum()), validity=_mean(miss), efficiency=2 * half if exact.any() else math.nan)
        rows.append(record)
    return pd.DataFrame(rows)


def _mean(values: np.ndarray) -> float:
    return float(np.mean(values)) if np.size(values) else math.nan


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    return value


def calibrate_model_dir(model_dir: str | Path, valid_predictions: pd.DataFrame, test_predictions: pd.DataFrame,
                        tasks: pd.DataFrame, significance: float = DEFAULT_SIGNIFICANCE) -> ConformalModel:
    """Calibrate on the validation fold, save conformal.json, add test-fold validity/efficiency to metrics.json.

    Called when a model is finished (`partner_kit.model_outputs.write_model_outputs`). metrics.json gains a
    `conformal` block (significance, per-task rows) and each `test_per_task` row its `conformal_validity` and
    `conformal_efficiency`; the file is rewritten atomically.
    """
    from partner_kit.weights import METRICS_JSON

    model_dir = Path(model_dir)
    conformal = calibrate(valid_predictions, tasks)
    conformal.save(model_dir)
    table = evaluate(conformal, test_predictions, significance)
    per_task = [{k: _finite_or_none(v) for k, v in row.items()} for row in table.to_dict(orient="records")]
    path = model_dir / METRICS_JSON
    metrics = json.loads(path.read_text()) if path.is_file() else {}
    by_index = {row["task_index"]: row for row in per_task}
    for row in metrics.get("test_per_task") or []:
        found = by_index.get(row.get("task_index"))
        if found is not None:
            row["conformal_validity"], row["conformal_efficiency"] = found["validity"], found["efficiency"]
    metrics["conformal"] = {"significance": significance, "calibrated_on": "validation fold",
                            "evaluated_on": "test fold", "per_task": per_task}
    write_text_atomic(path, json.dumps(metrics, indent=2) + "\n")
    return conformal
