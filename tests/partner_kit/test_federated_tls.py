"""Deployed on loopback with TLS and Flower's node authentication, the consortium's default.

One run, several attackers: an admitted partner with the wrong secret key (refused by its reference hash), a
node whose key was never admitted (refused by the SuperLink), and a plaintext client (refused before it
connects). The admitted partners join with the default warm executor over TLS and finish the round.
"""

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

from consortium.certs import make_certs, make_node_keys
from consortium.deploy import ADMITTED_DIR, TlsOptions, free_port, run_deployed, start_consortium
from consortium.ledger import verify
from data_prep.errors import InputError
from data_prep.key import generate_key
from partner_kit.join import probe_superlink, start_supernode

BIN = Path(sys.executable).parent


def _stop(procs) -> None:
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.slow
def test_tls_with_node_auth_admits_only_registered_keys_with_the_consortiums_reference_hash(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # certificate paths below are relative: they must be resolved before any start
    fed = make_federation(tmp_path, rounds=1, min_partners=2)
    certs = make_certs(Path("certs"), ["127.0.0.1"])
    run = tmp_path / "run"
    keys = {n: make_node_keys(tmp_path / "nodes" / f"{n}.key") for n in ("A", "B", "C", "X")}
    (run / ADMITTED_DIR).mkdir(parents=True)
    for n in ("A", "B", "C"):  # X is never admitted
        (run / ADMITTED_DIR / f"{n}.pub").write_bytes(keys[n][1].read_bytes())
    hashes = fed.reference_hashes()
    hashes["C"] = fed.reference_hashes(key=generate_key(tmp_path / "other.key"))["C"]  # C has another key
    assert hashes["A"] == hashes["B"] != hashes["C"]
    tls = TlsOptions(insecure=False, ca_certfile=Path("certs/ca.crt"), certfile=Path("certs/server.pem"),
                     keyfile=Path("certs/server.key"))
    consortium = start_consortium(run, tls=tls, flwr_home=tmp_path / "flwr-home" / "consortium")
    nodes = {}
    try:
        with pytest.raises(InputError, match="uses TLS: join with --root-certificates"):
            probe_superlink(consortium.address, insecure=True, root_certificates=None)
        probe_superlink(consortium.address, insecure=False, root_certificates=certs.ca_cert)  # the right way: fine
        partners = fed.partners(hashes=hashes)
        for name in ("A", "B", "C", "X"):
            cfg = partners["A" if name == "X" else name]
            if name == "X":
                cfg = type(cfg)(**{**cfg.__dict__, "model": tmp_path / "X" / "model", "name": "X"})
            nodes[name] = start_supernode(cfg, consortium.address, port=free_port(), insecure=False,
                                          root_certificates=Path("certs/ca.crt"), node_key=keys[name][0],
                                          log=tmp_path / "logs" / f"{name}.log", warm=True, threads=1,
                                          flwr_home=tmp_path / "flwr-home" / name,
                                          audit_log=tmp_path / f"audit-{name}.jsonl" if name == "A" else None)
        # The unadmitted node is turned away by the SuperLink itself (Flower's node authentication).
        assert nodes["X"].wait(timeout=120) != 0
        result = run_deployed(consortium, fed.plan_path, run, rounds=1, timeout=400)
    finally:
        _stop(nodes.values())
        consortium.stop()
    assert result["flower"]["status"] == "finished:completed"
    x_log = (tmp_path / "logs" / "X.log").read_text()
    assert "Failed to activate SuperNode" in x_log
    assert "No SuperNode found with the given public key" in (run / "logs" / "superlink.log").read_text()
    for name in ("A", "B"):  # warm executor over TLS: no SSL errors, a federated model written
        log = (tmp_path / "logs" / f"{name}.log").read_text()
        assert "WRONG_VERSION_NUMBER" not in log and "Traceback" not in log
        assert json.loads((partners[name].model / "metrics.json").read_text())["federated"]
    entries = verify(run / "ledger.jsonl")
    assert len(entries) == 1 and len(entries[0].node_ids) == 2
    assert len(entries[0].refused) == 1 and "secret key, plan or kit differs" in entries[0].refused[0]
    assert json.loads((run / "admission.json").read_text())["reference_hash"] == hashes["A"]
    _assert_only_trunk_count_loss_and_hash_left(tmp_path / "audit-A.jsonl", fed.plan, hashes["A"])


def _assert_only_trunk_count_loss_and_hash_left(audit: Path, plan, reference: str) -> None:
    """The wire audit of partner A: every outgoing payload is one of what may cross the network."""
    from consortium.plan import trunk_shapes

    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [e["message_type"] for e in lines] == ["train", "evaluate"]
    status = {"code": {"type": "int"}, "message": {"type": "str", "size": len("Success")}}
    train, final = lines
    assert list(train["arrays"]) == ["fitres.parameters"]
    assert [(a["dtype"], a["shape"]) for a in train["arrays"]["fitres.parameters"]] == [
        ("float32", list(shape)) for shape in trunk_shapes(plan).values()]
    assert train["metrics"] == {"fitres.num_examples": {"num_examples": {"type": "int"}}}
    assert train["configs"] == {"fitres.metrics": {"loss": {"type": "float"},
                                                   "reference_hash": {"type": "str", "size": len(reference)}},
                                "fitres.status": status}
    assert final["arrays"] == {}  # the final evaluation returns a loss and a row count only
    assert final["metrics"] == {"evaluateres.loss": {"loss": {"type": "float"}},
                                "evaluateres.num_examples": {"num_examples": {"type": "int"}}}
    assert final["configs"] == {"evaluateres.metrics": {}, "evaluateres.status": status}


@pytest.mark.slow
def test_admit_and_revoke_act_on_a_running_consortium(tmp_path):
    """`consortium admit` registers with a running SuperLink; `--revoke` unregisters: Flower drops the node."""
    from typer.testing import CliRunner

    from consortium.cli import app as consortium_app

    fed = make_federation(tmp_path, rounds=1)
    certs = make_certs(tmp_path / "certs", ["127.0.0.1"])
    run = tmp_path / "run"
    private, public = make_node_keys(tmp_path / "nodes" / "A.key")
    hashes = fed.reference_hashes()
    tls = TlsOptions(insecure=False, ca_certfile=certs.ca_cert, certfile=certs.server_cert, keyfile=certs.server_key)
    consortium = start_consortium(run, tls=tls)  # nobody admitted yet
    node = None
    try:
        result = CliRunner().invoke(consortium_app, ["admit", str(public), "--out", str(run)])
        assert result.exit_code == 0 and "registered with the running SuperLink" in result.output, result.output
        log = tmp_path / "logs" / "A.log"
        node = start_supernode(fed.partners(hashes=hashes)["A"], consortium.address, port=free_port(), insecure=False,
                               root_certificates=certs.ca_cert, node_key=private, log=log, warm=False,
                               flwr_home=tmp_path / "flwr-home" / "A")
        deadline = time.monotonic() + 120
        while "SuperNode ID" not in log.read_text() and time.monotonic() < deadline:
            assert node.poll() is None, log.read_text()
            time.sleep(1)
        assert "SuperNode ID" in log.read_text()  # admitted while running: connected
        result = CliRunner().invoke(consortium_app, ["admit", str(public), "--out", str(run), "--revoke"])
        assert result.exit_code == 0 and "disconnected" in result.output, result.output
        node.wait(timeout=60)  # Flower drops an unregistered node
    finally:
        if node is not None:
            _stop([node])
        consortium.stop()
    assert not (run / ADMITTED_DIR / "A.pub").exists()
