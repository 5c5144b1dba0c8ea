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
import shlex
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
from partner_kit.supernode import DEFAULT_POLL_S

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
                      root_certificates: Path | None = None, warm: bool = False) -> list[str]:
    if not insecure and root_certificates is None:
        raise InputError("joining over TLS needs --root-certificates (the consortium's CA certificate); "
                         "--insecure is for loopback tests only")
    security = ["--insecure"] if insecure else ["--root-certificates", str(root_certificates)]
    # warm: our entry point (Flower's SuperNode polling every DEFAULT_POLL_S, partner_kit.supernode) in process
    # isolation, so partner_kit.warm_exec can take SuperExec's place; cold: Flower's defaults throughout.
    node = ([sys.executable, "-m", "partner_kit.supernode", "--isolation", "process"] if warm
            else [_exe("flower-supernode")])
    return [*node, *security, "--superlink", superlink, "--port", str(port),
            "--node-config", format_node_config(cfg.to_node_config())]


def warm_exec_command(port: int, supernode_pid: int, *, insecure: bool = True,
                      root_certificates: Path | None = None) -> list[str]:
    """`partner_kit.warm_exec` in SuperExec's place: ClientApp processes forked after the imports."""
    security = ["--insecure"] if insecure else ["--root-certificates", str(root_certificates)]
    return [sys.executable, "-m", "partner_kit.warm_exec", "--runtime-api-address", f"127.0.0.1:{port}",
            *security, "--parent-pid", str(supernode_pid)]


def start_supernode(cfg: PartnerConfig, superlink: str, *, port: int, log: Path | None = None,
                    flwr_home: Path | None = None, insecure: bool = True,
                    root_certificates: Path | None = None, warm: bool = False,
                    threads: int | None = None) -> subprocess.Popen:
    """Start the SuperNode in its own process group (stop it with os.killpg); output to `log` if given.

    `warm`: the SuperNode in process isolation plus `partner_kit.warm_exec` (same process group), which forks
    each ClientApp process from an already-imported parent instead of starting Python afresh.
    `threads`: CPU threads for the partner's training (default: torch's choice, all cores). Set it when
    several SuperNodes share one machine: oversubscribed OpenMP threads spin against each other (measured:
    10x slower training with three 2-thread partners on 2 cores).
    """
    check_partner(cfg)
    cmd = supernode_command(cfg, superlink, port=port, insecure=insecure, root_certificates=root_certificates,
                            warm=warm)
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
    if warm:
        # One session for both: the SuperNode in the background, the warm executor watching its pid.
        warm_cmd = warm_exec_command(port, 0, insecure=insecure, root_certificates=root_certificates)
        warm_cmd[-1] = "$!"
        script = f"{shlex.join(cmd)} & exec {' '.join(shlex.quote(c) if c != '$!' else c for c in warm_cmd)}"
        cmd = ["/bin/sh", "-c", script]
    try:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT if out else None, env=env,
                                start_new_session=True)
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
    threads: int | None = typer.Option(None, "--threads", min=1, help="CPU threads for training (default: all "
                                       "cores; set it when several partners share one machine)"),
    warm: bool = typer.Option(True, "--warm/--cold", help="Fork each ClientApp process from a warm parent "
                              "(--warm) or let Flower start a fresh Python per message (--cold)"),
) -> None:
    """Join a federated run: start this partner's SuperNode; heads and data stay on this machine."""
    from partner_kit.federated import PartnerConfig

    cfg = resolve(PartnerConfig(plan=plan_path, prepared=prepared, model=model, name=name, seed=seed,
                                valid_fold=valid_fold, test_fold=test_fold))
    plan = check_partner(cfg)
    cfg = with_reference_hash(cfg, plan, key)
    if port == 0:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
    console.print(f"{name}: plan {plan.hash[:16]}… ok, prepared data ok, reference hash "
                  f"{cfg.reference_hash[:16]}…; connecting to {superlink} (Ctrl-C to leave)")
    proc = start_supernode(cfg, superlink, port=port, insecure=insecure, root_certificates=root_certificates,
                           warm=warm, threads=threads)

    def leave(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, leave)   # also when started in the background (SIGINT ignored by default)
    signal.signal(signal.SIGTERM, leave)
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        code = proc.wait(timeout=30)
        console.print(f"{name}: left the federation")
    if code not in (0, -signal.SIGTERM):
        raise typer.Exit(code=code)
