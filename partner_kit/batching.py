"""Mini-batches sliced from CSR matrices with vectorised scipy/numpy operations (no per-row Python).

A batch carries the fingerprint rows in `embedding_bag` form (flat column indices, row offsets, values), the
batch's unique columns with indices remapped onto them (for the gathered-rows training path), and dense label
blocks with masks of the *known* entries (taken from the sparsity pattern, so a stored 0.0 regression value is
still a known value).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from data_prep.prepared import PreparedData


@dataclass
class SparseBatch:
    """Fingerprint rows of one batch: `embedding_bag(indices, W, offsets, per_sample_weights=values)` == X @ W."""

    indices: torch.Tensor        # int64 (nnz,) global column indices
    offsets: torch.Tensor        # int64 (n_rows,) start of each row in `indices`
    values: torch.Tensor         # float32 (nnz,)
    cols: torch.Tensor           # int64 (n_unique,) sorted unique columns present in the batch
    local_indices: torch.Tensor  # int64 (nnz,) positions of `indices` within `cols`
    indptr: np.ndarray           # int64 (n_rows + 1,) CSR row pointer
    n_rows: int

    def local_transpose(self, values: torch.Tensor | None = None) -> sp.csc_matrix:
        """X_local^T (n_unique x n_rows): maps a gradient w.r.t. the batch output onto the present rows of W."""
        data = (self.values if values is None else values).detach().numpy()
        local = sp.csr_matrix((data, self.local_indices.numpy(), self.indptr),
                              shape=(self.n_rows, int(self.cols.numel())))
        return local.T

    def local_transpose_torch(self, values: torch.Tensor | None = None) -> torch.Tensor:
        """X_local^T as a torch sparse COO tensor on the batch's device (the device-generic backward)."""
        data = self.values if values is None else values
        counts = torch.from_numpy(np.diff(self.indptr)).to(data.device)
        row_ids = torch.repeat_interleave(torch.arange(self.n_rows, device=data.device), counts)
        return torch.sparse_coo_tensor(torch.stack([self.local_indices, row_ids]), data,
                                       (int(self.cols.numel()), self.n_rows), check_invariants=False)

    def to(self, device: torch.device) -> SparseBatch:
        """This batch with its tensors on `device` (itself when already there: the CPU path copies nothing)."""
        if self.indices.device == device:
            return self
        return SparseBatch(indices=self.indices.to(device), offsets=self.offsets.to(device),
                           values=self.values.to(device), cols=self.cols.to(device),
                           local_indices=self.local_indices.to(device), indptr=self.indptr, n_rows=self.n_rows)

    @classmethod
    def from_csr(cls, x: sp.csr_matrix) -> SparseBatch:
        indices = x.indices.astype(np.int64, copy=False)
        cols, local = np.unique(indices, return_inverse=True)
        return cls(
            indices=torch.from_numpy(indices),
            offsets=torch.from_numpy(x.indptr[:-1].astype(np.int64)),
            values=torch.from_numpy(x.data.astype(np.float32, copy=False)),
            cols=torch.from_numpy(cols),
            local_indices=torch.from_numpy(local.reshape(-1).astype(np.int64, copy=False)),
            indptr=x.indptr.astype(np.int64),
            n_rows=x.shape[0],
        )


@dataclass
class Batch:
    """One mini-batch: inputs plus dense label blocks (zeros where unknown) and their known-entry masks."""

    x: SparseBatch
    y_class: torch.Tensor        # float32 (n, n_class) in {-1, 0, +1}
    class_mask: torch.Tensor     # bool (n, n_class)
    y_regr: torch.Tensor         # float32 (n, n_regr)
    regr_mask: torch.Tensor      # bool (n, n_regr)
    censor: torch.Tensor         # int8 (n, n_regr): -1 '<', 0 '=', +1 '>'
    rows: np.ndarray             # row numbers in the prepared matrices

    @property
    def size(self) -> int:
        return self.x.n_rows

    def to(self, device: torch.device) -> Batch:
        """This batch with inputs, labels and masks on `device` (itself when already there)."""
        if self.y_class.device == device:
            return self
        return Batch(x=self.x.to(device), y_class=self.y_class.to(device), class_mask=self.class_mask.to(device),
                     y_regr=self.y_regr.to(device), regr_mask=self.regr_mask.to(device),
                     censor=self.censor.to(device), rows=self.rows)


