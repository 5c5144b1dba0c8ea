"""Deployed mode: the consortium's SuperLink, the Flower app that runs our ServerApp, run submission, status.

`consortium serve` = start `flower-superlink` (one port for Fleet, Control and Runtime APIs; with TLS behind
`consortium.tls_front`, which owns the public port and refuses plaintext clients with a message), write a small
Flower app (pyproject with `[tool.flwr.app]` components pointing at `consortium.server_app:app` and
`partner_kit.client_app:app`) into the run directory, submit it with `flwr run`, then follow the run through
`status.json` until it finishes. Every process is started in its own process group so it can be stopped as
a whole; every wait is bounded and says what it waited for.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from consortium.processes import die_with_parent
from consortium.run_status import FRONT_STATUS, read_status
from consortium.tls_front import TlsFront
from data_prep.atomic import write_text_atomic
from data_prep.errors import InputError

CONNECTION = "fedqsar"
APP_DIR = "flower_app"
ADMITTED_DIR = "admitted"  # run/admitted/<name>.pub: the partners' node public keys (`consortium admit`)
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def check_port_free(host: str, port: int) -> None:
    """Fail before starting anything when the port is taken (e.g. by a consortium that is still running)."""
    bind = "" if host in ("0.0.0.0", "::", "") else host
    with socket.socket(socket.AF_INET6 if ":" in bind else socket.AF_INET, socket.SOCK_STREAM) as s:
        # As the SuperLink binds: connections of a previous run in TIME_WAIT do not count, a listener does.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((bind, int(port)))
        except OSError as exc:
            raise InputError(f"port {port} on {host or '0.0.0.0'} is in use ({exc.strerror}): another consortium "
                             "serve (or another program) listens there; stop it or choose --port") from None


def executable(name: str) -> str:
    """A console script of this environment (flower-superlink, flower-supernode, flwr)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} before listening on {host}:{port}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1.0):
            return
        time.sleep(0.2)
    raise TimeoutError(f"{what} did not listen on {host}:{port} within {timeout:.0f} s")


@dataclass
class Service:
    """A started process (own process group) with its log file."""

    name: str
    popen: subprocess.Popen
    log: Path
    extra: dict[str, Any] = field(default_factory=dict)

    def stop(self, timeout: float = 10.0) -> None:
        if self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=timeout)

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def spawn(name: str, cmd: list[str], log: Path, env: dict[str, str] | None = None,
          cwd: Path | None = None) -> Service:
    log.parent.mkdir(parents=True, exist_ok=True)
    fh = open(log, "ab")  # noqa: SIM115 (the child owns it; closed when the child exits)
    # Own process group (stopped as a whole) and a parent-death signal: it cannot outlive `consortium serve`.
    popen = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True,
                             preexec_fn=die_with_parent())
    fh.close()
    return Service(name, popen, log)


def flower_env(flwr_home: Path | None) -> dict[str, str]:
    """Environment for Flower processes: private FLWR_HOME, this venv's bin first (they spawn flower-superexec)."""
    env = dict(os.environ)
    if flwr_home is not None:
        env["FLWR_HOME"] = str(flwr_home)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


@dataclass(frozen=True)
class TlsOptions:
    """TLS certificates (from `consortium certs`) and Flower's SuperNode authentication, or `insecure`.

    With TLS, node authentication is on unless `node_auth=False`: only SuperNodes whose public key was
    registered (`consortium admit`) may connect. `insecure` is for loopback tests and demos only.
    """

    insecure: bool = True
    ca_certfile: Path | None = None
    certfile: Path | None = None
    keyfile: Path | None = None
    node_auth: bool = True

    def resolved(self) -> TlsOptions:
        """Absolute, existing certificate paths (Flower's processes run elsewhere), checked before any start."""
        if self.insecure:
            return self
        from consortium.certs import check_tls_files

        ca, cert, key = check_tls_files(self.ca_certfile, self.certfile, self.keyfile)
        return TlsOptions(insecure=False, ca_certfile=ca, certfile=cert, keyfile=key, node_auth=self.node_auth)

    def superlink_args(self) -> list[str]:
        if self.insecure:
            return ["--insecure"]
        tls = self.resolved()
        return ["--ssl-ca-certfile", str(tls.ca_certfile), "--ssl-certfile", str(tls.certfile),
                "--ssl-keyfile", str(tls.keyfile), *(["--enable-supernode-auth"] if self.node_auth else [])]


def start_superlink(port: int, flwr_home: Path | None, log: Path, tls: TlsOptions = TlsOptions(),
                    host: str = "127.0.0.1", timeout: float = 60.0) -> Service:
    if tls.insecure and host not in LOOPBACK:
        raise InputError(f"--insecure serves without TLS: only on loopback (127.0.0.1), not on {host}; make "
                         "certificates with `consortium certs` for a consortium on a network")
    check_port_free(host, port)
    cmd = [executable("flower-superlink"), *tls.superlink_args(), "--host", host, "--port", str(port),
           "--disable-runtime-dependency-installation"]
    svc = spawn("superlink", cmd, log, env=flower_env(flwr_home))
    try:
        local = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        wait_for_port(local, port, timeout, "flower-superlink", svc.popen)
    except Exception:
        svc.stop()
        raise RuntimeError(f"the SuperLink did not start; its log ({log}):\n{svc.tail()}") from None
    return svc


