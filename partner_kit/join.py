"""`partner-kit join`: start this partner's Flower SuperNode with its prepared and model directories.

The SuperNode connects out to the consortium's SuperLink; for every message it runs the partner ClientApp
(`partner_kit.client_app:app`) with `--node-config` naming the plan, prepared directory, model directory and
a partner name, which never leaves this machine. Plans are checked before anything starts: a prepared
directory made under another plan fails here, a consortium running another plan fails at its first message.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from consortium.plan import Plan
from data_prep.console import console
from data_prep.errors import InputError
from partner_kit.device import DEVICE_HELP
from partner_kit.supernode import DEFAULT_POLL_S
from partner_kit.wire_audit import AUDIT_KEY

if TYPE_CHECKING:  # partner_kit.federated imports torch: only inside the functions, so --help stays instant
    from partner_kit.federated import PartnerConfig


def _exe(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def format_node_config(cfg: dict[str, Any]) -> str:
    """`key="value" key2=3`: values as TOML scalars (JSON strings are valid TOML basic strings)."""
    parts = []
    for key, value in cfg.items():
        if isinstance(value, bool):
            parts.append(f"{key}={str(value).lower()}")
        elif isinstance(value, int | float):
            parts.append(f"{key}={value}")
        else:
            parts.append(f"{key}={json.dumps(str(value))}")
    return " ".join(parts)


def check_partner(cfg: PartnerConfig) -> Plan:
    """Everything a partner can check before joining: plan readable, prepared data made under it."""
    from partner_kit.federated import check_plans

    plan = Plan.load(cfg.plan)
    manifest = Path(cfg.prepared) / "manifest.json"
    if not manifest.is_file():
        raise InputError(f"{cfg.prepared} is not a prepared directory (no manifest.json); "
                         "run `data-prep prepare` first")
    check_plans(None, plan, cfg.plan, json.loads(manifest.read_text()), cfg.prepared)
    return plan


def supernode_command(cfg: PartnerConfig, superlink: str, *, port: int, insecure: bool = True,
                      root_certificates: Path | None = None, warm: bool = False,
                      node_key: Path | None = None, audit_log: Path | None = None) -> list[str]:
    if not insecure and root_certificates is None:
        raise InputError("joining over TLS needs --root-certificates (the consortium's CA certificate); "
                         "--insecure is for loopback tests only")
    security = ["--insecure"] if insecure else ["--root-certificates", str(root_certificates)]
    if node_key is not None:  # Flower's SuperNode authentication: the key the operator admitted
        security += ["--auth-supernode-private-key", str(node_key)]
    # warm: our entry point (Flower's SuperNode polling every DEFAULT_POLL_S, partner_kit.supernode) in process
    # isolation, so partner_kit.warm_exec can take SuperExec's place; cold: Flower's defaults throughout.
    node = ([sys.executable, "-m", "partner_kit.supernode", "--isolation", "process"] if warm
            else [_exe("flower-supernode")])
    node_config = cfg.to_node_config()
    if audit_log is not None:  # partner_kit.wire_audit: every outgoing message's keys, types and sizes
        node_config[AUDIT_KEY] = str(Path(audit_log).expanduser().resolve())
    return [*node, *security, "--superlink", superlink, "--port", str(port),
            "--node-config", format_node_config(node_config)]


def warm_exec_command(port: int, supernode_pid: int) -> list[str]:
    """`partner_kit.warm_exec` in SuperExec's place: ClientApp processes forked after the imports.

    It talks only to this partner's own SuperNode on 127.0.0.1, whose runtime API is plain HTTP whatever the
    link to the consortium uses: always `--insecure` (TLS there failed with SSL: WRONG_VERSION_NUMBER).
    """
    return [sys.executable, "-m", "partner_kit.warm_exec", "--runtime-api-address", f"127.0.0.1:{port}",
            "--insecure", "--parent-pid", str(supernode_pid)]


def probe_superlink(superlink: str, *, insecure: bool, root_certificates: Path | None, timeout: float = 5.0) -> None:
    """Say now, not by retrying forever, when this partner's TLS setting cannot work with the SuperLink.

    A SuperLink that is not up yet is fine (the SuperNode waits for it); one that is up is asked for a TLS
    handshake, verified against the consortium's CA when joining over TLS. With --insecure it is first sent
    a plaintext request, as the SuperNode would send: a plaintext SuperLink answers it, a TLS consortium's front
    refuses it, and its operator sees that refusal too (`consortium.tls_front`).
    """
    import ssl

    host, _, port = superlink.rpartition(":")
    if not host or not port.isdigit():
        raise InputError(f"--superlink {superlink!r}: give HOST:PORT, e.g. consortium.example.org:9093")
    host = host.strip("[]")
    if insecure:
        answer = _plaintext_answer(host, int(port), timeout)
        if answer.startswith(b"HTTP/") and b"TLS only" not in answer:
            return  # a plaintext SuperLink (loopback demo): what --insecure is for
    try:
        sock = socket.create_connection((host, int(port)), timeout=timeout)
    except OSError:
        return
    if insecure:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    else:
        ctx = ssl.create_default_context(cafile=str(root_certificates))
    try:
        with ctx.wrap_socket(sock, server_hostname=host):
            speaks_tls = True
    except ssl.SSLCertVerificationError as exc:
        raise InputError(f"the SuperLink at {superlink} presents a certificate that {root_certificates} does not "
                         f"verify ({exc.verify_message}); get the consortium's ca.crt, and join by a name "
                         "the server certificate lists (`consortium certs --host NAME`)") from None
    except (ssl.SSLError, OSError):
        speaks_tls = False
    finally:
        sock.close()
    if insecure and speaks_tls:
        raise InputError(f"the SuperLink at {superlink} uses TLS: join with --root-certificates ca.crt (the "
                         "consortium's CA certificate) instead of --insecure")
    if not insecure and not speaks_tls:
        raise InputError(f"the SuperLink at {superlink} does not speak TLS (an --insecure loopback server?); "
                         "check the address, or join a loopback demo with --insecure")


def _plaintext_answer(host: str, port: int, timeout: float) -> bytes:
    """The first bytes a plaintext `GET /health` gets back (b"" when refused, dropped or nothing listens)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(f"GET /health HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            answer = b""
            while len(answer) < 4096 and (chunk := sock.recv(4096)):
                answer += chunk
            return answer
    except OSError:
        return b""


def start_supernode(cfg: PartnerConfig, superlink: str, *, port: int, log: Path | None = None,
                    flwr_home: Path | None = None, insecure: bool = True,
                    root_certificates: Path | None = None, warm: bool = False,
                    threads: int | None = None, node_key: Path | None = None,
                    audit_log: Path | None = None, output: int | None = None) -> subprocess.Popen:
    """Start the SuperNode in its own process group (stop it with os.killpg); output to `log` if given.

    `warm`: the SuperNode in process isolation plus `partner_kit.warm_exec` in the same process group, which
    forks each ClientApp process from an already-imported parent instead of starting Python afresh.
    Both get a parent-death signal, so they stop when the caller dies, even by SIGKILL.
    `threads`: CPU threads for the partner's training (default: torch's choice, all cores). Set it when
    several SuperNodes share one machine: oversubscribed OpenMP threads spin against each other (measured:
    10x slower training with three 2-thread partners on 2 cores).
    """
    from consortium.processes import die_with_parent

    check_partner(cfg)
    if root_certificates is not None:
        root_certificates = Path(root_certificates).expanduser().resolve()
        if not root_certificates.is_file():
            raise InputError(f"--root-certificates {root_certificates} not found; it is the consortium's ca.crt")
    if node_key is not None:
        node_key = Path(node_key).expanduser().resolve()
        if not node_key.is_file():
            raise InputError(f"--node-key {node_key} not found; make one with `partner-kit keygen`")
    cmd = supernode_command(cfg, superlink, port=port, insecure=insecure, root_certificates=root_certificates,
                            warm=warm, node_key=node_key, audit_log=audit_log)
    env = dict(os.environ)
    if warm:  # how often the warm executor asks its SuperNode for a task (Flower: 1 s)
        env.setdefault("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", str(DEFAULT_POLL_S / 4))
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(int(threads))
    if flwr_home is not None:
        env["FLWR_HOME"] = str(flwr_home)
    # The SuperNode spawns flower-superexec / flwr-clientapp from PATH: this environment's first.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    out = None
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        out = open(log, "ab")  # noqa: SIM115 (handed to the child)
    sink = out if out is not None else output  # `output`: a file descriptor both processes write to
    streams: dict[str, Any] = {"stdout": sink, "stderr": subprocess.STDOUT if sink is not None else None, "env": env}
    try:
        # A new process group in this session (a new session would keep the executor from joining it).
        node = subprocess.Popen(cmd, process_group=0, preexec_fn=die_with_parent(), **streams)
        if warm:
            # Same process group as the SuperNode (one killpg stops both); it also exits when the SuperNode does.
            node.warm_exec = subprocess.Popen(warm_exec_command(port, node.pid), process_group=node.pid,  # type: ignore[attr-defined]
                                              preexec_fn=die_with_parent(), **streams)
        return node
    finally:
        if out is not None:
            out.close()


def resolve(cfg: PartnerConfig) -> PartnerConfig:
    """Absolute paths: the ClientApp runs in another process and working directory."""
    return dataclasses.replace(cfg, plan=Path(cfg.plan).resolve(), prepared=Path(cfg.prepared).resolve(),
                               model=Path(cfg.model).resolve())


def with_reference_hash(cfg: PartnerConfig, plan: Plan, key: Path | None) -> PartnerConfig:
    """The partner's reference hash (computed with `key`, or cached in the model dir) in its config; checked
    against the plan's `reference_hash` slot here, before anything connects."""
    from partner_kit.reference import partner_reference_hash

    manifest = json.loads((Path(cfg.prepared) / "manifest.json").read_text())
    digest = partner_reference_hash(cfg.plan, manifest, cfg.prepared, cfg.model, key)
    if plan.reference_hash and digest != plan.reference_hash:
        raise InputError(f"your reference hash {digest[:16]}… is not the plan's reference_hash "
                         f"{plan.reference_hash[:16]}…: your secret key or kit differs from the consortium's; "
                         "the consortium would refuse your updates")
    return dataclasses.replace(cfg, reference_hash=digest)


def join_command(
    plan_path: Path = typer.Option(..., "--plan", help="The consortium's plan (plan.toml)"),
    prepared: Path = typer.Option(..., "--prepared", help="This partner's prepared directory"),
    model: Path = typer.Option(..., "--model", help="This partner's model directory (heads persist here)"),
    superlink: str = typer.Option(..., "--superlink", help="The consortium's SuperLink, HOST:PORT"),
    key: Path | None = typer.Option(None, "--key", help="Your secret.key: computes the reference hash the "
                                    "consortium admits you by (once; cached in --model)"),
    name: str = typer.Option("partner", "--name", help="Partner name for local logs (never sent)"),
    port: int = typer.Option(0, "--port", help="Local port of this SuperNode's runtime API (0: a free one)"),
    seed: int | None = typer.Option(None, "--seed", help="Partner seed for head init (default: the plan's)"),
    valid_fold: int = typer.Option(1, "--valid-fold", help="Fold used for model selection"),
    test_fold: int = typer.Option(0, "--test-fold", help="Fold held out for the final local evaluation"),
    insecure: bool = typer.Option(False, "--insecure", help="No TLS (loopback tests only)"),
    root_certificates: Path | None = typer.Option(None, "--root-certificates",
                                                  help="The consortium's CA certificate (TLS)"),
    node_key: Path | None = typer.Option(None, "--node-key", help="This partner's node private key from "
                                         "`partner-kit keygen` (the operator admitted its .pub)"),
    audit_log: Path | None = typer.Option(None, "--audit-log", help="Append the keys, types and sizes of "
                                          "every message this partner sends to FILE (JSON lines, no values)"),
    threads: int | None = typer.Option(None, "--threads", min=1, help="CPU threads for training (default: all "
                                       "cores; set it when several partners share one machine)"),
    warm: bool = typer.Option(True, "--warm/--cold", help="Fork each ClientApp process from a warm parent "
                              "(--warm) or let Flower start a fresh Python per message (--cold)"),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP + " (private: never sent)"),
) -> None:
    """Join a federated run: start this partner's SuperNode; heads and data stay on this machine."""
    import time

    from partner_kit.device import resolve_device
    from partner_kit.federated import PartnerConfig

    resolve_device(device)  # `--device cuda` without a GPU fails here, before anything connects
    cfg = resolve(PartnerConfig(plan=plan_path, prepared=prepared, model=model, name=name, seed=seed,
                                valid_fold=valid_fold, test_fold=test_fold, device=device))
    plan = check_partner(cfg)
    if not insecure and root_certificates is None:
        raise InputError("joining over TLS needs --root-certificates (the consortium's ca.crt); --insecure is for "
                         "loopback tests only")
    cfg = with_reference_hash(cfg, plan, key)
    probe_superlink(superlink, insecure=insecure, root_certificates=root_certificates)
    if port == 0:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
    console.print(f"{name}: plan {plan.hash[:16]}… ok, prepared data ok, reference hash "
                  f"{cfg.reference_hash[:16]}…; connecting to {superlink} "
                  f"({'INSECURE' if insecure else 'TLS'}{', node key' if node_key else ''}; Ctrl-C to leave)",
                  highlight=False)
    started = time.time()

    def leave(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, leave)   # also when started in the background (SIGINT ignored by default)
    signal.signal(signal.SIGTERM, leave)
    code: int | None = None
    left = refused = False
    try:
        for attempt in range(1, REFUSED_ATTEMPTS + 1):
            code, left, refused = _run_supernode(cfg, superlink, port=port, insecure=insecure,
                                                 root_certificates=root_certificates, warm=warm, threads=threads,
                                                 node_key=node_key, audit_log=audit_log)
            if not refused or left or attempt == REFUSED_ATTEMPTS:
                break
            # A SuperLink that just started may still be registering the admitted keys: ask again shortly.
            console.print(f"{name}: refused by the consortium (attempt {attempt} of {REFUSED_ATTEMPTS}); trying "
                          f"again in {REFUSED_RETRY_S:.0f} s", highlight=False)
            time.sleep(REFUSED_RETRY_S)
    except KeyboardInterrupt:  # between attempts (during one, _run_supernode handles it)
        left = True
    ok, message = outcome(cfg, started, code, left, refused=refused)
    console.print(f"{name}: {message}", highlight=False)
    if not ok:
        raise typer.Exit(code=1)


