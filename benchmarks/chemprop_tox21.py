"""chemprop v2 (D-MPNN) as the Tox21 bench's third model: a benchmark-only dependency, run in its own venv.

chemprop is never imported here (it is not a product dependency, and its torch/lightning stack would clash with
ours): the bench writes the standardized SMILES and labels of exactly the rows our network sees in one fold as
three CSVs (train / validation / test), runs `chemprop train` in a subprocess of the chemprop venv with its
defaults (D-MPNN, 50 epochs, best epoch by validation loss), and reads back its test predictions, which the
bench scores with the same AUC-ROC code as the other two models.

Install (CPU wheels; what the benchmarks in BENCHMARKS.md used: chemprop 2.3.1, torch 2.13.0+cpu, lightning 2.6.6):
  python3.11 -m venv /tmp/chemprop-venv && /tmp/chemprop-venv/bin/pip install torch==2.13.0 && \
      /tmp/chemprop-venv/bin/pip install 'chemprop>=2,<3'
"""

from __future__ import annotations

import csv
import os
import subprocess
import time
from pathlib import Path

import numpy as np

SMILES = "smiles"


def write_split_csvs(data, test_fold: int, valid_fold: int, task_names: list[str], out: Path) -> dict[str, Path]:
    """train.csv (all other folds), val.csv (the validation fold), test.csv (the test fold): SMILES + one 0/1
    column per classification task, blank where the label is unknown. Returns the three paths."""
    out.mkdir(parents=True, exist_ok=True)
    smiles = data.compounds["smiles"].to_numpy()
    folds = np.asarray(data.folds)
    y = data.y_class.toarray()
    parts = {"train": np.flatnonzero((folds != test_fold) & (folds != valid_fold)),
             "val": np.flatnonzero(folds == valid_fold), "test": np.flatnonzero(folds == test_fold)}
    paths = {}
    for name, rows in parts.items():
        path = out / f"{name}.csv"
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow([SMILES, *task_names])
            for r in rows:
                w.writerow([smiles[r], *("" if v == 0 else int(v > 0) for v in y[r])])
        paths[name] = path
    return paths


def run_chemprop(python: Path, paths: dict[str, Path], out: Path, epochs: int | None = None,
                 seed: int = 0, log: Path | None = None) -> dict:
    """`chemprop train -i train val test --task-type classification` with chemprop's defaults otherwise
    (epochs only when given), one thread, no loader workers, niced; returns timing and the output dir."""
    exe = Path(python).with_name("chemprop")
    niced = ["nice"] if os.nice(0) == 0 else []   # niced once, not twice when the bench itself runs under nice
    cmd = [*niced, str(exe), "train", "-i", str(paths["train"]), str(paths["val"]), str(paths["test"]),
           "--task-type", "classification", "--smiles-columns", SMILES, "--num-workers", "0",
           "--accelerator", "cpu", "--devices", "1", "--pytorch-seed", str(seed), "-o", str(out)]
    if epochs is not None:
        cmd += ["--epochs", str(epochs)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    log = log or out.with_suffix(".log")
    with open(log, "w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"chemprop train exited {proc.returncode}; see {log}")
    return {"seconds": round(time.perf_counter() - t0, 1), "out": str(out), "log": str(log)}


def test_predictions(out: Path, test_csv: Path, task_names: list[str]) -> np.ndarray:
    """chemprop's test-set probabilities (rows of test.csv, tasks in `task_names` order), checked row by row."""
    found = sorted(out.rglob("test_predictions.csv"))
    if len(found) != 1:
        raise RuntimeError(f"expected one test_predictions.csv under {out}, found {len(found)}")
    with open(test_csv, newline="") as f:
        expected = [row[SMILES] for row in csv.DictReader(f)]
    with open(found[0], newline="") as f:
        rows = list(csv.DictReader(f))
    if [r[SMILES] for r in rows] != expected:
        raise RuntimeError(f"{found[0]}: rows are not those of {test_csv} in order")
    return np.array([[float(r[t]) for t in task_names] for r in rows])


def validation_curve(out: Path) -> list[float]:
    """Validation loss per epoch from lightning's metrics.csv (to show whether training had converged)."""
    found = sorted(out.rglob("metrics.csv"))
    if not found:
        return []
    curve: dict[int, float] = {}
    with open(found[0], newline="") as f:
        for row in csv.DictReader(f):
            if row.get("val_loss"):
                curve[int(row["epoch"])] = float(row["val_loss"])
    return [round(curve[e], 4) for e in sorted(curve)]
