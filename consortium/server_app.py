"""The consortium's Flower ServerApp: one code path for plain and SecAgg+ rounds, deployed or embedded.

Flower 1.42 drives SecAgg+ only through its legacy path, so both settings run the legacy `DefaultWorkflow`
with a `LegacyContext` holding `TrunkFedAvg`; with secure aggregation on, the fit step is Flower's
`SecAggPlusWorkflow`. The grid is wrapped so every reply is checked before any workflow reads it. After
each round the aggregated trunk is checkpointed, a ledger line appended and `status.json` rewritten.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Array, Context, Message, RecordDict
from flwr.common import GetPropertiesIns
from flwr.common.constant import MessageTypeLegacy
from flwr.compat.common.recorddict_compat import getpropertiesins_to_recorddict
from flwr.server import LegacyContext, ServerConfig
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.server.workflow.default_workflows import default_fit_workflow
from flwr.serverapp import Grid, ServerApp
from flwr.supercore.run import Run

from consortium.admission import Admission, AdmissionRefused
from consortium.checkpoints import checkpoint_path, list_checkpoints, load_checkpoint, save_checkpoint
from consortium.flower_tuning import (
    cache_config_record_deflate,
    inflate_arrays_in_one_copy,
    shorten_object_pull_backoff,
)
from consortium.ledger import LEDGER_NAME, Ledger, line_sha256, verify_run
from consortium.plan import Plan
from consortium.processes import set_parent_death_signal
from consortium.run_status import STATUS_NAME, writer_identity
from consortium.server_optimizer import ServerAdam, state_path
from consortium.strategy import RoundFailed, RoundResult, TrunkFedAvg, refuse_invalid
from consortium.trunk import initial_trunk, trunk_sha256
from data_prep.atomic import write_text_atomic
from data_prep.errors import InputError

log = logging.getLogger("consortium")
DEFAULT_SECAGG_MAX_WEIGHT = 1_000_000.0
REPLY_POLL_S = 0.1  # seconds between pulls for replies (Flower: 3)


@dataclass(frozen=True)
class RunSettings:
    """What one server run needs besides the grid: where to write, how many rounds, whether to resume."""

    plan: Plan
    run_dir: Path
    rounds: int
    resume: bool = False
    secagg_max_weight: float = DEFAULT_SECAGG_MAX_WEIGHT
    mode: str = "deployed"
    on_status: Callable[[dict[str, Any]], None] | None = None
    #: Seed of the initial trunk and of the round seeds; None = the plan's training.seed (repeat-seed studies
    #: vary it without changing the plan, so the prepared data stays valid).
    seed: int | None = None
    #: Refuse trunk replies that carry no reference hash; None = only when deployed (an embedded demo may run
    #: prepared directories whose key it does not have). A hash that differs is refused either way.
    require_reference: bool | None = None
    #: Keep only the newest N round checkpoints (0 = all). The ledger keeps every round's trunk hash and the
    #: newest checkpoint the ledger head, so verification and resume need no older checkpoint.
    keep_checkpoints: int = 0

    @property
    def run_seed(self) -> int:
        return int(self.plan.training.seed if self.seed is None else self.seed)


def start_point(settings: RunSettings) -> tuple[int, dict[str, np.ndarray], ServerAdam | None]:
    """(first round to run, trunk to start from, server optimizer): round 1, the plan's initial trunk and fresh
    moments, or the ledger's last round + 1, its checkpoint and the moments saved beside it, after checking the
    checkpoint is the trunk the ledger recorded. The server optimizer is None unless the plan runs one."""
    plan, run_dir = settings.plan, settings.run_dir
    server_optimizer = ServerAdam(plan) if plan.federation.server_optimizer == "adam" else None
    entries = verify_run(run_dir)  # what `consortium status` flags, resume refuses
    if entries and not settings.resume:
        raise InputError(f"{run_dir} already holds a run ({entries[-1].round} rounds in {LEDGER_NAME}); "
                         "pass --resume to continue it or choose a new output directory")
    if entries and entries[-1].plan_hash != plan.hash:
        raise InputError(f"{run_dir} was run under another plan (hash {entries[-1].plan_hash[:12]}…); "
                         "resume with the run's own plan")
    if not entries:
        return 1, initial_trunk(plan, settings.run_seed), server_optimizer
    last = entries[-1]
    trunk = load_checkpoint(checkpoint_path(run_dir, last.round), plan)
    if trunk_sha256(trunk) != last.trunk_sha256:
        raise InputError(f"checkpoint of round {last.round} does not match the ledger's trunk hash; "
                         "it was changed after the round was recorded")
    if last.round >= settings.rounds:
        raise InputError(f"{run_dir} already completed {last.round} rounds; pass a larger --rounds to go on")
    if server_optimizer is not None:
        server_optimizer.load(state_path(checkpoint_path(run_dir, last.round)), last.round)
    return last.round + 1, trunk, server_optimizer


class RunRecorder:
    """Checkpoint + ledger line + status after each round; status also while waiting and at the end."""

    def __init__(self, settings: RunSettings, first_round: int, server_optimizer: ServerAdam | None = None) -> None:
        self.s = settings
        self.server_optimizer = server_optimizer  # its moments are saved before each checkpoint
        self.ledger = Ledger(settings.run_dir / LEDGER_NAME)
        self.status: dict[str, Any] = {
            "state": "starting", "mode": settings.mode, "plan_hash": settings.plan.hash,
            "rounds": settings.rounds, "round": first_round - 1, "first_round": first_round,
            "secure_aggregation": settings.plan.federation.secure_aggregation,
            "nodes": [], "round_seconds": [], "last_loss": None, "final_loss": None, "refused": [], "failures": [],
            "started": _now(), **writer_identity(),
        }
        self._t = time.perf_counter()
        self._refused_now: list[str] = []  # refused at the message level since the last ledger line
        self._seen: set[int] = set()         # every node connected at some point of this run
        self._contributed: set[int] = set()  # nodes averaged into at least one round
        self.write()

    def write(self, **changes: Any) -> None:
        self.status.update(changes, updated=_now())
        write_text_atomic(self.s.run_dir / STATUS_NAME, json.dumps(self.status, indent=2) + "\n")
        if self.s.on_status is not None:
            self.s.on_status(dict(self.status))

    def nodes_seen(self, node_ids: Iterable[int]) -> None:
        ids = sorted(int(n) for n in node_ids)
        self._seen.update(ids)
        if ids != self.status["nodes"]:
            self.write(nodes=ids)

    def on_refused(self, node_id: int, reason: str) -> None:
        log.warning("refused reply from node %s: %s", node_id, reason)
        self._refused_now.append(f"node {node_id}: {reason}")
        self.write(refused=[*self.status["refused"], f"node {node_id}: {reason}"])

    def on_round(self, result: RoundResult) -> None:
        # The line first (not written), its hash into the checkpoint, then the line: the newest checkpoint
        # always names the ledger head, so a truncated or rewritten ledger is caught (`verify_run`).
        sha = trunk_sha256(result.trunk)  # once: the ledger line and the checkpoint's metadata
        entry = self.ledger.next_entry(
            round=result.round, plan_hash=self.s.plan.hash, node_ids=[u.node_id for u in result.updates],
            examples=[u.examples for u in result.updates], losses=[u.loss for u in result.updates],
            trunk_sha256=sha, refused=[*self._refused_now, *result.refused],
            dp_epsilon=result.dp_epsilon,
        )
        if self.server_optimizer is not None:  # first: a checkpoint never exists without the moments it needs
            self.server_optimizer.save(state_path(checkpoint_path(self.s.run_dir, result.round)), result.round)
        save_checkpoint(self.s.run_dir, result.round, result.trunk, self.s.plan, sha256=sha,
                        ledger_head=line_sha256(entry.to_line()), ledger_lines=len(self.ledger.entries()) + 1)
        self.ledger.write(entry)
        if self.s.keep_checkpoints > 0:
            for old in list(list_checkpoints(self.s.run_dir).values())[:-self.s.keep_checkpoints]:
                old.unlink(missing_ok=True)
                state_path(old).unlink(missing_ok=True)
        self._refused_now = []
        self._contributed.update(u.node_id for u in result.updates)
        now = time.perf_counter()
        total = sum(u.examples for u in result.updates)
        loss = sum(u.examples * u.loss for u in result.updates) / total
        if result.dp_epsilon is not None:
            self.status["dp"] = {"epsilon": result.dp_epsilon, "delta": self.s.plan.federation.dp_delta,
                                 "noise_multiplier": self.s.plan.federation.dp_noise_multiplier,
                                 "clipping_norm": self.s.plan.federation.dp_clipping_norm,
                                 "noise_std": result.dp_noise_std}
        self.write(state="running", round=result.round, last_loss=loss,
                   round_seconds=[*self.status["round_seconds"], round(now - self._t, 3)],
                   refused=[*self.status["refused"], *result.refused],
                   failures=[*self.status["failures"], *result.failures])
        self._t = now
        log.info("round %d/%d aggregated: %d partners, loss %.4f", result.round, self.s.rounds,
                 len(result.updates), loss)

    def on_final(self, loss: float | None, n: int) -> None:
        self.write(final_loss=loss, final_partners=n)

    def finish(self) -> None:
        # A partner that connected but was in no round (joined after the last one, or always refused)
        # gets no federated model; say so here as its `join` does on its side.
        self.write(state="finished", no_round_nodes=sorted(self._seen - self._contributed))


class GuardedGrid(Grid):
    """Delegates to a real grid; checks every reply (`check_reply`) and notes which nodes are connected."""

    def __init__(self, inner: Grid, plan: Plan, recorder: RunRecorder, admission: Admission | None = None) -> None:
        self.inner, self.plan, self.recorder, self.admission = inner, plan, recorder, admission

    def set_run(self, run: Run) -> None:
        self.inner.set_run(run)

    @property
    def run(self) -> Run:
        return self.inner.run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        ids = list(self.inner.get_node_ids())
        self.recorder.nodes_seen(ids)
        return ids

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.inner.push_messages(share_arrays(messages))

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return refuse_invalid(self.inner.pull_messages(message_ids), self.plan, self.recorder.on_refused,
                              self.admission)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        """Push, then pull until every reply is in (or `timeout`), polling every `REPLY_POLL_S`.

        Flower's own loop sleeps 3 s between pulls, an average 1.5 s added to every round trip (a SecAgg+
        round has four); a pull is one cheap call to our own SuperLink, so we ask more often.
        """
        pending = set(self.inner.push_messages(share_arrays(messages)))
        deadline = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        while pending:
            pulled = list(self.inner.pull_messages(pending))
            replies.extend(pulled)
            pending.difference_update(m.metadata.reply_to_message_id for m in pulled)
            if not pending or (deadline is not None and time.monotonic() >= deadline):
                break
            time.sleep(REPLY_POLL_S)
        return refuse_invalid(replies, self.plan, self.recorder.on_refused, self.admission)


def share_arrays(messages: Iterable[Message]) -> list[Message]:
    """The messages, with arrays that carry the same payload object (the one trunk every partner is sent) made
    one `Array` object: Flower then slices, hashes and serializes that trunk once per round, not once per
    partner (each id is a SHA-256 of 256 MiB at 32000 x 2000). What is sent does not change."""
    messages = list(messages)
    seen: dict[tuple[int, str, tuple[int, ...], str], Array] = {}  # holds each payload, so its id stays unique
    for msg in messages:
        if not msg.has_content():
            continue
        for record in msg.content.array_records.values():
            for key, arr in list(record.items()):
                if isinstance(arr.data, bytes):
                    first = seen.setdefault((id(arr.data), arr.dtype, tuple(arr.shape), arr.stype), arr)
                    if first is not arr:
                        record[key] = first
    return messages


def run_server(grid: Grid, context: Context, settings: RunSettings) -> dict[str, Any]:
    """Run (or resume) the federation on `grid` until `settings.rounds`; returns the final status."""
    plan = settings.plan
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    first_round, trunk, server_optimizer = start_point(settings)
    if first_round == 1:
        save_checkpoint(settings.run_dir, 0, trunk, plan)
    plan.save(settings.run_dir / "plan.toml")
    recorder = RunRecorder(settings, first_round, server_optimizer)
    inner_fit: Any = default_fit_workflow
    if plan.federation.secure_aggregation:
        secagg = SecAggPlusWorkflow(
            num_shares=1.0, reconstruction_threshold=0.5, max_weight=settings.secagg_max_weight,
            clipping_range=plan.federation.secagg_clipping_range,
            quantization_range=plan.federation.secagg_quantization_range,
        )
        inner_fit = secagg

    def fit_workflow(grid: Grid, ctx: Context) -> None:
        # Flower skips a round quietly when no partner is sampled or SecAgg+ halts; a consortium must not.
        before = recorder.status["round"]
        if before == first_round - 1:  # "running" only once the partners are there, not while waiting
            n = plan.federation.min_partners
            legacy.client_manager.sample(num_clients=n, min_num_clients=n)  # asks the grid first, then waits
            recorder.write(state="running")
        if plan.federation.secure_aggregation and before == first_round - 1:
            # SecAgg+ quantizes example-weighted trunks against max_weight: ask the (public) example
            # counts first, so the first round is as precise as the later ones.
            n = plan.federation.min_partners
            legacy.client_manager.sample(num_clients=n, min_num_clients=n)  # waits for (and registers) nodes
            counts = probe_examples(grid, [int(n) for n in legacy.client_manager.all()], plan)
            if counts:
                secagg.max_weight = float(max(counts.values()))
        inner_fit(grid, ctx)
        if recorder.status["round"] == before:
            raise RoundFailed(f"round {before + 1} was not aggregated (too few partners answered, or secure "
                              "aggregation halted); see the partner logs, then resume with --resume")

    def on_round(result: RoundResult) -> None:
        recorder.on_round(result)
        if plan.federation.secure_aggregation:
            # Weights are public (example counts): fit max_weight to them for the finest quantization.
            secagg.max_weight = float(max(u.examples for u in result.updates))

    required = settings.mode == "deployed" if settings.require_reference is None else settings.require_reference
    try:
        admission = Admission(settings.run_dir, plan.reference_hash, required=required)
    except AdmissionRefused as exc:
        raise InputError(str(exc)) from None
    strategy = TrunkFedAvg(plan, trunk, total_rounds=settings.rounds, first_round=first_round,
                           on_round=on_round, on_final=recorder.on_final, seed=settings.run_seed,
                           admission=admission, server_optimizer=server_optimizer)
    legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=settings.rounds - first_round + 1),
                           strategy=strategy)
    recorder.write(state="waiting for partners")
    try:
        DefaultWorkflow(fit_workflow=fit_workflow)(GuardedGrid(grid, plan, recorder, admission), legacy)
    except Exception as exc:
        recorder.write(state="failed", error=str(exc))
        raise
    recorder.finish()
    return recorder.status


def probe_examples(grid: Grid, node_ids: list[int], plan: Plan) -> dict[int, int]:
    """Each partner's training example count (a legacy get_properties message; replies are checked)."""
    content = {"plan_hash": plan.hash}
    msgs = [Message(getpropertiesins_to_recorddict(GetPropertiesIns(dict(content))), n,
                    MessageTypeLegacy.GET_PROPERTIES, group_id="0") for n in node_ids]
    counts = {}
    for reply in grid.send_and_receive(msgs):
        if reply.has_content():
            props = reply.content.config_records["getpropertiesres.properties"]
            counts[reply.metadata.src_node_id] = int(props["num_examples"])
    return counts


def settings_from_run_config(run_config: dict[str, Any]) -> RunSettings:
    plan = Plan.load(str(run_config["plan"]))
    rounds = int(run_config.get("rounds", 0)) or plan.federation.rounds
    return RunSettings(plan=plan, run_dir=Path(str(run_config["run-dir"])), rounds=rounds,
                       resume=bool(run_config.get("resume", False)),
                       secagg_max_weight=float(run_config.get("secagg-max-weight", DEFAULT_SECAGG_MAX_WEIGHT)))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


#: The deployed ServerApp (`consortium/flower_app/pyproject.toml` points here); run config keys:
#: plan, run-dir, rounds (0 = the plan's), resume, secagg-max-weight.
app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    logging.basicConfig(level=logging.INFO)
    set_parent_death_signal()  # stop with Flower's SuperExec (and so with `consortium serve`), even on SIGKILL
    shorten_object_pull_backoff()  # replies are fetched as soon as their upload ends, not up to 1 s later
    cache_config_record_deflate()
    inflate_arrays_in_one_copy()  # each partner's reply rebuilt with one copy, not three
    run_server(grid, context, settings_from_run_config(dict(context.run_config)))
