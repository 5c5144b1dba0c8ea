"""`consortium simulate` / `status` end to end on three small ToxCast partners (input dirs prepared on the fly)."""

from __future__ import annotations

import csv
import dataclasses
import json

import pytest
from typer.testing import CliRunner

from consortium.cli import app
from consortium.ledger import verify
from consortium.plan import FederationSpec, Plan, TrainingSpec, TrunkSpec
from data_prep.config import FingerprintConfig, PrepConfig
from data_prep.key import generate_key

PARTNERS = ("APR", "NVS", "OTHERS")  # the three smallest toxcast-6 partners


def _plan(tmp_path) -> Plan:
    plan = Plan(
        name="toxcast-3-test",
        data=PrepConfig(fingerprint=FingerprintConfig(size=2048)),
        trunk=TrunkSpec(hidden_sizes=[64], dropout=0.2),
        training=TrainingSpec(max_epochs=2, patience=1),
        federation=FederationSpec(rounds=2, local_steps=10, min_partners=3),
    )
    plan.save(tmp_path / "plan.toml")
    return plan


@pytest.mark.slow
def test_simulate_prepares_federates_trains_baselines_and_writes_the_partner_table(tmp_path, shared_data):
    _plan(tmp_path)
    key = generate_key(tmp_path / "secret.key")
    dirs = [str(shared_data / "consortia" / "toxcast-6" / p) for p in PARTNERS]
    run = tmp_path / "run"
    args = ["simulate", "--plan", str(tmp_path / "plan.toml"), "--key", str(key), "--out", str(run)]
    for d in dirs:
        args += ["--partners", d]
    runner = CliRunner()
    first = runner.invoke(app, [*args, "--rounds", "1"])
    assert first.exit_code == 0, first.output
    again = runner.invoke(app, [*args, "--rounds", "1"])
    assert again.exit_code == 2 and "pass --resume" in again.output
    resumed = runner.invoke(app, [*args, "--rounds", "2", "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert "using prepared" in resumed.output  # the partner inputs were prepared once, then reused
    for name in PARTNERS:
        assert name in resumed.output
    assert [e.round for e in verify(run / "ledger.jsonl")] == [1, 2]
    assert (run / "checkpoints" / "round-002.safetensors").is_file()
    summary = json.loads((run / "summary.json").read_text())
    assert [p["partner"] for p in summary["partners"]] == list(PARTNERS)
    for row in summary["partners"]:
        assert 0.0 <= row["federated_auc_roc"] <= 1.0 and 0.0 <= row["single_auc_roc"] <= 1.0
        assert row["delta_auc_pr"] == pytest.approx(row["federated_auc_pr"] - row["single_auc_pr"])
        assert row["tasks"] > 0 and row["best_round"] in (1, 2)
    with open(run / "summary.csv") as fh:
        assert [r["partner"] for r in csv.DictReader(fh)] == list(PARTNERS)
    for name in PARTNERS:
        assert (run / "partners" / name / "model" / "heads.safetensors").is_file()
        assert (run / "partners" / name / "baseline" / "metrics.json").is_file()
    status = runner.invoke(app, ["status", str(run)])
    assert status.exit_code == 0 and "verifies (2 rounds)" in status.output


def test_simulate_refuses_fewer_partners_than_the_plan_needs(tmp_path):
    plan = _plan(tmp_path)
    plan = dataclasses.replace(plan, federation=dataclasses.replace(plan.federation, min_partners=3))
    plan.save(tmp_path / "plan.toml")
    result = CliRunner().invoke(app, ["simulate", "--plan", str(tmp_path / "plan.toml"), "--out",
                                      str(tmp_path / "run"), "--partners", str(tmp_path)])
    assert result.exit_code == 2 and "needs at least 3 partners" in result.output


def test_status_reports_a_broken_ledger(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "status.json").write_text(json.dumps({"state": "finished", "round": 1, "rounds": 1, "nodes": [5]}))
    (run / "ledger.jsonl").write_text('{"round": 1}\n')
    result = CliRunner().invoke(app, ["status", str(run)])
    assert result.exit_code == 1 and "BROKEN" in result.output  # a broken audit trail is an error for scripts
