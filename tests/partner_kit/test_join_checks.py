"""What `partner-kit join` checks before and says after: TLS probe, how a join ended, node keys."""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time

import pytest
from typer.testing import CliRunner

from consortium.certs import check_node_public_key, make_certs, make_node_keys
from consortium.cli import app as consortium_app
from data_prep.errors import InputError
from partner_kit.cli import app as partner_app
from partner_kit.federated import PartnerConfig
from partner_kit.join import outcome, probe_superlink


def _server(handler) -> tuple[str, threading.Event]:
    """A one-connection-at-a-time TCP server on loopback running `handler(conn)`; returns (address, stop)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    sock.settimeout(0.2)
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            with conn:
                handler(conn)
        sock.close()

    threading.Thread(target=loop, daemon=True).start()
    return f"127.0.0.1:{sock.getsockname()[1]}", stop


def _plain(conn) -> None:
    conn.recv(4096)
    conn.sendall(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")


def test_probe_refuses_tls_against_plaintext_and_plaintext_against_tls(tmp_path):
    certs = make_certs(tmp_path / "certs", ["127.0.0.1"])
    other = make_certs(tmp_path / "other", ["127.0.0.1"])
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(certs.server_cert, certs.server_key)

    def tls(conn) -> None:
        try:
            with ctx.wrap_socket(conn, server_side=True) as s:
                s.recv(1)
        except (ssl.SSLError, OSError):
            pass

    plain_addr, stop_plain = _server(_plain)
    tls_addr, stop_tls = _server(tls)
    try:
        with pytest.raises(InputError, match="does not speak TLS"):
            probe_superlink(plain_addr, insecure=False, root_certificates=certs.ca_cert)
        probe_superlink(plain_addr, insecure=True, root_certificates=None)  # loopback demo: fine
        with pytest.raises(InputError, match="uses TLS: join with --root-certificates"):
            probe_superlink(tls_addr, insecure=True, root_certificates=None)
        with pytest.raises(InputError, match="does not verify"):
            probe_superlink(tls_addr, insecure=False, root_certificates=other.ca_cert)
        probe_superlink(tls_addr, insecure=False, root_certificates=certs.ca_cert)
    finally:
        stop_plain.set()
        stop_tls.set()
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    probe_superlink(f"127.0.0.1:{port}", insecure=False, root_certificates=certs.ca_cert)  # not up yet: wait for it
    with pytest.raises(InputError, match="HOST:PORT"):
        probe_superlink("consortium-without-port", insecure=True, root_certificates=None)


def test_outcome_says_whether_a_federated_model_was_written(tmp_path):
    cfg = PartnerConfig(plan=tmp_path / "plan.toml", prepared=tmp_path / "prepared", model=tmp_path / "model")
    started = time.time() - 1
    ok, text = outcome(cfg, started, 1, left=False)
    assert not ok and "joined after the last round" in text and "no federated model" in text
    assert "single-partner model is unchanged" in text
    ok, text = outcome(cfg, started, 1, left=False, refused=True)
    assert not ok and "consortium admit" in text
    assert outcome(cfg, started, 0, left=True) == (True, "left the federation (no federated round finished while "
                                                         "joined)")
    cfg.model.mkdir()
    (cfg.model / "metrics.json").write_text(json.dumps({"federated": True}))
    ok, text = outcome(cfg, started, 1, left=False)
    assert ok and "federated model is in" in text


def test_keygen_certs_and_admit_commands(tmp_path):
    runner = CliRunner()
    result = runner.invoke(partner_app, ["keygen", "--out", str(tmp_path / "p.key")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "p.key").stat().st_mode & 0o777 == 0o600
    assert check_node_public_key(tmp_path / "p.key.pub").startswith(b"ecdsa-sha2-nistp384 ")
    again = runner.invoke(partner_app, ["keygen", "--out", str(tmp_path / "p.key")])
    assert again.exit_code == 2 and "--force" in again.output
    result = runner.invoke(consortium_app, ["certs", "--out", str(tmp_path / "certs"), "--host", "example.org"])
    assert result.exit_code == 0 and (tmp_path / "certs" / "server.key").stat().st_mode & 0o777 == 0o600
    run = tmp_path / "run"
    private = runner.invoke(consortium_app, ["admit", str(tmp_path / "p.key"), "--out", str(run)])
    assert private.exit_code == 2 and "never the private key" in private.output
    assert runner.invoke(consortium_app, ["admit", str(tmp_path / "p.key.pub"), "--out", str(run),
                                          "--name", "pharma-a"]).exit_code == 0
    assert (run / "admitted" / "pharma-a.pub").read_bytes() == (tmp_path / "p.key.pub").read_bytes()
    assert runner.invoke(consortium_app, ["admit", str(tmp_path / "p.key.pub"), "--out", str(run), "--name",
                                          "pharma-a", "--revoke"]).exit_code == 0
    assert not (run / "admitted" / "pharma-a.pub").exists()
    make_node_keys(tmp_path / "q.key")


def test_serve_refuses_insecure_off_loopback_missing_certs_and_a_port_in_use(tmp_path):
    runner = CliRunner()
    plan = tmp_path / "plan.toml"
    made = runner.invoke(consortium_app, ["init", "--out", str(plan), "--fp-size", "64", "--hidden", "8"])
    assert made.exit_code == 0, made.output
    base = ["serve", "--plan", str(plan), "--out", str(tmp_path / "run")]
    result = runner.invoke(consortium_app, [*base, "--insecure", "--host", "0.0.0.0"])
    assert result.exit_code == 2 and "only on loopback" in result.output
    result = runner.invoke(consortium_app, base)
    assert result.exit_code == 2 and "TLS needs --certs" in result.output
    result = runner.invoke(consortium_app, [*base, "--certs", "nowhere"])
    assert result.exit_code == 2 and "not found" in result.output and "Traceback" not in result.output
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = runner.invoke(consortium_app, [*base, "--insecure", "--port", str(port)])
    assert result.exit_code == 2 and f"port {port}" in result.output and "in use" in result.output
    assert not (tmp_path / "run" / "logs" / "superlink.log").exists()  # nothing was started