def write_connection(flwr_home: Path, address: str, tls: TlsOptions = TlsOptions()) -> None:
    """The `flwr` CLI's connection to our SuperLink, in FLWR_HOME/config.toml."""
    conn: dict[str, Any] = {"address": address}
    if tls.insecure:
        conn["insecure"] = True
    elif tls.ca_certfile:
        conn["root-certificates"] = str(tls.ca_certfile)
    flwr_home.mkdir(parents=True, exist_ok=True)
    write_text_atomic(flwr_home / "config.toml",
                      tomli_w.dumps({"superlink": {"default": CONNECTION, CONNECTION: conn}}))


def write_flower_app(run_dir: Path, run_config: dict[str, Any]) -> Path:
    """A minimal Flower app folder: pyproject only, components from the installed fedqsar packages."""
    app = Path(run_dir) / APP_DIR
    app.mkdir(parents=True, exist_ok=True)
    doc = {
        "build-system": {"requires": ["hatchling"], "build-backend": "hatchling.build"},
        "project": {"name": "fedqsar-federation", "version": "1.0.0", "dependencies": []},
        "tool": {"flwr": {"app": {
            "publisher": "fedqsar",
            "components": {"serverapp": "consortium.server_app:app", "clientapp": "partner_kit.client_app:app"},
            "config": run_config,
        }}},
    }
    write_text_atomic(app / "pyproject.toml", tomli_w.dumps(doc))
    return app


def _flwr(args: list[str], flwr_home: Path, timeout: float) -> dict[str, Any]:
    proc = subprocess.run([executable("flwr"), *args, "--format", "json"], capture_output=True, text=True,
                          env=flower_env(flwr_home), timeout=timeout)
    try:
        out = json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise RuntimeError(f"`flwr {' '.join(args)}` failed ({proc.returncode}): {proc.stdout}{proc.stderr}") from None
    if not out.get("success", False):
        raise RuntimeError(f"`flwr {' '.join(args)}` failed: {out.get('error-message', out)}")
    return out


def submit_run(app_dir: Path, flwr_home: Path, timeout: float = 120.0) -> int:
    out = _flwr(["run", str(app_dir), CONNECTION], flwr_home, timeout)
    return int(out["run-id"])


def run_info(flwr_home: Path, run_id: int, timeout: float = 60.0) -> dict[str, Any]:
    out = _flwr(["ls", CONNECTION, "--run-id", str(run_id)], flwr_home, timeout)
    runs = out.get("runs", [])
    return runs[0] if runs else {}


class LogFollower:
    """New lines of a log file since the last call, for the lines the operator must see (refused nodes)."""

    #: Flower's SuperLink logs a refused node as "[/v1/fleet/activate-node][ApiError:2004] ..." (or register-node).
    MARKS = ("[/v1/fleet/activate-node][ApiError", "[/v1/fleet/register-node][ApiError")

    def __init__(self, path: Path) -> None:
        self.path, self.offset = Path(path), 0

    def new_marked(self) -> list[str]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except OSError:
            return []
        end = data.rfind(b"\n") + 1  # only whole lines
        self.offset += end
        lines = data[:end].decode(errors="replace").splitlines()
        return [line for line in lines if any(m in line for m in self.MARKS)]


def wait_for_run(flwr_home: Path, run_id: int, run_dir: Path, timeout: float,
                 on_status: Callable[[dict[str, Any]], None] | None = None, poll: float = 0.5,
                 on_log: Callable[[str], None] | None = None, log: Path | None = None) -> dict[str, Any]:
    """Block until the Flower run finishes; returns `flwr ls` info plus our status.json.

    `on_log` gets each SuperLink log line reporting a refused node (unknown key, not registered).
    """
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    asked = 0.0
    follower = LogFollower(log) if log is not None and on_log is not None else None
    while time.monotonic() < deadline:
        if follower is not None:
            for line in follower.new_marked():
                on_log(line)  # type: ignore[misc]
        status = read_status(run_dir)
        if on_status is not None and status != last:
            on_status(status)
            last = status
        # `flwr ls` starts a Python process: ask Flower when our status says the run ended, else now and then
        # (a ServerApp that dies before writing its status is still noticed).
        if status.get("state") in ("finished", "failed") or time.monotonic() - asked > 10 * poll:
            asked = time.monotonic()
            info = run_info(flwr_home, run_id)
            if str(info.get("status", "")).startswith("finished"):
                return {"flower": info, "status": read_status(run_dir)}
        time.sleep(poll)
    raise TimeoutError(f"run {run_id} did not finish within {timeout:.0f} s; last status: {last}")


