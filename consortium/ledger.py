"""The round ledger (`ledger.jsonl`): an append-only, hash-chained audit trail of the federation.

One JSON line per aggregated round: round, time, the Flower node ids that took part, their example counts
and losses, the SHA-256 of the aggregated trunk (as checkpointed), and the SHA-256 of the previous line's
exact bytes. Editing, dropping or reordering any line breaks the chain at the next line, so `verify` finds it;
a partner holding a copy of the last line's hash can check the whole history.

A chain alone cannot show a removed *last* line, or an edit followed by recomputing every later hash. So each
round's checkpoint also carries the ledger's head after that round (`ledger_head`: the SHA-256 of the round's
line, `ledger_lines`: the line count), and `verify_run` holds the ledger to every checkpoint: a truncated
ledger, or a rewritten one, no longer matches the head the checkpoint recorded when the round was aggregated.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from data_prep.errors import InputError

GENESIS = "0" * 64
LEDGER_NAME = "ledger.jsonl"


class LedgerError(InputError):
    """The ledger's chain is broken or a line is malformed: the message names the line."""


@dataclass(frozen=True)
class LedgerEntry:
    round: int
    time: str
    plan_hash: str
    node_ids: list[int]
    examples: list[int]
    losses: list[float]
    trunk_sha256: str
    prev_sha256: str
    #: Replies left out of this round, with the reason (node id: why); omitted from the line when none.
    refused: list[str] = field(default_factory=list)
    #: Differential privacy: cumulative ε at the plan's δ after this round; omitted when DP is off.
    dp_epsilon: float | None = None

    def to_line(self) -> bytes:
        fields = {k: v for k, v in self.__dict__.items()
                  if not (k == "refused" and not v) and not (k == "dp_epsilon" and v is None)}
        return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


def line_sha256(line: bytes) -> str:
    return hashlib.sha256(line.rstrip(b"\n")).hexdigest()


