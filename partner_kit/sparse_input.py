"""The sparse input layer (fingerprint -> first hidden layer) and the lazy row-wise Adam that trains it.

SparseChem multiplies a sparse COO batch with the dense 32000 x hidden weight, so every step computes a dense
gradient for the whole matrix and Adam updates all of it. A batch of ~100 compounds only touches the ~2,500
feature rows present in it, so here the forward pass is one `embedding_bag` over the table (the sum of the
rows each compound has, weighted by its values; nothing copied) and the backward pass computes
X_local^T @ grad_out for just the present rows and hands autograd a *sparse* gradient holding only those.
`LazyAdam` then updates those rows alone, with per-row moment state and per-row step counts (optionally
adding, in closed form, the momentum updates dense Adam would have applied while a row was absent). On the CPU
that update is fused: torch's one-pass Adam kernel runs on views of the present rows themselves, so the
moments and weights are read and written once, in place, with no gathered copies.
"""

from __future__ import annotations

import contextlib
import gc
import math
import operator
from collections.abc import Iterator

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
                values: torch.Tensor, native: bool = False) -> torch.Tensor:
        ctx.weight_shape = weight.shape
        ctx.batch, ctx.values, ctx.native = batch, values, native
        return F.embedding_bag(batch.indices, weight, batch.offsets, mode="sum", per_sample_weights=values)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:  # type: ignore[override]
        batch: SparseBatch = ctx.batch
        if ctx.native:
            # Device-generic (GPU) path: the same X_local^T @ grad_out with torch's own sparse product.
            block = torch.sparse.mm(batch.local_transpose_torch(ctx.values.detach()), grad_out.contiguous())
        else:
            # CSR (one output row at a time, accumulated in cache) is ~1.6x faster here than the CSC transpose.
            xt = batch.local_transpose(ctx.values).tocsr()
            block = torch.from_numpy(np.asarray(xt @ grad_out.contiguous().numpy(), dtype=np.float32))
        sparse = torch.sparse_coo_tensor(
            batch.cols.unsqueeze(0), block, ctx.weight_shape, is_coalesced=True, check_invariants=False
        )
        return sparse, None, None, None


class SparseInput(nn.Module):
    """Linear layer over sparse fingerprint rows; `weight` is feature-major (n_features x out), like an embedding.

    With gradients enabled the weight receives a sparse COO gradient over the batch's unique feature rows only;
    without them (evaluation, frozen trunk) the batch is summed straight from the full table, nothing copied.
    `native` (set by the trainer: any non-CPU device) computes that gradient with torch-native sparse ops on
    the weight's device instead of scipy on the CPU.
    """

    def __init__(self, n_features: int, out_features: int, input_dropout: float = 0.0) -> None:
        super().__init__()
        self.n_features = n_features
        self.out_features = out_features
        self.input_dropout = input_dropout
        self.native = False
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
            native = self.native or self.weight.device.type != "cpu"
            out = _SparseRowsLinear.apply(self.weight, batch, values, native)
        else:
            out = F.embedding_bag(batch.indices, self.weight, batch.offsets, mode="sum",
                                  per_sample_weights=values)
        return out + self.bias

    def extra_repr(self) -> str:
        return f"n_features={self.n_features}, out_features={self.out_features}"


