"""Model layout, the sparse input layer against dense references, and the lazy Adam against dense Adam."""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.sparse as sp
import torch
from pk_helpers import make_tasks, small_plan

from consortium.plan import TrunkSpec, trunk_shapes
from partner_kit.batching import SparseBatch
from partner_kit.model import Trunk, build_model
from partner_kit.sparse_input import LazyAdam, SparseInput


def _random_csr(n_rows: int, n_cols: int, density: float, seed: int) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    x = sp.random(n_rows, n_cols, density=density, format="csr", dtype=np.float32, random_state=rng)
    x.data = rng.uniform(0.5, 2.0, x.nnz).astype(np.float32)  # count-like values exercise the weights
    return x


def _rows_grad(rows: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    return torch.sparse_coo_tensor(rows.unsqueeze(0), values, shape, check_invariants=True)


def test_trunk_state_dict_names_and_shapes_equal_plan_trunk_shapes():
    plan = small_plan(n_features=300, hidden=(40, 20, 10))
    model = build_model(plan, make_tasks(3, 2))
    got = {k: tuple(v.shape) for k, v in model.trunk.state_dict().items()}
    assert got == trunk_shapes(plan)
    assert all(not k.startswith("trunk") for k in model.heads.state_dict())


def test_heads_have_one_output_per_task_of_each_kind():
    model = build_model(small_plan(), make_tasks(5, 3))
    logits, regr = model(SparseBatch.from_csr(_random_csr(7, 256, 0.1, 0)))
    assert logits.shape == (7, 5) and regr.shape == (7, 3)
    class_only = build_model(small_plan(), make_tasks(4, 0))
    assert class_only.heads.regression is None
    assert class_only(SparseBatch.from_csr(_random_csr(2, 256, 0.1, 0)))[1].shape == (2, 0)


def test_sparse_input_forward_equals_dense_matmul_in_both_paths():
    torch.manual_seed(0)
    layer = SparseInput(500, 16)
    x = _random_csr(30, 500, 0.05, 1)
    dense = torch.from_numpy(x.toarray()) @ layer.weight.detach() + layer.bias.detach()
    batch = SparseBatch.from_csr(x)
    with_grad = layer(batch)                 # gathered-rows training path
    with torch.no_grad():
        no_grad = layer(batch)               # full-table inference path
    torch.testing.assert_close(with_grad.detach(), dense, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(no_grad, dense, rtol=1e-5, atol=1e-5)


def test_sparse_input_gradient_is_sparse_over_present_rows_and_equals_dense_gradient():
    torch.manual_seed(0)
    layer = SparseInput(500, 16)
    x = _random_csr(30, 500, 0.02, 2)
    upstream = torch.randn(30, 16)
    (layer(SparseBatch.from_csr(x)) * upstream).sum().backward()
    grad = layer.weight.grad
    assert grad.is_sparse
    present = np.unique(x.indices)
    assert sorted(grad._indices()[0].tolist()) == present.tolist()
    assert grad._values().shape == (present.size, 16)   # never a dense n_features x hidden gradient
    w = layer.weight.detach().clone().requires_grad_(True)
    (torch.from_numpy(x.toarray()) @ w * upstream).sum().backward()
    torch.testing.assert_close(grad.to_dense(), w.grad, rtol=1e-5, atol=1e-5)


def test_lazy_adam_equals_dense_adam_when_every_row_is_present():
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(6, 4))
    b = torch.nn.Parameter(a.detach().clone())
    lazy, dense = LazyAdam([a], lr=0.01), torch.optim.Adam([b], lr=0.01)
    rows = torch.arange(6)
    for _ in range(5):
        g = torch.randn(6, 4)
        a.grad = _rows_grad(rows, g, (6, 4)).coalesce()
        b.grad = g.clone()
        lazy.step()
        dense.step()
    torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-5, atol=1e-6)


def test_lazy_adam_leaves_absent_rows_and_their_moments_untouched():
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(8, 3))
    before = p.detach().clone()
    opt = LazyAdam([p], lr=0.1, catch_up=False)
    present = torch.tensor([1, 5])
    for _ in range(3):
        p.grad = _rows_grad(present, torch.randn(2, 3), (8, 3)).coalesce()
        opt.step()
    absent = [0, 2, 3, 4, 6, 7]
    assert torch.equal(p.detach()[absent], before[absent])
    assert not torch.equal(p.detach()[[1, 5]], before[[1, 5]])
    state = opt.state[p]
    assert state["row_step"].tolist() == [0, 3, 0, 0, 0, 3, 0, 0]
    assert torch.count_nonzero(state["exp_avg"][absent]) == 0


def test_lazy_adam_with_catch_up_tracks_dense_adam_when_rows_skip_steps():
    """Rows absent for some steps get dense Adam's momentum updates in closed form when they reappear."""
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(5, 3))
    start = a.detach().clone()
    b = torch.nn.Parameter(a.detach().clone())
    lazy, dense = LazyAdam([a], lr=0.01, catch_up=True), torch.optim.Adam([b], lr=0.01)
    no_catch_up = torch.nn.Parameter(a.detach().clone())
    plain = LazyAdam([no_catch_up], lr=0.01)
    rng = np.random.default_rng(1)
    n_steps = 400
    for step in range(n_steps):
        present = np.flatnonzero(rng.random(5) < 0.3) if step < n_steps - 1 else np.arange(5)
        if present.size == 0:
            present = np.array([0])
        g = torch.zeros(5, 3)
        g[present] = torch.randn(present.size, 3) + 0.5   # a consistent drift gives momentum tails
        rows = torch.from_numpy(present)
        a.grad = _rows_grad(rows, g[rows], (5, 3))
        no_catch_up.grad = _rows_grad(rows, g[rows], (5, 3))
        b.grad = g
        lazy.step()
        plain.step()
        dense.step()
    moved = (b.detach() - start).abs().max()
    err = (a.detach() - b.detach()).abs().max()
    err_plain = (no_catch_up.detach() - b.detach()).abs().max()
    assert err < 0.1 * err_plain             # much closer to dense Adam than plain lazy Adam
    assert err < 0.02 * moved


def test_lazy_adam_row_step_counts_give_per_row_bias_correction():
    """A row first seen at step 3 gets the same first update as a fresh dense Adam would give it."""
    p = torch.nn.Parameter(torch.zeros(4, 2))
    opt = LazyAdam([p], lr=0.5, catch_up=False)
    for _ in range(2):
        p.grad = _rows_grad(torch.tensor([0]), torch.ones(1, 2), (4, 2)).coalesce()
        opt.step()
    p.grad = _rows_grad(torch.tensor([3]), torch.full((1, 2), 0.3), (4, 2)).coalesce()
    opt.step()
    # Adam's first step moves by lr * sign(g) (up to eps), whatever the global step count.
    torch.testing.assert_close(p.detach()[3], torch.full((2,), -0.5), rtol=1e-5, atol=1e-6)


def test_trunk_activation_and_hidden_layers_follow_the_plan():
    plan = small_plan(hidden=(12, 6))
    plan = dataclasses.replace(plan, trunk=TrunkSpec(hidden_sizes=[12, 6], dropout=0.0, activation="tanh"))
    trunk = Trunk.from_plan(plan).eval()
    x = _random_csr(4, 256, 0.1, 3)
    with torch.no_grad():
        h0 = torch.tanh(torch.from_numpy(x.toarray()) @ trunk.input.weight + trunk.input.bias)
        expected = torch.tanh(trunk.hidden[0](h0))
        torch.testing.assert_close(trunk(SparseBatch.from_csr(x)), expected, rtol=1e-5, atol=1e-6)