def _dense_and_mask(m: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    m = sp.csr_matrix(m)
    pattern = sp.csr_matrix((np.ones(m.nnz, dtype=bool), m.indices, m.indptr), shape=m.shape)
    return m.toarray(), pattern.toarray()


class CsrBatcher:
    """Slices batches of given rows out of a partner's prepared matrices."""

    def __init__(self, data: PreparedData) -> None:
        self.x = sp.csr_matrix(data.x, dtype=np.float32)
        self.x.sort_indices()
        self.y_class = sp.csr_matrix(data.y_class, dtype=np.float32)
        self.y_regr = sp.csr_matrix(data.y_regr, dtype=np.float32)
        # Dense censor flags of a slice are right whatever y_censor's stored pattern: absent reads as 0 ('=').
        self.y_censor = sp.csr_matrix(data.y_censor, dtype=np.int8)

    def batch(self, rows: np.ndarray) -> Batch:
        rows = np.asarray(rows, dtype=np.int64)
        yc, cm = _dense_and_mask(self.y_class[rows])
        yr, rm = _dense_and_mask(self.y_regr[rows])
        cens = self.y_censor[rows].toarray().astype(np.int8)
        return Batch(
            x=SparseBatch.from_csr(self.x[rows]),
            y_class=torch.from_numpy(yc.astype(np.float32)),
            class_mask=torch.from_numpy(cm),
            y_regr=torch.from_numpy(yr.astype(np.float32)),
            regr_mask=torch.from_numpy(rm),
            censor=torch.from_numpy(cens),
            rows=rows,
        )

    def inputs(self, rows: np.ndarray) -> SparseBatch:
        return SparseBatch.from_csr(self.x[np.asarray(rows, dtype=np.int64)])


def batch_size_for(n_train: int, fraction: float, min_size: int, max_size: int) -> int:
    """SparseChem-style batch size: a fraction of the training rows, clipped to [min_size, max_size]."""
    return int(np.clip(round(fraction * n_train), min_size, max_size))


def epoch_batches(rows: np.ndarray, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """One shuffled pass over `rows` in batches of `batch_size` (the last one may be smaller)."""
    perm = rows[rng.permutation(len(rows))]
    for start in range(0, len(perm), batch_size):
        yield perm[start:start + batch_size]


def step_batches(rows: np.ndarray, batch_size: int, n_steps: int,
                 rng: np.random.Generator) -> Iterator[np.ndarray]:
    """`n_steps` full batches walking through successive shuffles of `rows`, so every row is seen evenly."""
    batch_size = min(batch_size, len(rows))
    perm = rows[rng.permutation(len(rows))]
    pos = 0
    for _ in range(n_steps):
        if pos + batch_size > len(perm):
            perm = np.concatenate([perm[pos:], rows[rng.permutation(len(rows))]])
            pos = 0
        yield perm[pos:pos + batch_size]
        pos += batch_size


def stream_batches(rows: np.ndarray, batch_size: int, first_step: int, n_steps: int,
                   seed: int) -> Iterator[np.ndarray]:
    """Steps `first_step` .. `first_step + n_steps - 1` of one endless stream of epochs over `rows`.

    Epoch e is the permutation drawn from (seed, e), cut into full batches (the few rows past the last full batch
    wait for the next shuffle). A pure function of the step index: a federated partner that trains a few steps
    per round still sees every row once per epoch, as the single-partner and pooled models do (random
    reshuffling, not a fresh draw each round), and a resumed run draws the same batches.
    """
    batch_size = min(batch_size, len(rows))
    per_epoch = max(len(rows) // batch_size, 1)
    epoch, perm = -1, rows
    for step in range(first_step, first_step + n_steps):
        e, b = divmod(step, per_epoch)
        if e != epoch:
            epoch, perm = e, rows[np.random.default_rng([int(seed), e]).permutation(len(rows))]
        yield perm[b * batch_size:(b + 1) * batch_size]
