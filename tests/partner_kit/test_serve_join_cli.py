"""The operator's and the partners' commands, as typed: `consortium serve` with three `partner-kit join`."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fed_helpers import make_federation

from consortium.deploy import free_port
from consortium.ledger import verify

BIN = Path(sys.executable).parent


def _env(flwr_home: Path) -> dict[str, str]:
    env = dict(os.environ, FLWR_HOME=str(flwr_home))
    env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])
    return env


def _run(*args, cwd: Path) -> str:
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def _until(proc: subprocess.Popen, mark: str, timeout: float) -> str:
    """Read a join's output until `mark`, then Ctrl-C it; its whole output, after it exited with code 1."""
    seen, deadline = [], time.monotonic() + timeout
    for line in proc.stdout:
        seen.append(line)
        if mark in line or time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGINT)
    text = "".join(seen) + proc.communicate(timeout=60)[0]
    assert mark in text and proc.returncode == 1, text
    return text


@pytest.mark.slow
def test_serve_and_join_commands_run_the_plan_and_partners_leave_cleanly(tmp_path):
    """The README's commands, TLS and node authentication (the default), relative certificate paths."""
    fed = make_federation(tmp_path, rounds=1)
    port, run = free_port(), tmp_path / "run"
    _run(BIN / "consortium", "certs", "--out", "certs", cwd=tmp_path)
    for name in fed.partners():
        _run(BIN / "partner-kit", "keygen", "--out", f"nodes/{name}.key", cwd=tmp_path)
        _run(BIN / "consortium", "admit", f"nodes/{name}.key.pub", "--out", "run", cwd=tmp_path)
    _run(BIN / "partner-kit", "keygen", "--out", "nodes/X.key", cwd=tmp_path)  # a stranger: never admitted
    serve = subprocess.Popen(
        [BIN / "consortium", "serve", "--plan", fed.plan_path, "--out", "run", "--port", str(port), "--certs",
         "certs", "--timeout", "300"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(tmp_path / "flwr-serve"),
        start_new_session=True, cwd=tmp_path)
    joins = {}
    fed.reference_hashes()  # as `join --key` leaves it in each model dir (the reference set standardized once)
    try:
        first = serve.stdout.readline() + serve.stdout.readline()  # keys are registered before this: join now
        assert "SuperLink on 0.0.0.0:" in first and "TLS, node authentication, 3 admitted" in first, first
        stranger = fed.partners()["A"]  # X: A's data, its own model dir, and a node key never admitted
        partners = {**fed.partners(), "X": type(stranger)(**{**stranger.__dict__, "model": tmp_path / "X" / "model"})}
        cache = Path("federated") / "reference_hash.json"
        (partners["X"].model / cache).parent.mkdir(parents=True)
        (partners["X"].model / cache).write_bytes((stranger.model / cache).read_bytes())
        for name, cfg in partners.items():
            joins[name] = subprocess.Popen(
                [BIN / "partner-kit", "join", "--plan", cfg.plan, "--prepared", cfg.prepared, "--model", cfg.model,
                 "--superlink", f"127.0.0.1:{port}", "--name", name, "--root-certificates", "certs/ca.crt",
                 "--node-key", f"nodes/{name}.key", "--threads", "1",
                 *(["--key", str(tmp_path / "secret.key")] if name == "A" else [])],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(tmp_path / f"flwr-{name}"),
                start_new_session=True, cwd=tmp_path)
        stranger = _until(joins.pop("X"), "refused by the consortium (attempt 1 of 3)", timeout=200)
        out, _ = serve.communicate(timeout=400)
        assert serve.returncode == 0, out
        assert "finished: 1 rounds" in out and "Traceback" not in out
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(serve.pid, signal.SIGTERM)
        outputs = {}
        for name, proc in joins.items():
            proc.send_signal(signal.SIGINT)  # Ctrl-C: the partner leaves and stops its SuperNode
            outputs[name] = proc.communicate(timeout=60)[0]
    assert "error: the consortium refused this node" in stranger, stranger
    assert "refused a node: No SuperNode found with the given public key" in out  # the operator sees it too
    for name, text in outputs.items():
        assert joins[name].returncode == 0, text
        assert "plan" in text and "left the federation" in text and "Traceback" not in text
        assert json.loads((fed.partners()[name].model / "metrics.json").read_text())["federated"]
    assert [len(e.node_ids) for e in verify(run / "ledger.jsonl")] == [3]
    status = subprocess.run([BIN / "consortium", "status", run, "--json"], capture_output=True, text=True,
                            check=True)
    assert json.loads(status.stdout)["state"] == "finished"
