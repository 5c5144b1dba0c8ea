"""A run's ledger is held to the heads its checkpoints recorded; status says when the server is gone."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from cons_helpers import scripted_app, tiny_plan
from typer.testing import CliRunner

from consortium.cli import app
from consortium.embedded import run_embedded
from consortium.ledger import GENESIS, LedgerError, line_sha256, verify, verify_run
from consortium.run_status import read_status, writer_identity
from consortium.server_app import RunSettings
from data_prep.errors import InputError

HONEST = {"A": (1.0, 10, ""), "B": (2.0, 20, ""), "C": (3.0, 30, "")}


def _run(run_dir, rounds=3, total=None, resume=False, on_status=None):
    plan = tiny_plan(rounds=total or rounds)
    settings = RunSettings(plan=plan, run_dir=run_dir, rounds=rounds, resume=resume, mode="embedded",
                           on_status=on_status)
    return run_embedded(settings, scripted_app(HONEST), {n: {} for n in HONEST})[0]


def _rechain(lines: list[str]) -> list[str]:
    """What a forger does after editing a line: recompute every later previous-line hash."""
    prev, out = GENESIS, []
    for line in lines:
        entry = json.loads(line)
        entry["prev_sha256"] = prev
        text = json.dumps(entry, sort_keys=True, separators=(",", ":"))
        out.append(text)
        prev = line_sha256(text.encode())
    return out


def _status(run_dir):
    return CliRunner().invoke(app, ["status", str(run_dir)])


def test_an_untouched_run_verifies_and_status_exits_zero(tmp_path):
    _run(tmp_path / "run")
    assert [e.round for e in verify_run(tmp_path / "run")] == [1, 2, 3]
    result = _status(tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert "verifies (3 rounds)" in result.output and "finished" in result.output


def test_a_removed_last_line_is_detected_and_resume_refuses_it(tmp_path):
    run = tmp_path / "run"
    _run(run, rounds=2, total=4)
    ledger = run / "ledger.jsonl"
    lines = ledger.read_text().splitlines()
    ledger.write_text(lines[0] + "\n")
    verify(ledger)  # the chain alone still verifies: that is the hole
    with pytest.raises(LedgerError, match="ends at round 1 but checkpoint round-002.safetensors"):
        verify_run(run)
    result = _status(run)
    assert result.exit_code == 1 and "BROKEN" in result.output and "error:" in result.output
    with pytest.raises(InputError, match="lines were removed"):
        _run(run, rounds=4, resume=True)


def test_an_edited_line_with_a_recomputed_chain_is_detected_and_resume_refuses_it(tmp_path):
    run = tmp_path / "run"
    _run(run, rounds=2, total=4)
    ledger = run / "ledger.jsonl"
    lines = ledger.read_text().splitlines()
    first = json.loads(lines[0])
    first["examples"] = [999999, *first["examples"][1:]]
    lines[0] = json.dumps(first, sort_keys=True, separators=(",", ":"))
    ledger.write_text("\n".join(_rechain(lines)) + "\n")
    verify(ledger)  # a consistent chain
    with pytest.raises(LedgerError, match="line 1 \\(round 1\\) is not the line checkpoint round-001"):
        verify_run(run)
    assert _status(run).exit_code == 1
    with pytest.raises(InputError, match="rewritten"):
        _run(run, rounds=4, resume=True)


def test_a_deleted_ledger_is_detected(tmp_path):
    run = tmp_path / "run"
    _run(run, rounds=1)
    (run / "ledger.jsonl").unlink()
    with pytest.raises(LedgerError, match="ends at round 0"):
        verify_run(run)


def test_status_is_running_only_once_partners_are_there_and_stopped_when_the_server_is_gone(tmp_path):
    seen = []
    _run(tmp_path / "run", rounds=1, on_status=seen.append)
    states = [(s["state"], s["round"]) for s in seen]
    assert states.index(("waiting for partners", 0)) < states.index(("running", 0)) < states.index(("running", 1))
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    status.update(state="running", round=1, pid=dead.pid, pid_started=None)
    (tmp_path / "run" / "status.json").write_text(json.dumps(status))
    st = read_status(tmp_path / "run")
    assert st["state"] == "stopped" and st["last_state"] == "running" and "is gone" in st["error"]
    result = _status(tmp_path / "run")
    assert result.exit_code == 0 and "stopped" in result.output
    status.update(writer_identity())  # this (live) process: still running
    (tmp_path / "run" / "status.json").write_text(json.dumps(status))
    assert read_status(tmp_path / "run")["state"] == "running"
    status["pid_started"] = "1"  # same pid, another process start: the pid was reused
    (tmp_path / "run" / "status.json").write_text(json.dumps(status))
    assert read_status(tmp_path / "run")["state"] == "stopped"