@dataclass
class Consortium:
    """A running consortium node: SuperLink (+ its TLS front), the address partners join by, the `flwr` CLI's home.

    `address` is what partners connect to (the TLS front's port when there is one); the `flwr` CLI and the
    ServerApp talk to the SuperLink directly (`superlink_address`, on this machine).
    """

    superlink: Service
    address: str
    flwr_home: Path
    front: TlsFront | None = None
    superlink_address: str = ""

    def stop(self) -> None:
        # The front first: partners then see a closed port (and retry) as without a front, not a TLS connection
        # accepted and dropped while the SuperLink shuts down.
        try:
            if self.front is not None:
                self.front.stop()
        finally:
            self.superlink.stop()


def start_consortium(run_dir: Path, *, port: int | None = None, host: str = "127.0.0.1",
                     flwr_home: Path | None = None, tls: TlsOptions = TlsOptions(),
                     on_plaintext: Callable[[str], None] | None = None, tls_front: bool = True) -> Consortium:
    """Start the SuperLink; with node authentication, register every admitted key (run/admitted/*.pub).

    With TLS, partners reach the SuperLink through `consortium.tls_front` on (host, port) and the SuperLink
    itself binds 127.0.0.1 on a free port: the front relays TLS unchanged and refuses a plaintext client with a
    line to `on_plaintext` (default: stderr), which the SuperLink alone would drop without a word.
    With `--insecure` (loopback only) there is no front; `tls_front=False` (benchmarks: the relay's cost) has
    the SuperLink itself listen on (host, port).
    """
    run_dir = Path(run_dir).resolve()
    tls = tls.resolved()
    flwr_home = Path(flwr_home or run_dir / "flwr-home").resolve()
    port = port or free_port()
    local = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # the CLI talks to it from this machine
    front = None
    if tls.insecure or not tls_front:
        superlink = start_superlink(port, flwr_home, run_dir / "logs" / "superlink.log", tls, host=host)
        internal = f"{local}:{port}"
    else:
        check_port_free(host, port)  # before the SuperLink starts: the public port is the front's
        inner = free_port()
        superlink = start_superlink(inner, flwr_home, run_dir / "logs" / "superlink.log", tls, host="127.0.0.1")
        internal = f"127.0.0.1:{inner}"
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            front = TlsFront(host, port, "127.0.0.1", inner, on_refused=on_plaintext,
                             status_file=run_dir / FRONT_STATUS).start()
        except BaseException:
            superlink.stop()
            raise
    consortium = Consortium(superlink, f"{local}:{port}", flwr_home, front, internal)
    try:
        write_connection(flwr_home, consortium.superlink_address, tls)
        if not tls.insecure and tls.node_auth:
            for pub in sorted((run_dir / ADMITTED_DIR).glob("*.pub")):
                register_node(flwr_home, pub)  # also notes the node id beside the key, for --revoke
    except BaseException:
        consortium.stop()
        raise
    return consortium


def register_node(flwr_home: Path, public_key: Path, timeout: float = 60.0) -> int:
    """Register one partner's node public key with the running SuperLink (Flower's node authentication);
    its node id is kept beside the key (`NAME.node-id`) so `consortium admit --revoke` can unregister it."""
    out = _flwr(["supernode", "register", str(public_key), CONNECTION],
                flwr_home, timeout)
    node_id = int(out["node-id"])
    write_text_atomic(public_key.with_suffix(".node-id"), f"{node_id}\n")
    return node_id


def unregister_node(flwr_home: Path, node_id: int, timeout: float = 60.0) -> None:
    """Unregister a node from the running SuperLink: Flower disconnects it at its next request."""
    _flwr(["supernode", "unregister", str(int(node_id)), CONNECTION], flwr_home, timeout)


def live_superlink(run_dir: Path) -> Path | None:
    """The FLWR_HOME of a `consortium serve` whose SuperLink still listens for this run dir, else None."""
    import tomllib

    flwr_home = Path(run_dir).resolve() / "flwr-home"
    try:
        conn = tomllib.loads((flwr_home / "config.toml").read_text())["superlink"][CONNECTION]
        host, _, port = str(conn["address"]).rpartition(":")
        with socket.create_connection((host, int(port)), timeout=2.0):
            return flwr_home
    except (OSError, KeyError, ValueError):
        return None


def run_deployed(consortium: Consortium, plan_path: Path, run_dir: Path, *, rounds: int = 0, resume: bool = False,
                 timeout: float = 3600.0, on_status: Callable[[dict[str, Any]], None] | None = None,
                 on_log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Submit the federation to a started consortium node and wait for it; raises if the run failed."""
    run_dir = Path(run_dir).resolve()
    app = write_flower_app(run_dir, {"plan": str(Path(plan_path).resolve()), "run-dir": str(run_dir),
                                     "rounds": int(rounds), "resume": bool(resume)})
    run_id = submit_run(app, consortium.flwr_home)
    result = wait_for_run(consortium.flwr_home, run_id, run_dir, timeout, on_status, on_log=on_log,
                          log=consortium.superlink.log)
    result["run_id"] = run_id
    flower_status = str(result["flower"].get("status"))
    if flower_status != "finished:completed" or result["status"].get("state") != "finished":
        raise RuntimeError(f"run {run_id} ended as {flower_status}, state {result['status'].get('state')}: "
                           f"{result['status'].get('error', '')} (SuperLink log: {consortium.superlink.log})")
    return result