class LazyAdam(torch.optim.Optimizer):
    """Adam for parameters with sparse row gradients: only the rows present in a step are touched.

    Dense Adam keeps moving a row whose gradient is zero (its decaying momentum m/sqrt(v) is still applied
    every step), which for rare fingerprint bits adds up to ~10x the row's last step. Two modes:

    * `catch_up=False` (default): exact per-row Adam over the steps a row was present in (per-row step counts;
      absent rows keep their moments, as TensorFlow's LazyAdam). Rare bits move less than under dense Adam;
      on Tox21 this generalised better (mean test AUC-ROC on scaffold fold 0: 0.789 vs 0.759 with catch-up).
    * `catch_up=True` (dense-Adam equivalent up to a documented approximation): each row records the
      global step it was last updated at; when it reappears after k skipped steps, it first receives the k
      updates dense Adam would have made meanwhile, in closed form
      `lr * h * m / (sqrt(v) + eps) * sum_{j=1..k} (beta1 / sqrt(beta2))^j` (h = the bias-correction factor
      at the first skipped step, held constant over the gap; eps taken outside the sum), and its moments decay
      by beta1^k and beta2^k; then the ordinary Adam update with the global step's bias correction. The
      catch-up lands when the row is next present rather than during the gap, and a row never seen again
      keeps its pending tail.

    `weight_decay` is L2 added to the gradient of the rows present. Dense gradients are accepted too.

    `fused` (default: on for CPU tensors) runs the exact per-row update as torch's fused Adam kernel over views
    of the present rows (each row its own tensor with its own step count), so m, v and the weight row are read
    and written once, in place: about 2x faster than the gathered path on a batch touching 7,500 of 32,000
    rows (the per-row views it keeps cost ~0.6 kB each, ~75 MB for that table). The gathered path
    (index_select -> update the block -> index_copy_ back) serves catch-up, other devices, and `fused=False`;
    both give the same weights up to float rounding. An execution choice, not part of the saved state.
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, catch_up: bool = False,
                 fused: bool | None = None) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay,
                                  "catch_up": catch_up})
        self.fused = fused

    def load_state_dict(self, state_dict) -> None:  # type: ignore[override]
        super().load_state_dict(state_dict)
        # torch casts every non-"step" state tensor to the parameter's dtype: row counts go back to integers.
        for st in self.state.values():
            if "row_step" in st and st["row_step"].is_floating_point():
                st["row_step"] = st["row_step"].round().to(torch.int64)
        self.__dict__.pop("_row_view_cache", None)

    def _use_fused(self, group: dict, p: torch.Tensor, g: torch.Tensor) -> bool:
        if group.get("catch_up", False) or self.fused is False or not hasattr(torch, "_fused_adam_"):
            return False
        if self.fused is None and p.device.type != "cpu":
            return False
        return p.dim() == 2 and p.is_contiguous() and p.dtype in (torch.float32, torch.float64) \
            and g.dtype == p.dtype

    def _row_views(self, p: torch.Tensor, state: dict) -> tuple[tuple[torch.Tensor, ...], ...]:
        """Per-row views of the weight, both moments and the row step counts, made once per set of tensors.

        Keyed on the tensors' addresses: a loaded state or a moved parameter gets fresh views (and the old
        ones, which keep their storage alive, are dropped).
        """
        tensors = (p.detach(), state["exp_avg"], state["exp_avg_sq"], state["row_step"])
        key = tuple(t.data_ptr() for t in tensors)
        cache: dict[int, tuple] = self.__dict__.setdefault("_row_view_cache", {})
        hit = cache.get(id(p))
        if hit is None or hit[0] != key:
            hit = (key, tuple(t.unbind(0) for t in tensors))
            cache[id(p)] = hit
        return hit[1]

    def _fused_step(self, p: torch.Tensor, state: dict, rows: torch.Tensor, g: torch.Tensor, group: dict) -> None:
        """The lazy Adam update of the present rows, one pass per row over the live tensors."""
        n = rows.numel()
        if n == 0:
            return
        beta1, beta2 = group["betas"]
        for key in ("exp_avg", "exp_avg_sq"):  # the kernel walks raw rows; a loaded state may be strided
            if not state[key].is_contiguous():
                state[key] = state[key].contiguous()
        row_step = state["row_step"]
        row_step.index_add_(0, rows, torch.ones((), dtype=row_step.dtype, device=row_step.device).expand(n))
        weights, exp_avg, exp_avg_sq, steps = self._row_views(p, state)
        ids = rows.tolist()
        pick = operator.itemgetter(*ids) if n > 1 else (lambda seq: (seq[ids[0]],))
        # The gradient's row views are thousands of short-lived tensor objects: with the collector paused they
        # are created and freed without triggering collections that would walk the cached views (3x slower).
        with _gc_paused():
            grad_rows = list(g.contiguous().unbind(0))
            torch._fused_adam_(list(pick(weights)), grad_rows, list(pick(exp_avg)), list(pick(exp_avg_sq)), [],
                               list(pick(steps)), lr=float(group["lr"]), beta1=float(beta1), beta2=float(beta2),
                               weight_decay=float(group["weight_decay"]), eps=float(group["eps"]),
                               amsgrad=False, maximize=False)
            del grad_rows

    def _workspace(self, name: str, like: torch.Tensor, n: int) -> torch.Tensor:
        """A reusable (n, ...) scratch buffer: fresh 10-40 MB allocations per step cost more than the arithmetic."""
        workspace: dict[str, torch.Tensor] = self.__dict__.setdefault("_workspace_buffers", {})
        buf = workspace.get(name)
        if buf is None or buf.shape[0] < n or buf.shape[1:] != like.shape[1:] or buf.dtype != like.dtype:
            buf = torch.empty((max(n, 1), *like.shape[1:]), dtype=like.dtype, device=like.device)
            workspace[name] = buf
        return buf[:n]

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
            catch_up = group.get("catch_up", False)
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.int64, device=p.device)
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                    state["row_step"] = torch.zeros(p.shape[0], dtype=torch.int64, device=p.device)
                elif state["step"].device != p.device:  # load_state_dict leaves "step" where it was saved
                    state["step"] = state["step"].to(p.device)
                state["step"] += 1
                rows, g = _rows_and_values(p.grad)
                if self._use_fused(group, p, g):
                    self._fused_step(p, state, rows, g, group)
                    continue
                if wd:
                    g = g.add(p.index_select(0, rows), alpha=wd)
                n = rows.numel()
                shape = (-1, *([1] * (g.dim() - 1)))
                m = torch.index_select(state["exp_avg"], 0, rows, out=self._workspace("m", p, n))
                v = torch.index_select(state["exp_avg_sq"], 0, rows, out=self._workspace("v", p, n))
                last = state["row_step"].index_select(0, rows)
                catch = None
                if catch_up:
                    # row_step holds the global step of each row's last update; k = steps skipped since.
                    t = state["step"].expand(n).clone()
                    k = (t - 1 - last).to(torch.float64)
                    if bool((k > 0).any()):
                        r = beta1 / beta2 ** 0.5
                        s1 = (last + 1).to(torch.float64)
                        h = (1 - beta2 ** s1).sqrt() / (1 - beta1 ** s1)
                        coef = (lr * h * r * (1 - r ** k) / (1 - r)).to(g.dtype).view(shape)
                        catch = torch.sqrt(v, out=self._workspace("c", p, n)).add_(eps)
                        catch = torch.div(m, catch, out=catch).mul_(coef)
                        m.mul_((beta1 ** k).to(g.dtype).view(shape))
                        v.mul_((beta2 ** k).to(g.dtype).view(shape))
                else:
                    t = last + 1
                m.lerp_(g, 1 - beta1)   # = beta1 * m + (1 - beta1) * g, one pass
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                state["exp_avg"].index_copy_(0, rows, m)
                state["exp_avg_sq"].index_copy_(0, rows, v)
                state["row_step"].index_copy_(0, rows, t)
                tf = t.to(g.dtype).view(shape)
                # step = lr / (1 - b1^t) * m / (sqrt(v / (1 - b2^t)) + eps), per row.
                step_size = (1 - torch.pow(beta1, tf)).reciprocal_().mul_(lr)
                denom = v.mul_((1 - torch.pow(beta2, tf)).reciprocal_()).sqrt_().add_(eps)
                update = m.div_(denom).mul_(step_size)
                if catch is not None:
                    update.add_(catch)
                p.index_add_(0, rows, update, alpha=-1.0)
        return loss


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for a block that only makes and drops acyclic objects."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _rows_and_values(grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row ids and row gradients of a sparse row gradient (or all rows of a dense one)."""
    if not grad.is_sparse:
        return torch.arange(grad.shape[0], device=grad.device), grad
    rows = grad._indices()[0]
    # Autograd may drop the coalesced flag; rows from one backward are unique, so check before paying
    # for a full coalesce (which sorts and copies the values).
    if not grad.is_coalesced() and torch.unique(rows).numel() != rows.numel():
        grad = grad.coalesce()
        rows = grad._indices()[0]
    return rows, grad._values()
