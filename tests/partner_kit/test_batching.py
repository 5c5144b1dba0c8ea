"""CSR batch slicing: label masks from the sparsity pattern, batch order from the seed, coverage of rows."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from pk_helpers import make_tasks, small_plan, synthetic_data

from data_prep.prepared import PreparedData
from partner_kit.batching import CsrBatcher, batch_size_for, epoch_batches, step_batches


def test_batch_masks_follow_the_stored_pattern_so_a_zero_regression_value_is_known():
    y_regr = sp.csr_matrix((np.array([0.0, 5.0], np.float32), (np.array([0, 1]), np.array([0, 0]))), shape=(3, 1))
    data = PreparedData(
        x=sp.csr_matrix(np.eye(3, 64, dtype=np.float32)), folds=np.zeros(3, np.int8),
        y_class=sp.csr_matrix(np.array([[1.0], [0.0], [-1.0]], np.float32)), y_regr=y_regr,
        y_censor=sp.csr_matrix((np.array([1], np.int8), (np.array([1]), np.array([0]))), shape=(3, 1)),
        tasks=make_tasks(1, 1))
    b = CsrBatcher(data).batch(np.array([0, 1, 2]))
    assert b.regr_mask[:, 0].tolist() == [True, True, False]
    assert b.class_mask[:, 0].tolist() == [True, False, True]
    assert b.y_class[:, 0].tolist() == [1.0, 0.0, -1.0]
    assert b.censor[:, 0].tolist() == [0, 1, 0]


def test_batch_inputs_reproduce_the_csr_rows():
    plan = small_plan()
    data = synthetic_data(plan)
    rows = np.array([5, 2, 17, 2])
    x = CsrBatcher(data).inputs(rows)
    dense = torch.zeros(len(rows), plan.n_features)
    row_of = np.repeat(np.arange(len(rows)), np.diff(np.r_[x.offsets.numpy(), x.indices.numel()]))
    dense[row_of, x.indices] = x.values
    np.testing.assert_array_equal(dense.numpy(), data.x[rows].toarray())
    assert torch.equal(x.cols[x.local_indices], x.indices)


def test_epoch_covers_every_row_once_and_order_depends_only_on_the_seed():
    rows = np.arange(10, 47)
    a = list(epoch_batches(rows, 8, np.random.default_rng(3)))
    b = list(epoch_batches(rows, 8, np.random.default_rng(3)))
    c = list(epoch_batches(rows, 8, np.random.default_rng(4)))
    assert [len(x) for x in a] == [8, 8, 8, 8, 5]
    assert sorted(np.concatenate(a).tolist()) == rows.tolist()
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_steps_walk_through_shuffles_so_rows_are_seen_evenly():
    rows = np.arange(20)
    seen = np.concatenate(list(step_batches(rows, 6, 10, np.random.default_rng(0))))
    counts = np.bincount(seen, minlength=20)
    assert len(seen) == 60 and counts.min() >= 2 and counts.max() <= 4


def test_batch_size_is_a_clipped_fraction_of_training_rows():
    assert batch_size_for(5000, 0.02, 32, 4096) == 100
    assert batch_size_for(300, 0.02, 32, 4096) == 32
    assert batch_size_for(10**6, 0.02, 32, 4096) == 4096
