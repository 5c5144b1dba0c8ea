"""A TLS-only front for the SuperLink's public port: relays TLS byte for byte, refuses plaintext with a message.

Flower 1.42's SuperLink serves its Fleet, Control and Runtime APIs over HTTPS on one uvicorn/uvloop port, whose
TLS layer drops a plaintext client's failed handshake before Flower or uvicorn sees it: the operator would never
learn that a partner tries to join without TLS. So with TLS `consortium serve` listens on the public address
itself and the SuperLink binds 127.0.0.1 on an internal port. For each accepted connection the front reads the
first bytes: a TLS record (0x16 0x03, a ClientHello) is forwarded unchanged and relayed in both directions (TLS
stays end to end: the front never decrypts and holds no key); anything else (an HTTP/1 request, the HTTP/2
preface, garbage) is answered with a short HTTP 400 if it looks like HTTP/1, closed, counted, and reported in
one line per peer address per minute, so a scanner cannot flood the operator's terminal.

The front runs an asyncio loop in a daemon thread of the `serve` process, so it dies with `serve`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from data_prep.atomic import write_text_atomic
from data_prep.errors import InputError

HELLO_BYTES = 3        # a TLS record starts with content type 0x16 (handshake) and major version 0x03
HELLO_TIMEOUT_S = 30.0  # a client that connects and sends nothing is closed silently after this
CHUNK = 1 << 20        # relay read size; the write buffer pauses the reading side above WRITE_HIGH
WRITE_HIGH = 4 << 20
REPORT_EVERY_S = 60.0  # one refusal line per peer address per this many seconds
HTTP1_VERBS = (b"GET", b"POS", b"PUT", b"HEA", b"DEL", b"OPT", b"PAT", b"CON", b"TRA")
HINT = "partners must join with --root-certificates ca.crt (the consortium's CA certificate)"
REFUSAL_BODY = f"this consortium speaks TLS only: {HINT}\n".encode()
REFUSAL_RESPONSE = (b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                    b"Content-Length: " + str(len(REFUSAL_BODY)).encode() + b"\r\n\r\n" + REFUSAL_BODY)


def is_tls(head: bytes) -> bool:
    """Whether the first bytes of a connection are a TLS handshake record (what every TLS client sends first)."""
    return len(head) >= 2 and head[0] == 0x16 and head[1] == 0x03


def describe(head: bytes) -> str:
    """What a refused client sent, in words: the operator sees which kind of client it was."""
    if head.startswith(b"PRI"):  # the HTTP/2 connection preface, "PRI * HTTP/2.0"
        return "HTTP/2 without TLS"
    if head[:3] in HTTP1_VERBS:
        return "an HTTP/1 request without TLS"
    return f"{len(head)} bytes that are not TLS ({head[:8].hex()})"


def peer_text(peer: Any) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        host, port = str(peer[0]), peer[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return str(peer)


class TlsFront:
    """Listen on (host, port); relay TLS connections to (target_host, target_port); refuse everything else.

    `on_refused` gets the operator's line (rate-limited per peer address); `status_file`, if given, is
    rewritten (atomically, at most once a second) with the number of refused connections and the last one.
    """

    def __init__(self, host: str, port: int, target_host: str, target_port: int, *,
                 on_refused: Callable[[str], None] | None = None, status_file: Path | None = None) -> None:
        self.host, self.port = host, int(port)
        self.target = (target_host, int(target_port))
        self.on_refused = on_refused or (lambda line: print(line, file=sys.stderr, flush=True))
        self.status_file = Path(status_file) if status_file is not None else None
        self.refused = 0
        self.relayed = 0
        self.bytes_relayed = 0  # both directions
        self.cpu_seconds = 0.0  # the relay thread's own CPU time, once stopped (what the front costs)
        self.last_refused: dict[str, Any] = {}
        self._reported: dict[str, tuple[float, int]] = {}  # peer address -> (last line, refusals since)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task] = set()
        self._flush_pending = False

    # --- life cycle -------------------------------------------------------------------------------------------
    def start(self) -> TlsFront:
        """Bind now (a taken port is one `InputError`), then serve in a daemon thread."""
        sock = self._bind()
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._server = self._loop.run_until_complete(asyncio.start_server(self._accept, sock=sock,
                                                                              limit=CHUNK))
            ready.set()
            self._loop.run_forever()
            self.cpu_seconds = time.thread_time()

        self._thread = threading.Thread(target=run, name="tls-front", daemon=True)
        self._thread.start()
        if not ready.wait(timeout=10):
            raise RuntimeError("the TLS front did not start listening")
        if self.status_file is not None:
            self._flush()
        return self

    def _bind(self) -> socket.socket:
        bind = "" if self.host in ("0.0.0.0", "") else self.host
        family = socket.AF_INET6 if ":" in bind else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((bind, self.port))
        except OSError as exc:
            sock.close()
            raise InputError(f"port {self.port} on {self.host or '0.0.0.0'} is in use ({exc.strerror}): another "
                             "consortium serve (or another program) listens there; stop it or choose --port") from None
        sock.listen(1024)
        sock.setblocking(False)
        if self.port == 0:
            self.port = int(sock.getsockname()[1])
        return sock

    def stop(self, timeout: float = 10.0) -> None:
        """Stop listening and close every relayed connection."""
        loop = self._loop
        if loop is None or self._thread is None:
            return
        if loop.is_running():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout)
            loop.call_soon_threadsafe(loop.stop)
        self._thread.join(timeout)
        if not loop.is_running():
            loop.close()
        self._loop = self._thread = None
        if self.status_file is not None:
            self._flush()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # --- connections ------------------------------------------------------------------------------------------
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await self._handle(reader, writer)
        except (OSError, asyncio.IncompleteReadError):
            pass  # a peer reset, or the SuperLink gone: nothing to report
        except asyncio.CancelledError:
            pass  # `stop`: end quietly (asyncio's server logs a cancelled connection task as an error)
        finally:
            writer.close()
            if task is not None:
                self._tasks.discard(task)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = peer_text(writer.get_extra_info("peername"))
        head = b""
        try:
            async with asyncio.timeout(HELLO_TIMEOUT_S):
                while len(head) < HELLO_BYTES:
                    chunk = await reader.read(HELLO_BYTES - len(head))
                    if not chunk:
                        break
                    head += chunk
        except TimeoutError:
            return
        if not head:
            return  # connected and closed (a port check): not a client
        if not is_tls(head):
            if head[:3] in HTTP1_VERBS:
                with contextlib.suppress(OSError):
                    writer.write(REFUSAL_RESPONSE)
                    await asyncio.wait_for(writer.drain(), 5)
            self._refuse(peer, head)
            return
        self.relayed += 1
        up_reader, up_writer = await asyncio.open_connection(*self.target, limit=CHUNK)
        try:
            for w in (writer, up_writer):
                w.transport.set_write_buffer_limits(high=WRITE_HIGH)
                with contextlib.suppress(OSError):
                    w.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            up_writer.write(head)
            pumps = [asyncio.create_task(self._pump(reader, up_writer)),
                     asyncio.create_task(self._pump(up_reader, writer))]
            try:
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)  # either side closed: close both
            finally:
                for p in pumps:
                    p.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
        finally:
            up_writer.close()

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        """Copy until EOF; `drain` waits while the other side's write buffer is full (back-pressure)."""
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await src.read(CHUNK):
                dst.write(data)
                self.bytes_relayed += len(data)
                await dst.drain()

    # --- reporting --------------------------------------------------------------------------------------------
    def _refuse(self, peer: str, head: bytes) -> None:
        self.refused += 1
        what = describe(head)
        self.last_refused = {"peer": peer, "what": what, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        address = peer.rsplit(":", 1)[0]
        now = time.monotonic()
        last, since = self._reported.get(address, (-REPORT_EVERY_S, 0))
        if now - last >= REPORT_EVERY_S:
            more = f"; {since} more from {address} in the last minute" if since else ""
            self.on_refused(f"serve: refused a plaintext (non-TLS) connection from {peer} ({what}): {HINT}{more}")
            self._reported[address] = (now, 0)
            if len(self._reported) > 10_000:  # forget peers not seen for a minute: bounded memory under a scan
                self._reported = {a: v for a, v in self._reported.items() if now - v[0] < REPORT_EVERY_S}
        else:
            self._reported[address] = (last, since + 1)
        if self.status_file is not None and not self._flush_pending and self._loop is not None:
            self._flush_pending = True
            self._loop.call_later(1.0, self._flush)

    def summary(self) -> dict[str, Any]:
        return {"plaintext_refused": self.refused, "last_plaintext_refused": self.last_refused,
                "tls_relayed": self.relayed, "bytes_relayed": self.bytes_relayed,
                "relay_cpu_seconds": round(self.cpu_seconds, 3), "listen": f"{self.host}:{self.port}"}

    def _flush(self) -> None:
        self._flush_pending = False
        if self.status_file is not None:
            with contextlib.suppress(OSError):
                write_text_atomic(self.status_file, json.dumps(self.summary(), indent=2) + "\n")
