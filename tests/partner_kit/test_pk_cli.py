"""`partner-kit train` / `evaluate` on a prepared directory written by PreparedData.save."""

from __future__ import annotations

import json

import pytest
from pk_helpers import small_plan, synthetic_data
from typer.testing import CliRunner

from partner_kit.cli import app


@pytest.fixture
def workspace(tmp_path):
    plan = small_plan()
    plan.save(tmp_path / "plan.toml")
    synthetic_data(plan).save(tmp_path / "prepared")
    return tmp_path


def _run(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_train_then_evaluate_writes_model_files_and_metrics(workspace):
    w = workspace
    r = _run("train", "--plan", w / "plan.toml", "--prepared", w / "prepared", "--out", w / "model",
             "--max-epochs", "3", "--quiet")
    assert r.exit_code == 0, r.output
    names = {p.name for p in (w / "model").iterdir()}
    assert {"trunk.safetensors", "heads.safetensors", "model.json", "metrics.json"} <= names
    saved = json.loads((w / "model" / "metrics.json").read_text())
    r = _run("evaluate", "--model", w / "model", "--prepared", w / "prepared", "--fold", "0",
             "--out", w / "eval.json", "--per-task", w / "tasks.csv")
    assert r.exit_code == 0, r.output
    ev = json.loads((w / "eval.json").read_text())
    assert ev["aggregate"]["auc_pr"] == pytest.approx(saved["test"]["auc_pr"], abs=1e-9)
    assert len(ev["per_task"]) == 6 and (w / "tasks.csv").read_text().startswith("task_index,kind")


def test_fine_tuning_from_a_trunk_file_with_frozen_trunk(workspace):
    w = workspace
    assert _run("train", "--plan", w / "plan.toml", "--prepared", w / "prepared", "--out", w / "base",
                "--max-epochs", "1", "--quiet").exit_code == 0
    r = _run("train", "--plan", w / "plan.toml", "--prepared", w / "prepared", "--out", w / "tuned",
             "--init-trunk", w / "base" / "trunk.safetensors", "--freeze-trunk", "--max-epochs", "2", "--quiet")
    assert r.exit_code == 0, r.output
    assert (w / "base" / "trunk.safetensors").read_bytes() == (w / "tuned" / "trunk.safetensors").read_bytes()
    info = json.loads((w / "tuned" / "model.json").read_text())
    assert info["init_trunk"] is True and info["freeze_trunk"] is True


def test_evaluate_on_mismatched_prepared_data_is_a_clear_error_not_a_traceback(workspace):
    w = workspace
    assert _run("train", "--plan", w / "plan.toml", "--prepared", w / "prepared", "--out", w / "model",
                "--max-epochs", "1", "--quiet").exit_code == 0
    other = small_plan(n_features=512)
    data = synthetic_data(other)
    data.manifest = {}
    data.save(w / "other")
    r = _run("evaluate", "--model", w / "model", "--prepared", w / "other")
    assert r.exit_code == 2
    assert "fingerprint size 512 but the model expects 256" in r.output
    assert "Traceback" not in r.output


def test_train_with_data_from_another_plan_is_a_clear_error(workspace):
    w = workspace
    small_plan(hidden=(16,)).save(w / "other.toml")
    r = _run("train", "--plan", w / "other.toml", "--prepared", w / "prepared", "--out", w / "m", "--quiet")
    assert r.exit_code == 2 and "prepared with plan hash" in r.output


def test_freeze_trunk_without_init_trunk_is_refused(workspace):
    w = workspace
    r = _run("train", "--plan", w / "plan.toml", "--prepared", w / "prepared", "--out", w / "m", "--freeze-trunk")
    assert r.exit_code == 2 and "--init-trunk" in r.output
