"""Child processes that live and die with their parent: one process group each, and a parent-death signal.

`consortium serve` and `partner-kit join` start Flower processes (SuperLink, SuperNode, executors) in their
own process group, so one `killpg` stops a service with everything it started. That alone does not cover the
parent dying without cleaning up (SIGKILL, OOM): Linux's `prctl(PR_SET_PDEATHSIG)`, set in the child between
fork and exec, makes the kernel signal the child when its parent dies, and Flower's own processes stop theirs
on SIGTERM. Elsewhere than Linux the signal is not available and only the process groups remain.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1


def set_parent_death_signal(sig: int = signal.SIGTERM, expected_parent: int | None = None) -> bool:
    """Ask the kernel to send `sig` to this process when its parent dies; False where unsupported.

    If the parent is already gone (it died before this call), exit at once instead of running orphaned.
    """
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        return False
    if expected_parent is not None and os.getppid() != expected_parent:
        os._exit(1)
    return True


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None]:
    """A `preexec_fn` for `subprocess.Popen`: the child gets `sig` when the process starting it dies."""
    parent = os.getpid()

    def preexec() -> None:
        set_parent_death_signal(sig, expected_parent=parent)

    return preexec