REFUSED_ATTEMPTS, REFUSED_RETRY_S = 3, 10.0


def _run_supernode(cfg: PartnerConfig, superlink: str, **options: Any) -> tuple[int | None, bool, bool]:
    """Run the SuperNode (and its executor) until it stops or this process is told to leave.

    Returns (exit code, whether we left on Ctrl-C / SIGTERM, whether Flower refused the node). Whatever ends
    it, the SuperNode's whole process group is stopped before this returns.
    """
    read_fd, write_fd = os.pipe()  # the SuperNode's output, echoed here and scanned for Flower's refusal
    try:
        proc = start_supernode(cfg, superlink, output=write_fd, **options)
    finally:
        os.close(write_fd)
    echo = OutputEcho(read_fd)
    left = False
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        left, code = True, 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    echo.join(timeout=5)
    return code, left, echo.refused


#: What Flower's SuperNode prints when the SuperLink turns it away (unknown or missing node key).
REFUSAL_MARKS = ("Failed to activate SuperNode", "All SuperNodes must be registered", "Exit Code: 305")


class OutputEcho:
    """Copy the SuperNode's output to this terminal in a thread, noting whether Flower refused the node."""

    def __init__(self, fd: int) -> None:
        import threading

        self.refused = False
        self._stream = os.fdopen(fd, "r", errors="replace")
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for line in self._stream:
            sys.stdout.write(line)
            sys.stdout.flush()
            if any(mark in line for mark in REFUSAL_MARKS):
                self.refused = True

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


