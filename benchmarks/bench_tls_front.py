"""The TLS front's own cost: one large message through `consortium.tls_front` vs straight to the TLS server.

A TLS sink server (a separate Python process, the consortium's certificates from `consortium certs`) reads a
message of `--mib` MiB and answers with the same number of bytes, as a SuperLink receives a partner's trunk and
sends the next one. A TLS client (another process) sends and receives it, either directly or through the front
(in this process, as in `consortium serve`). Interleaved `--repeats` times; reports wall time per message and the
front thread's own CPU time (`time.thread_time()` of its loop: what the relay takes from the machine).

    .venv/bin/python benchmarks/bench_tls_front.py [--mib 256] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from consortium.certs import make_certs  # noqa: E402
from consortium.deploy import free_port, wait_for_port  # noqa: E402
from consortium.tls_front import TlsFront  # noqa: E402

SERVER = r"""
import socket, ssl, sys
cert, key, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
ctx.load_cert_chain(cert, key)
srv = socket.create_server(("127.0.0.1", port))
while True:
    conn, _ = srv.accept()
    try:  # the port check's bare connection fails its handshake: serve the next one
        with ctx.wrap_socket(conn, server_side=True) as tls:
            n = int.from_bytes(tls.recv(8), "big")
            buf, got = bytearray(1 << 20), 0
            while got < n:
                got += tls.recv_into(buf)
            chunk, sent = bytes(1 << 20), 0
            while sent < n:
                tls.sendall(chunk[: min(len(chunk), n - sent)])
                sent += min(len(chunk), n - sent)
    except (OSError, ssl.SSLError):
        pass
"""

CLIENT = r"""
import socket, ssl, sys, time
ca, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ctx = ssl.create_default_context(cafile=ca)
t0 = time.perf_counter()
with ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="127.0.0.1") as tls:
    tls.sendall(n.to_bytes(8, "big"))
    chunk, sent = bytes(1 << 20), 0
    while sent < n:
        tls.sendall(chunk[: min(len(chunk), n - sent)])
        sent += min(len(chunk), n - sent)
    buf, got = bytearray(1 << 20), 0
    while got < n:
        r = tls.recv_into(buf)
        assert r, "closed early"
        got += r
print(time.perf_counter() - t0)
"""


def one(ca: Path, port: int, n: int) -> float:
    out = subprocess.run([sys.executable, "-c", CLIENT, str(ca), str(port), str(n)], capture_output=True, text=True,
                         check=True)
    return float(out.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mib", type=int, default=256, help="message size each way (256 MiB = a 64 M-parameter trunk)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    n = args.mib << 20
    with tempfile.TemporaryDirectory() as tmp:
        certs = make_certs(Path(tmp) / "certs", ["127.0.0.1"])
        port = free_port()
        server = subprocess.Popen([sys.executable, "-c", SERVER, str(certs.server_cert), str(certs.server_key),
                                   str(port)])
        try:
            wait_for_port("127.0.0.1", port, 30, "TLS sink", server)
            direct, fronted, cpu = [], [], []
            for _ in range(args.repeats):
                load = os.getloadavg()[0]
                direct.append(one(certs.ca_cert, port, n))
                front = TlsFront("127.0.0.1", 0, "127.0.0.1", port, on_refused=print).start()
                fronted.append(one(certs.ca_cert, front.port, n))
                front.stop()
                cpu.append(front.cpu_seconds)
                print(f"direct {direct[-1]:.2f} s, through the front {fronted[-1]:.2f} s (front CPU {cpu[-1]:.2f} s, "
                      f"{front.bytes_relayed / 2**20:.0f} MiB relayed), load {load:.1f} -> {os.getloadavg()[0]:.1f}",
                      flush=True)
        finally:
            server.kill()
            server.wait()
    d, f, c = statistics.median(direct), statistics.median(fronted), statistics.median(cpu)
    print(f"\n{args.mib} MiB each way, {args.repeats} interleaved repeats: direct median {d:.2f} s, through the "
          f"front {f:.2f} s ({f / d:.2f} x), front CPU median {c:.2f} s = {c / (2 * args.mib / 1024):.2f} s per GiB")


if __name__ == "__main__":
    main()
