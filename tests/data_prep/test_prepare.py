"""The prepare pipeline end to end on small hand-made inputs: contract, accounting, formats, cache."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from dp_helpers import KEY, MOLECULES, OTHER_KEY, check_contract, small_config, standard_inputs, t0_row, write_inputs

from consortium.plan import Plan
from data_prep.featurize import featurize_smiles
from data_prep.key import key_check_hash
from data_prep.prepare import prepare
from data_prep.prepared import PreparedData


def test_prepare_writes_the_contract_with_known_labels(tmp_path):
    inputs = standard_inputs(tmp_path / "in")
    summary = prepare(small_config(), KEY, inputs, tmp_path / "out", cache_dir=tmp_path / "c", n_jobs=1,
                      progress=False)
    data = check_contract(tmp_path / "out", t1_rows=20)
    assert summary == json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert summary["key_check_hash"] == key_check_hash(KEY)
    assert data.n_rows == 10 and data.n_features == 2048
    tasks = data.tasks.set_index(["input_assay_id", "kind"])
    assert tasks.loc[("D1", "classification"), "threshold"] == 6.0
    # D1 values 7.5, 5.0, 6.5, 4.0, 8.0, 5.5, 6.1, 3.5, 7.0, 5.9 at threshold 6 -> 5 actives, 5 inactives
    assert tasks.loc[("D1", "classification"), "actives"] == 5
    rows = {ids[0]: r for r, ids in enumerate(data.compounds["input_compound_ids"])}
    d1 = int(tasks.loc[("D1", "classification"), "task_index"])
    assert data.y_class[rows["M01"], d1] == 1.0 and data.y_class[rows["M02"], d1] == -1.0
    assert data.y_regr[rows["M05"], 0] == pytest.approx(8.0)
    assert summary["counts"]["acyclic_rows"] == 2
    assert set(summary["timings_s"]) >= {"read", "validate", "standardize", "rows", "aggregate", "tasks", "write"}


def test_duplicate_structures_merge_into_one_row_keeping_all_ids(tmp_path):
    t0 = [t0_row("B1", binary=True)]
    t2 = MOLECULES + [("SALT", "Oc1ccccc1.[Na+].[Cl-]"), ("TAUT", "O=C1C=CC=CN1"), ("TAUT2", "Oc1ccccn1"),
                      ("R", "C[C@H](N)C(=O)O"), ("S", "C[C@@H](N)C(=O)O")]
    labels = [1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, 1, 1, -1, -1]
    t1 = [(c, "B1", "=", lab) for (c, _), lab in zip(t2, labels, strict=True)]
    write_inputs(tmp_path / "in", t0, t1, t2)
    prepare(small_config(), KEY, tmp_path / "in", tmp_path / "out", cache_dir=False, n_jobs=1, progress=False)
    data = check_contract(tmp_path / "out", t1_rows=len(t1))
    ids = [sorted(i) for i in data.compounds["input_compound_ids"]]
    assert ["M01", "SALT"] in ids and ["TAUT", "TAUT2"] in ids and ["R", "S"] in ids
    assert data.n_rows == 12
    row = ids.index(["M01", "SALT"])
    assert data.y_class[row, 0] == 1.0  # two actives merged


def test_censored_values_and_direction_reach_the_matrices(tmp_path):
    t0 = [t0_row("D1", binary=False, regression=True, thresholds=(6.0,), direction="low")]
    qualifiers = ["=", "<", ">", "=", "<=", "=", ">=", "=", "=", "="]
    values = [5.0, 5.5, 7.0, 6.5, 8.0, 4.0, 4.5, 7.5, 5.9, 6.2]
    t1 = [(c, "D1", q, v) for (c, _), q, v in zip(MOLECULES, qualifiers, values, strict=True)]
    write_inputs(tmp_path / "in", t0, t1, MOLECULES)
    summary = prepare(small_config(), KEY, tmp_path / "in", tmp_path / "out", cache_dir=False, n_jobs=1,
                      progress=False)
    data = check_contract(tmp_path / "out", t1_rows=10)
    rows = {ids[0]: r for r, ids in enumerate(data.compounds["input_compound_ids"])}
    censor = {c: int(data.y_censor[rows[c], 0]) for c in rows}
    assert censor["M02"] == -1 and censor["M03"] == 1 and censor["M01"] == 0 and censor["M05"] == -1
    # direction low at 6: '<5.5' active, '>7' inactive, '<=8' unknown (so no label), '>=4.5' unknown
    assert data.y_class[rows["M02"], 0] == 1.0 and data.y_class[rows["M03"], 0] == -1.0
    assert (rows["M05"], 0) not in set(zip(*data.y_class.nonzero(), strict=True))
    assert summary["counts"]["class_labels"] == 8 and summary["counts"]["regression_values"] == 10


@pytest.mark.parametrize("fmt", ["csv.gz", "parquet"])
def test_csv_gzip_and_parquet_inputs_give_the_same_result_as_csv(tmp_path, fmt):
    standard_inputs(tmp_path / "csv")
    standard_inputs(tmp_path / fmt, fmt=fmt)
    for name in ("csv", fmt):
        prepare(small_config(), KEY, tmp_path / name, tmp_path / f"out-{name}", cache_dir=tmp_path / "c",
                n_jobs=1, progress=False)
    a, b = PreparedData.load(tmp_path / "out-csv"), PreparedData.load(tmp_path / f"out-{fmt}")
    assert (a.x != b.x).nnz == 0 and (a.y_class != b.y_class).nnz == 0 and (a.y_regr != b.y_regr).nnz == 0
    assert np.array_equal(a.folds, b.folds)
    pd.testing.assert_frame_equal(a.tasks, b.tasks)


def test_warm_cache_rerun_gives_identical_output_without_restandardizing(tmp_path):
    inputs = standard_inputs(tmp_path / "in")
    cold = prepare(small_config(), KEY, inputs, tmp_path / "cold", cache_dir=tmp_path / "c", n_jobs=1,
                   progress=False)
    warm = prepare(small_config(), KEY, inputs, tmp_path / "warm", cache_dir=tmp_path / "c", n_jobs=1,
                   progress=False)
    assert cold["standardization"]["computed"] == 10 and warm["standardization"]["computed"] == 0
    assert warm["standardization"]["cache_hits"] == 10
    for f in ("x.npz", "y_class.npz", "y_regr.npz", "y_censor.npz", "folds.npy", "tasks.parquet",
              "compounds.parquet", "rejected.parquet"):
        assert (tmp_path / "cold" / f).read_bytes() == (tmp_path / "warm" / f).read_bytes(), f
    # a different key reuses the (key-independent) cache but permutes columns and reassigns folds
    other = prepare(small_config(), OTHER_KEY, inputs, tmp_path / "other", cache_dir=tmp_path / "c", n_jobs=1,
                    progress=False)
    assert other["standardization"]["computed"] == 0
    a, b = PreparedData.load(tmp_path / "cold"), PreparedData.load(tmp_path / "other")
    assert all(set(a.x[i].indices) != set(b.x[i].indices) for i in range(a.n_rows))


def test_prepared_rows_equal_prediction_rows_for_the_same_structure(tmp_path):
    inputs = standard_inputs(tmp_path / "in")
    config = small_config()
    prepare(config, KEY, inputs, tmp_path / "out", cache_dir=False, n_jobs=1, progress=False)
    data = PreparedData.load(tmp_path / "out", with_compounds=True)
    x, errors = featurize_smiles([s for _, s in MOLECULES], config, KEY)
    assert errors == [None] * len(MOLECULES)
    order = {ids[0]: r for r, ids in enumerate(data.compounds["input_compound_ids"])}
    for i, (cid, _) in enumerate(MOLECULES):
        assert (x[i] != data.x[order[cid]]).nnz == 0


def test_parallel_workers_give_the_same_output_as_one_process(tmp_path):
    """Enough molecules to use the process pool: 150 compounds of the shipped reference set."""
    from data_prep.reference import REFERENCE_DIR

    t2 = pd.read_csv(REFERENCE_DIR / "T2.csv").iloc[::3].head(150)
    t1 = pd.read_csv(REFERENCE_DIR / "T1.csv")
    t1 = t1[t1["input_compound_id"].isin(t2["input_compound_id"]) & (t1["input_assay_id"] == "R1")]
    inputs = tmp_path / "in"
    inputs.mkdir()
    t2.to_csv(inputs / "T2.csv", index=False)
    t1.to_csv(inputs / "T1.csv", index=False)
    pd.read_csv(REFERENCE_DIR / "T0.csv").to_csv(inputs / "T0.csv", index=False)
    one = prepare(small_config(), KEY, inputs, tmp_path / "one", cache_dir=False, n_jobs=1, progress=False)
    two = prepare(small_config(), KEY, inputs, tmp_path / "two", cache_dir=False, n_jobs=2, progress=False)
    assert one["standardization"]["jobs"] == 1 and two["standardization"]["jobs"] == 2
    for f in ("x.npz", "y_class.npz", "folds.npy", "compounds.parquet", "tasks.parquet"):
        assert (tmp_path / "one" / f).read_bytes() == (tmp_path / "two" / f).read_bytes(), f


def test_prepare_accepts_a_plan_file_and_records_its_hash(tmp_path):
    plan = Plan(data=small_config())
    plan.save(tmp_path / "plan.toml")
    (tmp_path / "secret.key").write_text(KEY.hex())
    summary = prepare(tmp_path / "plan.toml", tmp_path / "secret.key", standard_inputs(tmp_path / "in"),
                      tmp_path / "out", cache_dir=False, n_jobs=1, progress=False)
    assert summary["plan_hash"] == plan.hash
    assert prepare(plan, KEY, tmp_path / "in", tmp_path / "out2", cache_dir=False, n_jobs=1,
                   progress=False)["plan_hash"] == plan.hash