def outcome(cfg: PartnerConfig, started: float, code: int | None, left: bool,
            refused: bool = False) -> tuple[bool, str]:
    """(success, one line saying how this join ended), so a partner never looks joined when it is not."""
    metrics = Path(cfg.model) / "metrics.json"
    contributed = False
    if metrics.is_file() and metrics.stat().st_mtime >= started:
        with contextlib.suppress(ValueError):
            contributed = bool(json.loads(metrics.read_text()).get("federated"))
    if contributed:
        done = f"the federated run ended; your federated model is in {cfg.model}/"
        return True, f"left the federation; {done}" if left else done
    if refused:
        return False, ("error: the consortium refused this node or could not be reached: was your node key admitted "
                "(`consortium admit partner.key.pub`)? are --superlink and the TLS options right? (see the "
                "SuperNode's ERROR line above)")
    if left:
        return True, "left the federation (no federated round finished while joined)"
    return False, (f"error: the SuperNode stopped (code {code}): joined after the last round, the "
                   "consortium's server stopped, or the operator revoked this node; no federated model; your "
                   "single-partner model is unchanged. Join again to take part in the next run")


def keygen_command(
    out: Path = typer.Option(..., "--out", help="Private key file to write (its .pub goes beside it)"),
    force: bool = typer.Option(False, "--force", help="Replace an existing key pair"),
) -> None:
    """Make this partner's node key pair; send the .pub file to the operator (`consortium admit`)."""
    from consortium.certs import make_node_keys

    private, public = make_node_keys(out, force=force)
    console.print(f"wrote {private} (private, keep it; `join --node-key {private}`) and {public} (send it to the "
                  "consortium operator)", highlight=False)
