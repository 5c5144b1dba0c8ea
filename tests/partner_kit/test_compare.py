"""`partner-kit compare` on real (tiny) trained models: the report, and predictions rebuilt from --prepared."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from partner_kit.cli import app
from partner_kit.training import fit


@pytest.fixture
def models(tmp_path, plan, data):
    prepared = data.save(tmp_path / "prepared")
    for name, seed in (("single", 1), ("federated", 2)):
        fit(plan, data, tmp_path / name, seed=seed, progress=False, max_epochs=2)
    return tmp_path, prepared


def test_compare_rebuilds_missing_predictions_from_prepared_and_reports(models):
    root, prepared = models
    saved = pd.read_parquet(root / "single" / "test_predictions.parquet")
    (root / "single" / "test_predictions.parquet").unlink()
    args = ["compare", "--single", str(root / "single"), "--federated", str(root / "federated"),
            "--out", str(root / "report.html"), "--replicates", "100"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2 and "--prepared" in res.output
    res = CliRunner().invoke(app, [*args, "--prepared", str(prepared)])
    assert res.exit_code == 0, res.output
    rebuilt = pd.read_parquet(root / "single" / "test_predictions.parquet")
    pd.testing.assert_frame_equal(rebuilt, saved, check_exact=False, atol=1e-6)
    data = json.loads((root / "report.json").read_text())
    assert data["variants"] == ["single", "federated"]
    assert data["partners"]["partner"]["n_evaluable"] >= 1
    assert (root / "report.html").read_text().startswith("<!DOCTYPE html>")