class Ledger:
    """Appends chained lines to `path`; each append is flushed and fsynced before the round counts."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def entries(self) -> list[LedgerEntry]:
        return verify(self.path) if self.path.exists() else []

    def last_round(self) -> int:
        entries = self.entries()
        return entries[-1].round if entries else 0

    def append(self, *, round: int, plan_hash: str, node_ids: list[int], examples: list[int],
               losses: list[float], trunk_sha256: str, refused: list[str] | None = None,
               dp_epsilon: float | None = None) -> LedgerEntry:
        entry = self.next_entry(round=round, plan_hash=plan_hash, node_ids=node_ids, examples=examples,
                                losses=losses, trunk_sha256=trunk_sha256, refused=refused, dp_epsilon=dp_epsilon)
        return self.write(entry)

    def next_entry(self, *, round: int, plan_hash: str, node_ids: list[int], examples: list[int],
                   losses: list[float], trunk_sha256: str, refused: list[str] | None = None,
                   dp_epsilon: float | None = None) -> LedgerEntry:
        """The line `append` would write, not yet written: its hash goes into the round's checkpoint first."""
        entries = self.entries()  # verifies the chain before extending it
        if entries and round != entries[-1].round + 1:
            raise LedgerError(f"{self.path}: round {round} does not follow the last recorded round "
                              f"{entries[-1].round}")
        prev = line_sha256(_lines(self.path)[-1]) if entries else GENESIS
        entry = LedgerEntry(
            round=int(round), time=datetime.now(UTC).isoformat(timespec="seconds"), plan_hash=plan_hash,
            node_ids=[int(n) for n in node_ids], examples=[int(e) for e in examples],
            losses=[float(x) for x in losses], trunk_sha256=trunk_sha256, prev_sha256=prev,
            refused=[str(r) for r in refused or []],
            dp_epsilon=None if dp_epsilon is None else _finite_epsilon(dp_epsilon),
        )
        return entry

    def write(self, entry: LedgerEntry) -> LedgerEntry:
        """Append a line made by `next_entry`, if it still extends the ledger; flushed and fsynced."""
        entries = self.entries()
        prev = line_sha256(_lines(self.path)[-1]) if entries else GENESIS
        if entry.prev_sha256 != prev:
            raise LedgerError(f"{self.path}: the ledger changed while round {entry.round} was being recorded")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab") as fh:
            fh.write(entry.to_line() + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        return entry


def _finite_epsilon(value: float) -> float:
    """ε as a JSON number; an infinite ε (no noise) would not be valid JSON, so it is refused here."""
    value = float(value)
    if not value < float("inf"):
        raise LedgerError(f"ε = {value} cannot be recorded; a DP plan needs federation.dp_noise_multiplier > 0")
    return value


def _lines(path: Path) -> list[bytes]:
    return [line for line in path.read_bytes().split(b"\n") if line.strip()]


def verify(path: str | Path) -> list[LedgerEntry]:
    """Check every line parses, rounds count up by one and each line chains to the previous one.

    Returns the entries; raises LedgerError naming the first line that fails.
    """
    return [entry for entry, _ in _verify_lines(Path(path))]


def verify_run(run_dir: str | Path) -> list[LedgerEntry]:
    """`verify` the run's ledger, then hold it to the ledger head every checkpoint recorded.

    Catches what a chain cannot: a removed last line (a checkpoint recorded a round the ledger no longer
    has) and an edited line with every later hash recomputed (the lines no longer hash to the recorded
    heads). Checkpoints written before heads were recorded are skipped. What this run directory still
    cannot prove against someone who rewrites checkpoints too: only a copy of a head kept elsewhere can.
    """
    from consortium.checkpoints import checkpoint_metadata, list_checkpoints

    run_dir = Path(run_dir)
    path = run_dir / LEDGER_NAME
    checked = _verify_lines(path) if path.exists() else []
    heads = {entry.round: (i, entry, sha) for i, (entry, sha) in enumerate(checked, start=1)}
    last = checked[-1][0].round if checked else 0
    for rnd, ckpt in list_checkpoints(run_dir).items():
        meta = checkpoint_metadata(ckpt)
        head = meta.get("ledger_head")
        if not head:
            continue
        if rnd not in heads:
            raise LedgerError(
                f"{path} ends at round {last} but checkpoint {ckpt.name} recorded ledger line "
                f"{meta.get('ledger_lines', '?')} for round {rnd}: ledger lines were removed (if the server was "
                f"killed while recording round {rnd}, delete {ckpt} and resume)")
        i, entry, sha = heads[rnd]
        if sha != head or meta.get("ledger_lines", str(i)) != str(i):
            raise LedgerError(f"{path} line {i} (round {rnd}) is not the line checkpoint {ckpt.name} recorded: "
                              "the ledger was rewritten (recomputing the chain does not hide that)")
        if meta.get("trunk_sha256") != entry.trunk_sha256:
            raise LedgerError(f"{path} line {i} (round {rnd}) records another trunk than checkpoint {ckpt.name}")
    return [entry for entry, _ in checked]


def _verify_lines(path: Path) -> list[tuple[LedgerEntry, str]]:
    if not path.is_file():
        raise LedgerError(f"ledger {path} not found")
    prev = GENESIS
    entries: list[LedgerEntry] = []
    out: list[tuple[LedgerEntry, str]] = []
    for i, line in enumerate(_lines(path), start=1):
        try:
            raw: dict[str, Any] = json.loads(line)
            entry = LedgerEntry(**raw)
        except (ValueError, TypeError) as exc:
            raise LedgerError(f"{path} line {i}: not a ledger entry ({exc})") from None
        if entry.prev_sha256 != prev:
            raise LedgerError(
                f"{path} line {i} (round {entry.round}): previous-line hash does not match; "
                f"line {i - 1 if i > 1 else 'genesis'} was edited, removed or reordered"
            )
        if entry.to_line() != line.rstrip(b"\r"):
            # Same content, other formatting: still an edit of the recorded bytes.
            raise LedgerError(f"{path} line {i} (round {entry.round}): line was rewritten")
        expected_round = entries[-1].round + 1 if entries else entry.round
        if entry.round != expected_round:
            raise LedgerError(f"{path} line {i}: round {entry.round} where {expected_round} was expected")
        entries.append(entry)
        prev = line_sha256(line)
        out.append((entry, prev))
    return out
