"""Adam on the server (`federation.server_optimizer = "adam"`): the trunk's optimizer lives with the average.

Plain FedAvg averages the partners' own Adam steps. Each step is the partner's momentum divided by its *own*
second moment, so the federation settles where the partners' preconditioned gradients cancel
(Σ_k w_k m_k / √v_k = 0), not where their gradients do (Σ_k w_k g_k = 0, the pooled model's optimum); with
partners whose fingerprint bits and gradient scales differ, the two points differ. With this option each
partner takes one plain gradient step per round (`trunk − g`, no momentum, no weight decay: see
`LocalTrainer(trunk_step="gradient")`), the server reads the example-weighted mean gradient off the average
(`sent − mean`) and applies one Adam step with the plan's learning rate, betas and weight decay: the same update
a pooled model takes on the union of the partners' batches (MELLODDY's per-step schedule). Input rows no
partner touched this round are left alone, as `partner_kit.sparse_input.LazyAdam` leaves them in a pooled step.

The moments are server state built from averages only (nothing a partner sends beyond its trunk); they are
checkpointed beside each round's trunk (`round-NNN.server-adam.safetensors`) so a resumed run continues exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from consortium.plan import Plan, trunk_shapes
from data_prep.atomic import write_atomic
from data_prep.errors import InputError

#: The array whose rows are updated lazily (the sparse fingerprint input's embedding table).
LAZY_ARRAY = "input.weight"
BETAS = (0.9, 0.999)  # torch.optim.Adam's and LazyAdam's defaults, as the partners' and pooled trainers use
EPS = 1e-8
#: Rows per block of the lazy update (bounds the float32 temporaries to a few MiB at 2,000 hidden units).
ROW_BLOCK = 2048


def state_path(checkpoint: str | Path) -> Path:
    """`round-NNN.safetensors` -> `round-NNN.server-adam.safetensors` (same folder)."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.name.removesuffix(".safetensors") + ".server-adam.safetensors")


class ServerAdam:
    """Adam over the trunk's arrays (in trunk order), fed the mean gradient `sent − averaged` each round."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.shapes = trunk_shapes(plan)
        self.lr = float(plan.training.learning_rate)
        self.weight_decay = float(plan.training.weight_decay)
        self.exp_avg = {n: np.zeros(s, np.float32) for n, s in self.shapes.items()}
        self.exp_avg_sq = {n: np.zeros(s, np.float32) for n, s in self.shapes.items()}
        rows = self.shapes[LAZY_ARRAY][0]
        self.row_step = np.zeros(rows, np.int64)  # per-row step counts of the lazy array
        self.step_count = 0  # steps of every dense array

    # -- the step ---------------------------------------------------------------------------------------------
    def step(self, sent: list[np.ndarray], averaged: list[np.ndarray]) -> None:
        """In place: `averaged` (the partners' mean trunk after one gradient step each) becomes the new trunk."""
        self.step_count += 1
        for name, s, a in zip(self.shapes, sent, averaged, strict=True):
            s32 = np.asarray(s, dtype=np.float32)
            if name == LAZY_ARRAY:
                self._lazy_step(s32, a)
            else:
                grad = s32 - a
                a[...] = _adam(s32, grad, self.exp_avg[name], self.exp_avg_sq[name], self.step_count, self.lr,
                               self.weight_decay)

    def _lazy_step(self, sent: np.ndarray, averaged: np.ndarray) -> None:
        m, v = self.exp_avg[LAZY_ARRAY], self.exp_avg_sq[LAZY_ARRAY]
        for start in range(0, sent.shape[0], ROW_BLOCK):
            stop = min(start + ROW_BLOCK, sent.shape[0])
            grad = sent[start:stop] - averaged[start:stop]
            present = np.flatnonzero(grad.any(axis=1))
            if present.size == 0:
                continue
            rows = present + start
            self.row_step[rows] += 1
            averaged[rows] = _adam(sent[rows], grad[present], m, v, self.row_step[rows], self.lr, self.weight_decay,
                                   rows=rows)
            absent = np.setdiff1d(np.arange(start, stop), rows, assume_unique=True)
            averaged[absent] = sent[absent]  # bit-exact: a row no partner moved stays as sent

    # -- state ------------------------------------------------------------------------------------------------
    def state(self) -> dict[str, np.ndarray]:
        out = {f"exp_avg.{n}": a for n, a in self.exp_avg.items()}
        out |= {f"exp_avg_sq.{n}": a for n, a in self.exp_avg_sq.items()}
        return out | {"row_step": self.row_step, "step": np.array([self.step_count], np.int64)}

    def save(self, path: str | Path, round: int) -> Path:
        meta = {"round": str(int(round)), "plan_hash": self.plan.hash}
        return write_atomic(Path(path), lambda tmp: save_file(self.state(), str(tmp), metadata=meta))

    def load(self, path: str | Path, round: int) -> None:
        """Restore the state saved after `round`, refusing another plan's or round's state."""
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path} not found: the run uses federation.server_optimizer = \"adam\", whose moments "
                             "are saved beside each checkpoint; without them the run cannot resume exactly. "
                             "Restore the file or start a new run with a new --out")
        with safe_open(str(path), framework="numpy") as fh:
            meta = fh.metadata() or {}
            saved = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (safe_open is not a dict)
        if meta.get("plan_hash") != self.plan.hash or meta.get("round") != str(int(round)):
            raise InputError(f"{path} belongs to round {meta.get('round')} of plan "
                             f"{meta.get('plan_hash', '?')[:12]}…, not round {round} of this plan")
        expected = {k: v.shape for k, v in self.state().items()}
        if {k: v.shape for k, v in saved.items()} != expected:
            raise InputError(f"{path} does not hold this plan's server optimizer state")
        for n in self.shapes:
            self.exp_avg[n], self.exp_avg_sq[n] = saved[f"exp_avg.{n}"], saved[f"exp_avg_sq.{n}"]
        self.row_step, self.step_count = saved["row_step"].astype(np.int64), int(saved["step"][0])


def _adam(param: np.ndarray, grad: np.ndarray, m: np.ndarray, v: np.ndarray, step: int | np.ndarray, lr: float,
          weight_decay: float, rows: np.ndarray | None = None) -> np.ndarray:
    """torch.optim.Adam's update (L2 weight decay on the gradient), float32; `rows`: update m, v at those rows."""
    beta1, beta2 = BETAS
    if weight_decay:
        grad = grad + np.float32(weight_decay) * param
    m_rows = m[rows] if rows is not None else m
    v_rows = v[rows] if rows is not None else v
    m_new = np.float32(beta1) * m_rows + np.float32(1 - beta1) * grad
    v_new = np.float32(beta2) * v_rows + np.float32(1 - beta2) * grad * grad
    if rows is not None:
        m[rows], v[rows] = m_new, v_new
        steps = np.asarray(step, np.float64)[:, None]
    else:
        m[...], v[...] = m_new, v_new
        steps = np.float64(step)
    bias1 = (1 - beta1 ** steps).astype(np.float32)
    bias2_sqrt = np.sqrt(1 - beta2 ** steps).astype(np.float32)
    denom = np.sqrt(v_new) / bias2_sqrt + np.float32(EPS)
    return param - (np.float32(lr) / bias1) * m_new / denom
