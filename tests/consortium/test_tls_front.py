"""The TLS front (`consortium.tls_front`) on real sockets: TLS relayed end to end, plaintext refused with a line.

Behind the front stands a real TLS server (Python's ssl, the consortium's certificates from `consortium certs`)
that echoes what it receives; the clients are real TLS and plaintext sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import ssl
import threading
import time
from pathlib import Path

import pytest

from consortium.certs import make_certs
from consortium.run_status import FRONT_STATUS
from consortium.tls_front import TlsFront, describe, is_tls
from data_prep.errors import InputError


class EchoTls:
    """A TLS echo server on 127.0.0.1 (one thread per connection); notes when a connection ends."""

    def __init__(self, certs) -> None:
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(certs.server_cert, certs.server_key)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.closed = threading.Event()
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    def _echo(self, conn: socket.socket) -> None:
        try:
            with self.ctx.wrap_socket(conn, server_side=True) as tls:
                while data := tls.recv(1 << 16):
                    tls.sendall(data)
        except (OSError, ssl.SSLError):
            pass
        finally:
            self.closed.set()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture()
def setup(tmp_path):
    certs = make_certs(tmp_path / "certs", ["127.0.0.1"])
    echo = EchoTls(certs)
    lines: list[str] = []
    front = TlsFront("127.0.0.1", 0, "127.0.0.1", echo.port, on_refused=lines.append,
                     status_file=tmp_path / FRONT_STATUS).start()
    yield certs, echo, front, lines, tmp_path
    front.stop()
    echo.close()


def _tls_client(certs, port: int) -> ssl.SSLSocket:
    ctx = ssl.create_default_context(cafile=str(certs.ca_cert))
    return ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=20), server_hostname="127.0.0.1")


def _recv_exactly(sock, n: int) -> bytes:
    parts, got = [], 0
    while got < n:
        chunk = sock.recv(min(1 << 20, n - got))
        assert chunk, f"connection closed after {got} of {n} bytes"
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def test_tls_is_relayed_end_to_end_byte_for_byte_and_verified_against_the_ca(setup):
    certs, echo, front, lines, _ = setup
    payload = os.urandom(24 << 20)  # larger than every buffer: back-pressure on both legs

    async def echo_through_front() -> tuple[bytes, dict]:
        # asyncio's TLS (one SSLObject, one thread) sends and receives at once; two threads on one
        # ssl.SSLSocket are not safe, and under load that broke this test, not the front.
        ctx = ssl.create_default_context(cafile=str(certs.ca_cert))
        reader, writer = await asyncio.open_connection("127.0.0.1", front.port, ssl=ctx,
                                                       server_hostname="127.0.0.1")
        peer = writer.get_extra_info("peercert")

        async def send() -> None:
            writer.write(payload)
            await writer.drain()

        sending = asyncio.create_task(send())
        received = await asyncio.wait_for(reader.readexactly(len(payload)), 120)
        await sending
        writer.close()
        with contextlib.suppress(ssl.SSLError, ConnectionError):
            await writer.wait_closed()
        return received, peer

    received, peer = asyncio.run(echo_through_front())
    assert peer["subject"]  # the echo server's certificate, verified against the CA, seen through the front
    assert received == payload
    assert echo.closed.wait(10)  # the client closed: the front closed its leg to the server too
    assert lines == [] and front.refused == 0 and front.relayed == 1
    assert front.bytes_relayed > 2 * len(payload)  # both ways, plus TLS framing: ciphertext, never decrypted


@pytest.mark.parametrize("first", [b"POST /v1/fleet/create-node HTTP/1.1\r\nHost: x\r\n\r\n",
                                   b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", b"\x00\x01garbage"])
def test_plaintext_is_refused_with_one_line_naming_the_peer_and_counted(setup, first):
    certs, echo, front, lines, tmp_path = setup
    with socket.create_connection(("127.0.0.1", front.port), timeout=10) as s:
        s.sendall(first)
        answer = b""
        while chunk := s.recv(4096):
            answer += chunk
        port = s.getsockname()[1]
    if first.startswith(b"POST"):
        assert answer.startswith(b"HTTP/1.1 400") and b"--root-certificates ca.crt" in answer
    else:
        assert answer == b""
    assert echo.connections == 0  # nothing reached the server
    assert len(lines) == 1 and f"refused a plaintext (non-TLS) connection from 127.0.0.1:{port}" in lines[0]
    assert "--root-certificates ca.crt" in lines[0] and describe(first[:3]) in lines[0]
    deadline = time.monotonic() + 5
    while json.loads((tmp_path / FRONT_STATUS).read_text())["plaintext_refused"] != 1:
        assert time.monotonic() < deadline, (tmp_path / FRONT_STATUS).read_text()
        time.sleep(0.1)
    assert json.loads((tmp_path / FRONT_STATUS).read_text())["last_plaintext_refused"]["peer"].endswith(f":{port}")


def test_a_scanner_gets_one_line_per_minute_but_every_refusal_is_counted(setup):
    _, _, front, lines, _ = setup
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", front.port), timeout=10) as s:
            s.sendall(b"GET / HTTP/1.1\r\n\r\n")
            while s.recv(4096):
                pass
    assert len(lines) == 1 and front.refused == 20


def test_port_checks_and_silent_clients_are_not_reported(setup, monkeypatch):
    certs, echo, front, lines, _ = setup
    socket.create_connection(("127.0.0.1", front.port), timeout=10).close()  # what wait_for_port does
    with _tls_client(certs, front.port) as tls:  # and a TLS client still works afterwards
        tls.sendall(b"ping")
        assert _recv_exactly(tls, 4) == b"ping"
    assert lines == [] and front.refused == 0


def test_a_taken_port_is_one_input_error(setup):
    _, _, front, _, _ = setup
    with pytest.raises(InputError, match=f"port {front.port} on 127.0.0.1 is in use"):
        TlsFront("127.0.0.1", front.port, "127.0.0.1", 1).start()


def test_stop_closes_relayed_connections_quietly(setup, caplog):
    certs, echo, front, _, _ = setup
    tls = _tls_client(certs, front.port)
    tls.sendall(b"x")
    assert _recv_exactly(tls, 1) == b"x"
    front.stop()
    assert not [r for r in caplog.records if r.name == "asyncio"], caplog.text  # no "Exception in callback"
    assert echo.closed.wait(10)
    assert tls.recv(1) == b""  # the client's leg is closed too
    tls.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", front.port), timeout=2).close()


def test_tls_record_detection():
    assert is_tls(b"\x16\x03\x01") and not is_tls(b"\x16\x02") and not is_tls(b"GET") and not is_tls(b"")
    assert describe(b"PRI") == "HTTP/2 without TLS" and describe(b"GET") == "an HTTP/1 request without TLS"


def test_status_file_absent_front_reads_empty(tmp_path):
    from consortium.run_status import read_front_status

    assert read_front_status(Path(tmp_path)) == {}
