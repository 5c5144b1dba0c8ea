"""The sparse input layer (fingerprint -> first hidden layer) and the lazy row-wise Adam that trains it.

SparseChem multiplies a sparse COO batch with the dense 32000 x hidden weight, so every step computes a dense
gradient for the whole matrix and Adam updates all of it. A batch of ~100 compounds only touches the ~2,500
feature rows present in it, so here a training step gathers just those rows as a small dense block, runs an
`embedding_bag` (sum of the rows each compound has, weighted by its values) over the block, and hands autograd
a *sparse* gradient holding only the gathered rows. `LazyAdam` then updates those rows alone, with per-row
moment state and per-row step counts (exact Adam for each row over the steps it was present in).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from partner_kit.batching import SparseBatch


class _SparseRowsLinear(torch.autograd.Function):
    """X @ W for a sparse batch X whose backward yields a sparse gradient over the batch's unique rows of W.

    Forward sums the rows of the full table (`embedding_bag`, nothing copied); backward computes
    X_local^T @ grad_out (n_unique x out, a small sparse-dense product) and returns it as a coalesced
    sparse COO gradient, so no dense n_features x out gradient is ever formed.
    """

    @staticmethod
    def forward(ctx, weight: torch.Tensor, batch: SparseBatch,  # type: ignore[override]
                values: torch.Tensor) -> torch.Tensor:
        ctx.weight_shape = weight.shape
        ctx.batch, ctx.values = batch, values
        return F.embedding_bag(batch.indices, weight, batch.offsets, mode="sum", per_sample_weights=values)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # type: ignore[override]
        batch: SparseBatch = ctx.batch
        xt = batch.local_transpose(ctx.values)
        block = torch.from_numpy(np.asarray(xt @ grad_out.contiguous().numpy(), dtype=np.float32))
        sparse = torch.sparse_coo_tensor(
            batch.cols.unsqueeze(0), block, ctx.weight_shape, is_coalesced=True, check_invariants=False
        )
        return sparse, None, None


class SparseInput(nn.Module):
    """Linear layer over sparse fingerprint rows; `weight` is feature-major (n_features x out), like an embedding.

    With gradients enabled the weight receives a sparse COO gradient over the batch's unique feature rows only;
    without them (evaluation, frozen trunk) the batch is summed straight from the full table, nothing copied.
    """

    def __init__(self, n_features: int, out_features: int, input_dropout: float = 0.0) -> None:
        super().__init__()
        self.n_features = n_features
        self.out_features = out_features
        self.input_dropout = input_dropout
        self.weight = nn.Parameter(torch.empty(n_features, out_features))
        self.bias = nn.Parameter(torch.empty(out_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # nn.Linear's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in = n_features.
        bound = 1.0 / math.sqrt(self.n_features)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, batch: SparseBatch) -> torch.Tensor:
        values = batch.values
        if self.training and self.input_dropout > 0:
            values = F.dropout(values, self.input_dropout, training=True)
        if self.weight.requires_grad and torch.is_grad_enabled():
            out = _SparseRowsLinear.apply(self.weight, batch, values)
        else:
            out = F.embedding_bag(batch.indices, self.weight, batch.offsets, mode="sum",
                                  per_sample_weights=values)
        return out + self.bias

    def extra_repr(self) -> str:
        return f"n_features={self.n_features}, out_features={self.out_features}"


class LazyAdam(torch.optim.Optimizer):
    """Adam for parameters with sparse row gradients: only the rows present in a step are touched.

    Each row keeps its own first/second moments and its own step count, so a row's update is exactly what
    dense Adam would give a parameter that only ever saw the steps in which that row occurred (rows absent
    from a batch keep their moments instead of decaying them, as in TensorFlow's LazyAdam). `weight_decay`
    is L2 added to the gradient of the rows present. Dense gradients are accepted too (all rows present).
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})

    def _workspace(self, name: str, like: torch.Tensor, n: int) -> torch.Tensor:
        """A reusable (n, ...) scratch buffer: fresh 10-40 MB allocations per step cost more than the arithmetic."""
        workspace: dict[str, torch.Tensor] = self.__dict__.setdefault("_workspace_buffers", {})
        buf = workspace.get(name)
        if buf is None or buf.shape[0] < n or buf.shape[1:] != like.shape[1:] or buf.dtype != like.dtype:
            buf = torch.empty((max(n, 1), *like.shape[1:]), dtype=like.dtype)
            workspace[name] = buf
        return buf[:n]

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                    state["row_step"] = torch.zeros(p.shape[0], dtype=torch.int64)
                rows, g = _rows_and_values(p.grad)
                if wd:
                    g = g.add(p.index_select(0, rows), alpha=wd)
                m = torch.index_select(state["exp_avg"], 0, rows, out=self._workspace("m", p, rows.numel()))
                v = torch.index_select(state["exp_avg_sq"], 0, rows, out=self._workspace("v", p, rows.numel()))
                m.mul_(beta1).add_(g, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                t = state["row_step"].index_select(0, rows).add_(1)
                state["exp_avg"].index_copy_(0, rows, m)
                state["exp_avg_sq"].index_copy_(0, rows, v)
                state["row_step"].index_copy_(0, rows, t)
                tf = t.to(g.dtype).view(-1, *([1] * (g.dim() - 1)))
                # step = lr / (1 - b1^t) * m / (sqrt(v / (1 - b2^t)) + eps), per row.
                step_size = (1 - torch.pow(beta1, tf)).reciprocal_().mul_(-lr)
                denom = v.mul_((1 - torch.pow(beta2, tf)).reciprocal_()).sqrt_().add_(eps)
                p.index_add_(0, rows, m.div_(denom).mul_(step_size))
        return loss


def _rows_and_values(grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row ids and row gradients of a sparse row gradient (or all rows of a dense one)."""
    if not grad.is_sparse:
        return torch.arange(grad.shape[0]), grad
    rows = grad._indices()[0]
    # Autograd may drop the coalesced flag; rows from one backward are unique, so check before paying
    # for a full coalesce (which sorts and copies the values).
    if not grad.is_coalesced() and torch.unique(rows).numel() != rows.numel():
        grad = grad.coalesce()
        rows = grad._indices()[0]
    return rows, grad._values()
