"""Aggregated trunks per round (`checkpoints/round-NNN.safetensors`) and resuming from them.

Checkpoints are safetensors (never pickle), written atomically, with the plan hash and round in the
metadata so a checkpoint of another plan is refused instead of silently loaded.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from consortium.plan import Plan, trunk_shapes
from consortium.trunk import trunk_sha256
from data_prep.atomic import write_atomic
from data_prep.errors import InputError

CHECKPOINT_DIR = "checkpoints"
_PATTERN = re.compile(r"^round-(\d{3,})\.safetensors$")


def checkpoint_path(run_dir: str | Path, round: int) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f"round-{int(round):03d}.safetensors"


def save_checkpoint(run_dir: str | Path, round: int, trunk: dict[str, np.ndarray], plan: Plan, *,
                    ledger_head: str | None = None, ledger_lines: int | None = None,
                    sha256: str | None = None) -> Path:
    """`ledger_head`/`ledger_lines`: the ledger's last line hash and line count once this round is recorded
    (`consortium.ledger.verify_run` holds the ledger to them, so a truncated or rewritten ledger shows).
    `sha256`: the trunk's `trunk_sha256` when the caller has it already (a 64 M trunk is not hashed twice)."""
    path = checkpoint_path(run_dir, round)
    tensors = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in trunk.items()}
    meta = {"round": str(int(round)), "plan_hash": plan.hash, "trunk_sha256": sha256 or trunk_sha256(tensors)}
    if ledger_head is not None:
        meta |= {"ledger_head": ledger_head, "ledger_lines": str(int(ledger_lines or 0))}
    return write_atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def load_checkpoint(path: str | Path, plan: Plan) -> dict[str, np.ndarray]:
    """Read a checkpoint, checking it belongs to this plan and holds exactly the plan's trunk arrays."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint {path} not found")
    with safe_open(str(path), framework="numpy") as fh:
        meta = fh.metadata() or {}
        trunk = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (safe_open is not a dict)
    if meta.get("plan_hash") != plan.hash:
        raise InputError(f"checkpoint {path} was written under another plan (hash {meta.get('plan_hash', '?')[:12]}…,"
                         f" this plan {plan.hash[:12]}…); use the run's own plan or a new --out")
    expected = trunk_shapes(plan)
    shapes = {k: tuple(v.shape) for k, v in trunk.items()}
    if shapes != expected:
        raise InputError(f"checkpoint {path} holds arrays {shapes}, the plan's trunk is {expected}")
    return trunk


def checkpoint_metadata(path: str | Path) -> dict[str, str]:
    """The checkpoint's metadata only (safetensors reads the header, not the arrays)."""
    try:
        with safe_open(str(path), framework="numpy") as fh:
            return dict(fh.metadata() or {})
    except Exception as exc:  # safetensors raises its own error types for a damaged header
        raise InputError(f"checkpoint {path} cannot be read ({exc}); it was damaged or is not a checkpoint") from None


def list_checkpoints(run_dir: str | Path) -> dict[int, Path]:
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return {}
    found = {}
    for p in folder.iterdir():
        m = _PATTERN.match(p.name)
        if m:
            found[int(m.group(1))] = p
    return dict(sorted(found.items()))
