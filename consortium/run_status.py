"""`status.json`: what a run says about itself, and whether the process that says it is still alive.

The server rewrites `status.json` after every step, so a server that was killed leaves a file claiming
"running" forever. The writer records its pid, host and process start time; a reader on the same host
checks that this very process still exists (a reused pid has another start time) and otherwise reports the
run as "stopped". No Flower import here: `consortium status` stays instant.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from pathlib import Path
from typing import Any

STATUS_NAME = "status.json"
#: Beside status.json, written by serve's TLS front (`consortium.tls_front`), not the ServerApp: plaintext
#: connections refused.
FRONT_STATUS = "tls_front.json"
#: States in which a live server process is expected behind the file.
ACTIVE_STATES = ("starting", "waiting for partners", "running")


def process_start(pid: int) -> str | None:
    """The kernel's start time of `pid` (clock ticks since boot, from /proc); None if unknown, gone or a zombie."""
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
    except OSError:
        return None
    # Fields after the parenthesised command name (which may hold spaces): state is field 3, starttime 22.
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):  # dead, not yet reaped by its parent
        return None
    return fields[19]


def writer_identity() -> dict[str, Any]:
    """What a status writer records about itself so that readers can tell whether it still runs."""
    pid = os.getpid()
    return {"pid": pid, "host": socket.gethostname(), "pid_started": process_start(pid)}


def server_alive(status: dict[str, Any]) -> bool | None:
    """True/False when this host can tell (same host, pid recorded); None when it cannot."""
    pid, host = status.get("pid"), status.get("host")
    if not pid or host != socket.gethostname():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    started = process_start(int(pid))
    recorded = status.get("pid_started")
    return started is not None and (recorded is None or started == recorded)


def read_status(run_dir: str | Path) -> dict[str, Any]:
    """status.json, with `state` "stopped" when it claims an active run whose server process is gone."""
    path = Path(run_dir) / STATUS_NAME
    if not path.is_file():
        return {}
    try:
        status = json.loads(path.read_text())
    except (OSError, ValueError):
        return {"state": "unreadable", "error": f"{path} is not valid JSON"}
    front = read_front_status(run_dir)
    if front:
        with contextlib.suppress(ValueError, TypeError):
            status["plaintext_refused"] = int(front.get("plaintext_refused", 0))
    if status.get("state") in ACTIVE_STATES and server_alive(status) is False:
        status["last_state"] = status["state"]
        status["state"] = "stopped"
        status["error"] = (f"the server process (pid {status.get('pid')}) is gone; it stopped while "
                           f"{status['last_state']} (round {status.get('round')}); resume with --resume")
    return status


def read_front_status(run_dir: str | Path) -> dict[str, Any]:
    """The TLS front's counters ({} when the run had no front, or its file is unreadable)."""
    try:
        front = json.loads((Path(run_dir) / FRONT_STATUS).read_text())
    except (OSError, ValueError):
        return {}
    return front if isinstance(front, dict) else {}
