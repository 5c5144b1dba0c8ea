"""What a finished model leaves beside its weights: the validation and test fold predictions, per (row, task).

Every finished model (single-partner baseline, federated model, pooled model) writes them, so every reported
number — the simulate table, the HTML report, conformal calibration — can be recomputed from files, and a report
compares the variants on exactly the same (row, task) pairs. They stay at the partner (they name its rows).

Long format, one row per labelled (compound, task) pair of the fold:
  row int64 (matrix row in the prepared data), task_index int32, kind str, y float64 (classification 1/0,
  regression value), censor int8 (regression -1 '<', 0 '=', +1 '>'; classification 0), pred float64.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp

from data_prep.atomic import write_atomic
from data_prep.prepared import PreparedData
from partner_kit.batching import CsrBatcher
from partner_kit.model import MultitaskModel

VALID_PREDICTIONS = "valid_predictions.parquet"
TEST_PREDICTIONS = "test_predictions.parquet"
COLUMNS = ("row", "task_index", "kind", "y", "censor", "pred")


def fold_predictions(tasks: pd.DataFrame, rows: np.ndarray, y_class: sp.csr_matrix, prob: np.ndarray,
                     y_regr: sp.csr_matrix, y_censor: sp.csr_matrix, regr: np.ndarray) -> pd.DataFrame:
    """Long-format predictions of `rows` (the labels' rows, in order) for every labelled (row, task) pair."""
    class_idx = tasks.loc[tasks["kind"] == "classification", "task_index"].to_numpy(np.int32)
    regr_idx = tasks.loc[tasks["kind"] == "regression", "task_index"].to_numpy(np.int32)
    parts = []
    yc = sp.coo_matrix(y_class)
    if yc.nnz:
        parts.append(pd.DataFrame({
            "row": np.asarray(rows, np.int64)[yc.row], "task_index": class_idx[yc.col], "kind": "classification",
            "y": (yc.data > 0).astype(np.float64), "censor": np.zeros(yc.nnz, np.int8),
            "pred": prob[yc.row, yc.col].astype(np.float64)}))
    yr = sp.coo_matrix(y_regr)
    if yr.nnz:
        censor = sp.csr_matrix(y_censor)
        flags = censor[yr.row, yr.col].A1 if censor.nnz else np.zeros(yr.nnz)
        parts.append(pd.DataFrame({
            "row": np.asarray(rows, np.int64)[yr.row], "task_index": regr_idx[yr.col], "kind": "regression",
            "y": yr.data.astype(np.float64), "censor": np.asarray(flags, np.int8),
            "pred": regr[yr.row, yr.col].astype(np.float64)}))
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(
            COLUMNS, ("int64", "int32", "object", "float64", "int8", "float64"), strict=True)})
    out = pd.concat(parts, ignore_index=True)
    return out.sort_values(["task_index", "row"], kind="stable").reset_index(drop=True)[list(COLUMNS)]


def predict_fold(model: MultitaskModel, batcher: CsrBatcher, data: PreparedData, rows: np.ndarray) -> pd.DataFrame:
    from partner_kit.training import predict_rows

    prob, regr = predict_rows(model, batcher, rows)
    return fold_predictions(data.tasks, rows, batcher.y_class[rows], prob, batcher.y_regr[rows],
                            batcher.y_censor[rows], regr)


def write_predictions(path: Path, frame: pd.DataFrame) -> Path:
    table = pa.Table.from_pandas(frame, preserve_index=False)
    return write_atomic(Path(path), lambda tmp: pq.write_table(table, tmp))


def read_predictions(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path)


def write_model_outputs(model_dir: Path, model: MultitaskModel, batcher: CsrBatcher, data: PreparedData,
                        valid_rows: np.ndarray, test_rows: np.ndarray) -> None:
    """Called once a model is final: its validation and test predictions (conformal calibration uses the former)."""
    model_dir = Path(model_dir)
    was = model.training
    model.eval()
    try:
        valid = predict_fold(model, batcher, data, valid_rows)
        test = predict_fold(model, batcher, data, test_rows)
    finally:
        model.train(was)
    write_predictions(model_dir / VALID_PREDICTIONS, valid)
    write_predictions(model_dir / TEST_PREDICTIONS, test)
    from partner_kit.conformal import calibrate_model_dir  # conformal.json + validity/efficiency in metrics.json

    calibrate_model_dir(model_dir, valid, test, data.tasks)
