"""Helpers for data_prep tests: tiny hand-made T0/T1/T2 directories and configs with small quorums."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from data_prep.config import FingerprintConfig, PrepConfig, TaskRules
from data_prep.prepared import FILES, PreparedData

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))

T0_HEADER = ["input_assay_id", "assay_type", "use_in_regression", "is_binary", "expert_threshold_1",
             "expert_threshold_2", "expert_threshold_3", "expert_threshold_4", "expert_threshold_5",
             "direction", "catalog_assay_id", "parent_assay_id"]


def small_rules(**kw) -> TaskRules:
    base = dict(min_train_actives=2, min_train_inactives=2, min_eval_actives_per_fold=1,
                min_eval_inactives_per_fold=1, min_regression_values=3, min_regression_uncensored=2)
    base.update(kw)
    return TaskRules(**base)


def small_config(size: int = 2048, **rules) -> PrepConfig:
    return PrepConfig(fingerprint=FingerprintConfig(size=size), tasks=small_rules(**rules))


def t0_row(assay_id, *, binary: bool, regression: bool = False, thresholds=(), direction: str = "high",
           assay_type: str = "OTHER") -> dict:
    row = {"input_assay_id": assay_id, "assay_type": assay_type, "use_in_regression": regression,
           "is_binary": binary, "direction": direction, "catalog_assay_id": "", "parent_assay_id": ""}
    for i in range(1, 6):
        row[f"expert_threshold_{i}"] = thresholds[i - 1] if i <= len(thresholds) else ""
    return row


def write_inputs(directory: Path, t0: list[dict], t1: list[tuple], t2: list[tuple], fmt: str = "csv") -> Path:
    """Write T0/T1/T2 (t1 rows: compound, assay, qualifier, value; t2 rows: compound, smiles)."""
    directory.mkdir(parents=True, exist_ok=True)
    frames = {
        "T0": pd.DataFrame(t0, columns=T0_HEADER),
        "T1": pd.DataFrame(t1, columns=["input_compound_id", "input_assay_id", "standard_qualifier",
                                        "standard_value"]),
        "T2": pd.DataFrame(t2, columns=["input_compound_id", "smiles"]),
    }
    for name, frame in frames.items():
        if fmt == "parquet":
            frame.astype(str).to_parquet(directory / f"{name}.parquet", index=False)
        elif fmt == "csv.gz":
            frame.to_csv(directory / f"{name}.csv.gz", index=False)
        else:
            frame.to_csv(directory / f"{name}.csv", index=False)
    return directory


#: Eight ring systems and two acyclic molecules: enough rows for folds and tasks in small tests.
MOLECULES = [
    ("M01", "c1ccccc1O"), ("M02", "c1ccc(cc1)C(=O)O"), ("M03", "c1ccc2ccccc2c1"), ("M04", "C1CCNCC1"),
    ("M05", "c1ccncc1C"), ("M06", "O=C1CCCC1"), ("M07", "c1ccc(cc1)-c1ccccc1"), ("M08", "C1CCOC1CC"),
    ("M09", "CCCCCCO"), ("M10", "CC(C)CC(=O)O"),
]


def standard_inputs(directory: Path, fmt: str = "csv") -> Path:
    """A small valid input: a binary assay B1 and a dose-response assay D1 (also regression)."""
    t0 = [t0_row("B1", binary=True), t0_row("D1", binary=False, regression=True, thresholds=(6.0,))]
    labels = [1, -1, 1, -1, 1, -1, 1, -1, 1, -1]
    values = [7.5, 5.0, 6.5, 4.0, 8.0, 5.5, 6.1, 3.5, 7.0, 5.9]
    t1 = [(cid, "B1", "=", lab) for (cid, _), lab in zip(MOLECULES, labels, strict=True)]
    t1 += [(cid, "D1", "=", v) for (cid, _), v in zip(MOLECULES, values, strict=True)]
    return write_inputs(directory, t0, t1, MOLECULES, fmt)


def check_contract(out, t1_rows: int) -> PreparedData:
    """The checks of the issue's 'done when', on one prepared directory."""
    assert all((out / f).is_file() for f in FILES)
    data = PreparedData.load(out, with_compounds=True)
    manifest = data.manifest
    rejected = pd.read_parquet(out / "rejected.parquet")
    assert list(rejected.columns) == ["file", "row", "id", "stage", "reason"]
    t1_name = manifest["inputs"]["T1"]["file"]
    assert manifest["counts"]["t1_rows_used"] + int((rejected["file"] == t1_name).sum()) == t1_rows
    for name in ("x", "y_class", "y_regr", "y_censor"):
        assert sp.load_npz(out / f"{name}.npz").shape[0] == data.n_rows
    assert data.x.dtype == np.float32 and data.y_censor.dtype == np.int8
    assert set(np.unique(data.y_class.data)) <= {-1.0, 1.0}
    assert np.array_equal(data.y_regr.indptr, data.y_censor.indptr)
    assert np.array_equal(data.y_regr.indices, data.y_censor.indices)
    assert set(np.unique(data.y_censor.data)) <= {-1, 0, 1}
    assert len(data.compounds) == data.n_rows
    assert np.array_equal(data.compounds["fold"].to_numpy(), data.folds)
    assert data.tasks["task_index"].tolist() == list(range(len(data.tasks)))
    assert (data.tasks["kind"].iloc[: data.y_class.shape[1]] == "classification").all()
    assert manifest["fold_sizes"] == np.bincount(data.folds, minlength=manifest["n_folds"]).tolist()
    return data
