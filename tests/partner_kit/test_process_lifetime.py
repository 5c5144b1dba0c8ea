"""`consortium serve` and `partner-kit join` own their processes: SIGKILL of either leaves no orphan behind."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from fed_helpers import make_federation

from consortium.deploy import check_port_free, free_port
from consortium.run_status import read_status

BIN = Path(sys.executable).parent


def _env(flwr_home: Path) -> dict[str, str]:
    env = dict(os.environ, FLWR_HOME=str(flwr_home), OMP_NUM_THREADS="1")
    env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])
    return env


def _wait(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def _alive(procs: list[psutil.Process]) -> list[str]:
    out = []
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(f"{p.pid} {' '.join(p.cmdline()[:3])}")
    return out


@pytest.mark.slow
def test_sigkill_of_join_and_of_serve_process_groups_leaves_no_orphan(tmp_path):
    fed = make_federation(tmp_path, rounds=1)  # three partners needed; only one joins, so the run waits
    fed.reference_hashes()
    port, run = free_port(), tmp_path / "run"
    serve = subprocess.Popen([BIN / "consortium", "serve", "--plan", fed.plan_path, "--out", run, "--port", str(port),
                              "--insecure"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env=_env(tmp_path / "flwr-serve"), start_new_session=True)
    cfg = fed.partners()["A"]
    join = subprocess.Popen([BIN / "partner-kit", "join", "--plan", cfg.plan, "--prepared", cfg.prepared, "--model",
                             cfg.model, "--superlink", f"127.0.0.1:{port}", "--insecure", "--threads", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=_env(tmp_path / "flwr-A"), start_new_session=True)
    try:
        _wait(lambda: read_status(run).get("state") == "waiting for partners", 120, "the server app")
        _wait(lambda: len(_tree(join.pid)) >= 3, 60, "join's SuperNode and warm executor")
        _wait(lambda: len(read_status(run).get("nodes", [])) == 1, 60, "partner A connected")
        join_tree, serve_tree = _tree(join.pid), _tree(serve.pid)
        assert len(serve_tree) >= 3  # serve, SuperLink, SuperExec / ServerApp
        os.killpg(join.pid, signal.SIGKILL)  # join's own group only: its children are in another one
        _wait(lambda: not _alive(join_tree), 30, f"join's processes to stop: {_alive(join_tree)}")
        os.killpg(serve.pid, signal.SIGKILL)
        _wait(lambda: not _alive(serve_tree), 30, f"serve's processes to stop: {_alive(serve_tree)}")
        assert read_status(run)["state"] == "stopped"  # the ServerApp that wrote "waiting" is gone
        check_port_free("127.0.0.1", port)  # no orphan SuperLink listens there any more
    finally:
        for proc in (join, serve):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    assert json.dumps(read_status(run))  # still readable
