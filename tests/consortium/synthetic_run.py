"""A synthetic `consortium simulate` run directory in the exact file contract the report reads.

Real files (model.json, metrics.json, test_predictions.parquet, comparison.json), synthetic numbers: each
variant's prediction is the label plus noise, with more signal for federated and pooled models, so the expected
signs of the deltas are known.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

SIGNAL = {"single": 1.0, "federated": 1.4, "pooled": 1.8}


def _tasks(n_class: int, n_regr: int, small: bool) -> list[dict]:
    tasks = []
    for i in range(n_class + n_regr):
        kind = "classification" if i < n_class else "regression"
        tasks.append({"task_index": i, "kind": kind, "input_assay_id": str(100 + i),
                      "assay_type": ["OTHER", "ADME", "CATALOG-PANEL"][i % 3] if kind == "classification" else "ADME",
                      "threshold": 6.0 if kind == "classification" else None, "aggregation_weight": 1.0,
                      "training_weight": 1.0})
    if small:  # one task of each kind below the evaluation quorum
        tasks.append({"task_index": len(tasks), "kind": "classification", "input_assay_id": "900",
                      "assay_type": "OTHER", "aggregation_weight": 1.0})
        tasks.append({"task_index": len(tasks), "kind": "regression", "input_assay_id": "901",
                      "assay_type": "ADME", "aggregation_weight": 1.0})
    return tasks


def _labels(rng: np.random.Generator, tasks: list[dict], n_rows: int) -> pd.DataFrame:
    parts = []
    for t in tasks:
        rows = np.sort(rng.choice(n_rows, size=int(rng.integers(n_rows // 3, n_rows)), replace=False))
        if t["input_assay_id"] == "900":
            rows = rows[:60]
            y = np.zeros(rows.size)
            y[:5] = 1.0  # 5 actives: below the quorum of 10
            censor = np.zeros(rows.size, np.int8)
        elif t["input_assay_id"] == "901":
            rows = rows[:40]
            y = 11.9 + 0.01 * rng.standard_normal(rows.size)  # std << 0.5
            censor = np.zeros(rows.size, np.int8)
        elif t["kind"] == "classification":
            y = (rng.random(rows.size) < rng.uniform(0.1, 0.4)).astype(np.float64)
            censor = np.zeros(rows.size, np.int8)
        else:
            y = rng.normal(6.0, 1.0, rows.size)
            censor = rng.choice(np.array([-1, 0, 0, 0, 1], np.int8), rows.size)
        parts.append(pd.DataFrame({"row": rows.astype(np.int64), "task_index": np.int32(t["task_index"]),
                                   "kind": t["kind"], "y": y, "censor": censor}))
    return pd.concat(parts, ignore_index=True)


def _predict(rng: np.random.Generator, labels: pd.DataFrame, signal: float) -> np.ndarray:
    pred = np.empty(len(labels))
    cls = (labels["kind"] == "classification").to_numpy()
    logit = signal * (2 * labels["y"].to_numpy()[cls] - 1) + rng.standard_normal(cls.sum()) * 1.5
    pred[cls] = 1 / (1 + np.exp(-logit))
    y = labels["y"].to_numpy()[~cls]
    pred[~cls] = 6.0 + (y - 6.0) * 0.5 * signal / 1.8 + rng.standard_normal(y.size) * 0.8 / signal
    return pred


def write_run(run_dir: Path, *, partners: tuple[str, ...] = ("A", "B", "C"), seeds: tuple[int, ...] = (0, 1, 2),
              n_class: int = 8, n_regr: int = 3, n_rows: int = 200, pooled: bool = True,
              signal: dict[str, float] | None = None, seed: int = 0, folds: tuple[int, ...] = (0,)) -> Path:
    """Write a run directory: comparison.json plus one model directory per (test fold, seed, partner, variant).

    With several `folds` each test fold holds its own compounds (rows offset by fold * n_rows), as a rotated
    test fold does."""
    signal = signal or SIGNAL
    rng = np.random.default_rng(seed)
    plan = {"name": "synthetic", "tasks": {"min_eval_actives_per_fold": 10, "min_eval_inactives_per_fold": 10,
                                           "min_eval_regression_values_per_fold": 10,
                                           "min_eval_regression_std": 0.5}}
    variants = ["single", "federated"] + (["pooled"] if pooled else [])
    models, meta_partners = [], {}
    for partner in partners:
        tasks = _tasks(n_class, n_regr, small=True)
        meta_partners[partner] = {"prepared": f"/nowhere/{partner}/prepared",
                                  "assay_types": {t["input_assay_id"]: t["assay_type"] for t in tasks}}
        for fold in folds:
            labels = _labels(rng, tasks, n_rows)
            labels["row"] += fold * n_rows
            base = "" if len(folds) == 1 else f"folds/{fold}/"
            for s in seeds:
                for v in variants:
                    sub = {"single": "baseline", "federated": "model"}.get(v, v)
                    rel = f"{base}seeds/{s}/partners/{partner}/{sub}"
                    d = run_dir / rel
                    d.mkdir(parents=True, exist_ok=True)
                    frame = labels.copy()
                    frame["pred"] = _predict(rng, labels, signal[v])
                    frame.to_parquet(d / "test_predictions.parquet", index=False)
                    axis = "round" if v == "federated" else "epoch"
                    scores = np.cumsum(rng.uniform(0.0, 0.02, 12)) + 0.3 + 0.05 * signal[v]
                    history = [{axis: i + (1 if axis == "round" else 0), "valid_score": float(x)}
                               for i, x in enumerate(scores)]
                    best = "best_round" if axis == "round" else "best_epoch"
                    metrics = {"selection_metric": "auc_pr", "valid_fold": (fold + 1) % 5, "test_fold": fold,
                               "history": history, best: history[-2][axis]}
                    (d / "metrics.json").write_text(json.dumps(metrics))
                    (d / "model.json").write_text(json.dumps({"plan_hash": "f" * 64, "plan": plan, "tasks": tasks}))
                    models.append({"seed": s, "test_fold": fold, "partner": partner, "variant": v, "dir": rel})
    comparison = {"plan_hash": "f" * 64, "plan_name": "synthetic",
                  "test_fold": folds[0] if len(folds) == 1 else list(folds),
                  "valid_fold": (folds[0] + 1) % 5 if len(folds) == 1 else [(f + 1) % 5 for f in folds],
                  "seeds": list(seeds), "selection": "best validation epoch / round (validation fold only)",
                  "partners": meta_partners, "models": models}
    (run_dir / "comparison.json").write_text(json.dumps(comparison, indent=2))
    return run_dir
