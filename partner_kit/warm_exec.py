"""A warm SuperExec for a partner's SuperNode: a fresh process per message, without paying the imports again.

Flower's SuperNode runs each message in a new `flwr-clientapp` process, which imports Python, Flower, torch
and the partner kit every time (seconds per message, the fixed cost of a deployed round). With the SuperNode
in `--isolation process` mode, this process takes SuperExec's place: it runs Flower's own SuperExec loop
(`run_superexec`: acquire a task token from the SuperNode's runtime API), but launches each task by forking
itself after the imports are done. The child runs Flower's own `run_clientapp` with the token, exactly as
`flwr-clientapp` would, and exits; nothing is computed in the parent before forking (no torch thread pools
to inherit), and the partner's state still comes from disk every round, so results are unchanged.

    python -m partner_kit.warm_exec --runtime-api-address 127.0.0.1:PORT --insecure [--parent-pid PID]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys

from flwr.supercore.constant import TaskType
from flwr.supercore.superexec import run_superexec as _runner
from flwr.supercore.superexec.executor import LaunchResult
from flwr.supercore.superexec.executor.subprocess_executor import SubprocessExecutor
from flwr.supernode.runtime.run_clientapp import run_clientapp

import partner_kit.client_app  # noqa: F401  (the point: import torch, Flower and the kit once, before forking)
from consortium.flower_tuning import (
    cache_config_record_deflate,
    inflate_arrays_in_one_copy,
    shorten_object_pull_backoff,
)
from consortium.processes import set_parent_death_signal

#: Modules the first round imports lazily (~1 s in every child otherwise): torch's compile machinery, pulled
#: in by the optimizers, and Parquet for the task table. Imported, never run, so no thread pool is started.
PRELOAD = ("torch._dynamo", "torch.optim", "pyarrow.parquet", "pandas.io.parquet")


class ForkExecutor(SubprocessExecutor):
    """Launch ClientApp tasks as forks of this (already warm) process."""

    def __init__(self) -> None:
        self.children: set[int] = set()

    def launch(self, spec) -> LaunchResult:  # spec: flwr ExecutionSpec
        if spec.task_type != TaskType.CLIENT_APP:
            return super().launch(spec)
        certificates = None
        if not spec.insecure and spec.root_certificates_path:
            with open(spec.root_certificates_path, "rb") as fh:
                certificates = fh.read()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # child: Flower's ClientApp runner, then leave without the parent's exit handlers
            code = 1
            try:
                set_parent_death_signal(signal.SIGKILL, expected_parent=parent)  # never outlive the executor
                run_clientapp(spec.runtime_api_address, spec.token, spec.insecure, certificates,
                              parent_pid=spec.parent_pid, runtime_dependency_install=False)
                code = 0
            except SystemExit as exc:  # flwr_exit ends the task with sys.exit(code)
                code = int(exc.code or 0) if isinstance(exc.code, int | None) else 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        self.children.add(pid)
        return LaunchResult.accepted()

    def reconcile(self) -> None:
        for pid in list(self.children):
            with contextlib.suppress(ChildProcessError):
                done, _ = os.waitpid(pid, os.WNOHANG)
                if not done:
                    continue
            self.children.discard(pid)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runtime-api-address", required=True, help="The SuperNode's runtime API (HOST:PORT)")
    ap.add_argument("--insecure", action="store_true")
    ap.add_argument("--root-certificates", default=None)
    ap.add_argument("--parent-pid", type=int, default=None, help="Exit when this process (the SuperNode) exits")
    args = ap.parse_args(argv)
    for module in PRELOAD:
        importlib.import_module(module)
    # Inherited by every child: its message is fetched without a 1 s backoff, the received trunk rebuilt from its
    # chunks with one copy (not three), its reply serialized once.
    shorten_object_pull_backoff()
    inflate_arrays_in_one_copy()
    cache_config_record_deflate()
    executor = ForkExecutor()
    _runner.get_executor = lambda *a, **k: executor  # Flower's loop, our launcher
    _runner.run_superexec(runtime_api_address=args.runtime_api_address, insecure=args.insecure,
                          root_certificates_path=args.root_certificates, parent_pid=args.parent_pid,
                          runtime_dependency_install=False)


if __name__ == "__main__":
    main()
