"""Deployed on loopback with TLS (the default), real Flower processes: what the consortium refuses, and how it says so.

- A plaintext client against a TLS `consortium serve`: `partner-kit join --insecure` stops with its `error:` line
  and serve's output names the refused peer (the TLS front, `consortium.tls_front`; Flower's SuperLink alone drops
  the failed handshake silently); so does Flower's own SuperNode started with `--insecure`.
- The example cap of `consortium admit --max-examples N`, N below the partner's real training count: its replies
  are refused every round, each ledger line names the partner and the reason, and the run still finishes with
  the other two (a round needs the plan's `min_partners` valid replies; with fewer the run fails, and says why).
  The certificates and admissions are made by the CLI (`consortium certs / admit`, `partner-kit keygen`); the
  consortium and the SuperNodes are started as `serve` and `join` start them, in two steps, so all three partners
  are connected before the run begins.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from fed_helpers import make_federation

from consortium.deploy import ADMITTED_DIR, TlsOptions, free_port, run_deployed, start_consortium
from consortium.ledger import verify
from consortium.run_status import FRONT_STATUS
from partner_kit.join import start_supernode

BIN = Path(sys.executable).parent


def _env(flwr_home: Path) -> dict[str, str]:
    env = dict(os.environ, FLWR_HOME=str(flwr_home), OMP_NUM_THREADS="1")
    env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])
    return env


def _run(*args, cwd: Path) -> str:
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


class Lines:
    """A process's output lines, read in a thread, so a test can wait for one with a deadline."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [self._queue.put(line) for line in proc.stdout], daemon=True).start()

    def wait_for(self, mark: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                line = self._queue.get(timeout=0.5)
                self.seen.append(line)
                if mark in line:
                    return line
        raise AssertionError(f"no line with {mark!r} within {timeout:.0f} s; output so far:\n{''.join(self.seen)}")

    def text(self) -> str:
        with contextlib.suppress(queue.Empty):
            while True:
                self.seen.append(self._queue.get_nowait())
        return "".join(self.seen)


def _serve(fed, tmp_path: Path, port: int, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [BIN / "consortium", "serve", "--plan", fed.plan_path, "--out", "run", "--port", str(port), "--certs", "certs",
         "--host", "127.0.0.1", "--timeout", "400", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(tmp_path / "flwr-serve"),
        start_new_session=True, cwd=tmp_path)


def _stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    """Stop a process group (its output is read elsewhere, or goes to a file)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@pytest.mark.slow
def test_plaintext_client_against_tls_serve_is_refused_with_a_message_on_both_sides(tmp_path):
    fed = make_federation(tmp_path, rounds=1)  # three partners needed: serve waits while the stranger knocks
    fed.reference_hashes()  # cached in each model dir, as `join --key` leaves it
    port = free_port()
    _run(BIN / "consortium", "certs", "--out", "certs", cwd=tmp_path)
    _run(BIN / "partner-kit", "keygen", "--out", "nodes/A.key", cwd=tmp_path)
    _run(BIN / "consortium", "admit", "nodes/A.key.pub", "--out", "run", cwd=tmp_path)
    serve = _serve(fed, tmp_path, port)
    lines = Lines(serve)
    supernode = None
    try:
        lines.wait_for("SuperLink on 127.0.0.1:", 120)
        lines.wait_for("TLS-only front on 127.0.0.1:", 10)
        join = subprocess.run(  # the careless partner: --insecure against the TLS consortium
            [BIN / "partner-kit", "join", "--plan", fed.plan_path, "--prepared", fed.prepared["A"], "--model",
             tmp_path / "A" / "model", "--superlink", f"127.0.0.1:{port}", "--insecure", "--name", "A"],
            capture_output=True, text=True, env=_env(tmp_path / "flwr-A"), cwd=tmp_path, timeout=120)
        assert join.returncode == 2, join.stdout + join.stderr
        assert "error: the SuperLink at 127.0.0.1:" in join.stderr + join.stdout
        assert "uses TLS: join with --root-certificates ca.crt" in join.stderr + join.stdout
        refused = lines.wait_for("serve: refused a plaintext (non-TLS) connection from 127.0.0.1:", 30)
        assert "an HTTP/1 request without TLS" in refused and "--root-certificates ca.crt" in refused
        # Flower's own SuperNode in plaintext (no probe in front of it): refused at the front too, counted.
        log = open(tmp_path / "supernode-X.log", "wb")  # noqa: SIM115 (closed below)
        supernode = subprocess.Popen(
            [BIN / "flower-supernode", "--insecure", "--superlink", f"127.0.0.1:{port}", "--port", str(free_port())],
            stdout=log, stderr=subprocess.STDOUT, env=_env(tmp_path / "flwr-X"), start_new_session=True)
        deadline = time.monotonic() + 60
        while json.loads((tmp_path / "run" / FRONT_STATUS).read_text())["plaintext_refused"] < 2:
            assert time.monotonic() < deadline, (tmp_path / "run" / FRONT_STATUS).read_text()
            time.sleep(0.5)
        status = subprocess.run([BIN / "consortium", "status", "run", "--json"], capture_output=True, text=True,
                                cwd=tmp_path)
        assert json.loads(status.stdout)["plaintext_refused"] >= 2, status.stdout
    finally:
        if supernode is not None:
            _stop(supernode, signal.SIGKILL)
            log.close()
        _stop(serve)
    out = lines.text()
    assert out.count("serve: refused a plaintext") == 1, out  # one line per peer address per minute
    assert "Traceback" not in out and serve.returncode == 2  # stopped by SIGTERM: "error: stopped; resume ..."


@pytest.mark.slow
def test_example_cap_below_the_real_count_refuses_that_partner_every_round_and_the_run_finishes(tmp_path):
    fed = make_federation(tmp_path, rounds=2, min_partners=2)  # A, B, C; a round needs 2 valid replies
    hashes = fed.reference_hashes()
    _run(BIN / "consortium", "certs", "--out", "certs", cwd=tmp_path)
    for name in ("A", "B", "C"):
        _run(BIN / "partner-kit", "keygen", "--out", f"nodes/{name}.key", cwd=tmp_path)
    capped = _run(BIN / "consortium", "admit", "nodes/A.key.pub", "--out", "run", "--max-examples", "10",
                  cwd=tmp_path)
    assert "more than 10 training examples will be refused" in capped
    for name in ("B", "C"):
        _run(BIN / "consortium", "admit", f"nodes/{name}.key.pub", "--out", "run", cwd=tmp_path)
    certs, run = tmp_path / "certs", tmp_path / "run"
    tls = TlsOptions(insecure=False, ca_certfile=certs / "ca.crt", certfile=certs / "server.pem",
                     keyfile=certs / "server.key")
    # What `consortium serve` does, in two steps, so that all three partners are connected before the run
    # starts (a round samples the nodes connected when it begins: a late partner would miss round 1).
    consortium = start_consortium(run, tls=tls, flwr_home=tmp_path / "flwr-serve")
    nodes = {}
    try:
        for name, cfg in fed.partners(hashes=hashes).items():
            nodes[name] = start_supernode(cfg, consortium.address, port=free_port(), insecure=False,
                                          root_certificates=certs / "ca.crt",
                                          node_key=tmp_path / "nodes" / f"{name}.key",
                                          log=tmp_path / "logs" / f"{name}.log", warm=True, threads=1,
                                          flwr_home=tmp_path / f"flwr-{name}")
        for name in nodes:
            _wait_for_line(tmp_path / "logs" / f"{name}.log", "SuperNode ID", nodes[name], 120)
        result = run_deployed(consortium, fed.plan_path, run, rounds=2, timeout=400)
    finally:
        for proc in nodes.values():
            _stop(proc)
        consortium.stop()
    assert result["flower"]["status"] == "finished:completed"
    node_a = int((run / ADMITTED_DIR / "A.node-id").read_text())
    others = sorted(int((run / ADMITTED_DIR / f"{n}.node-id").read_text()) for n in ("B", "C"))
    entries = verify(run / "ledger.jsonl")
    assert [e.round for e in entries] == [1, 2]
    for entry in entries:  # every round: B and C averaged, A refused with its name and the reason
        assert sorted(entry.node_ids) == others, entry
        assert len(entry.refused) == 1, entry.refused
        assert str(node_a) in entry.refused[0] and "partner A claims" in entry.refused[0]
        assert "more than the 10 registered at admission" in entry.refused[0]
    claimed = int(entries[0].refused[0].split("partner A claims ")[1].split()[0])
    assert claimed > 10  # its real training count
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "finished" and sum("partner A claims" in r for r in status["refused"]) == 2
    assert status["no_round_nodes"] == [node_a]  # connected, in no round: no federated model for A
    for name in ("B", "C"):
        assert json.loads((fed.partners()[name].model / "metrics.json").read_text())["federated"]
    for name in ("A", "B", "C"):
        assert "Traceback" not in (tmp_path / "logs" / f"{name}.log").read_text()


def _wait_for_line(log: Path, mark: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.is_file() and mark in log.read_text(errors="replace"):
            return
        assert proc.poll() is None, log.read_text(errors="replace")
        time.sleep(0.5)
    raise AssertionError(f"{log}: no {mark!r} within {timeout:.0f} s")
