"""End to end on shared consortium data: prepare -> `partner-kit train` -> `partner-kit evaluate`.

A hybrid chembl-3/P1 subset (its four largest assays; every 9th record made '>' and every 9th from the 5th
made '<', so censored regression is exercised) goes through `data_prep.prepare` with a small trunk.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from consortium.plan import Plan, TrainingSpec, TrunkSpec
from data_prep.key import generate_key
from data_prep.prepared import PreparedData
from partner_kit.cli import app

pytestmark = pytest.mark.slow


def _hybrid_subset(src, dst, n_assays: int = 4) -> None:
    dst.mkdir(parents=True)
    t0 = pd.read_csv(src / "T0.csv")
    t1 = pd.read_csv(src / "T1.csv.gz")
    t2 = pd.read_csv(src / "T2.csv")
    top = t1["input_assay_id"].value_counts().index[:n_assays]
    t1 = t1[t1["input_assay_id"].isin(top)].reset_index(drop=True)
    qualifier = t1["standard_qualifier"].to_numpy(copy=True)
    qualifier[::9], qualifier[4::9] = ">", "<"
    t1["standard_qualifier"] = qualifier
    t0[t0["input_assay_id"].isin(top)].to_csv(dst / "T0.csv", index=False)
    t1.to_csv(dst / "T1.csv.gz", index=False)
    t2[t2["input_compound_id"].isin(t1["input_compound_id"])].to_csv(dst / "T2.csv", index=False)


def test_hybrid_partner_trains_and_evaluates_end_to_end_from_prepared_data(tmp_path, shared_data):
    from data_prep.prepare import prepare

    _hybrid_subset(shared_data / "consortia" / "chembl-3" / "P1", tmp_path / "input")
    plan = Plan(name="e2e", trunk=TrunkSpec(hidden_sizes=[64]), training=TrainingSpec(max_epochs=4, seed=3))
    plan.save(tmp_path / "plan.toml")
    generate_key(tmp_path / "secret.key")
    prepare(tmp_path / "plan.toml", tmp_path / "secret.key", tmp_path / "input", tmp_path / "prepared",
            cache_dir=False, progress=False)
    data = PreparedData.load(tmp_path / "prepared")
    assert len(data.class_tasks) and len(data.regr_tasks)
    assert (data.y_censor.data != 0).any()

    runner = CliRunner()
    result = runner.invoke(app, ["train", "--plan", str(tmp_path / "plan.toml"), "--prepared",
                                 str(tmp_path / "prepared"), "--out", str(tmp_path / "model"), "--quiet"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "model" / "metrics.json").read_text())
    info = json.loads((tmp_path / "model" / "model.json").read_text())
    assert info["plan_hash"] == plan.hash == data.manifest["plan_hash"]
    assert info["n_class_tasks"] == len(data.class_tasks) and info["n_regr_tasks"] == len(data.regr_tasks)
    assert 1 <= metrics["epochs_run"] <= 4
    assert metrics["test"]["n_regr_evaluable"] >= 1 and math.isfinite(metrics["test"]["rmse"])

    result = runner.invoke(app, ["evaluate", "--model", str(tmp_path / "model"), "--prepared",
                                 str(tmp_path / "prepared"), "--fold", "0", "--out", str(tmp_path / "eval.json")])
    assert result.exit_code == 0, result.output
    evaluation = json.loads((tmp_path / "eval.json").read_text())
    for key in ("auc_roc", "auc_pr", "rmse", "r2"):
        saved, again = metrics["test"][key], evaluation["aggregate"][key]
        assert (saved is None and again is None) or np.isclose(saved, again, atol=1e-9), key
