"""The fused row-wise LazyAdam (torch's one-pass Adam kernel on views of the present rows) against the gathered one.

The gathered path (index_select -> update the block -> index_copy_ back) is the reference: it is what the
optimizer did before and what a GPU still runs. Same seed, same gradients -> the same weights, moments and
row step counts, up to float rounding (the fused kernel takes its bias corrections in double).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from pk_helpers import small_plan, synthetic_data

from partner_kit.device import NATIVE_CPU
from partner_kit.sparse_input import LazyAdam
from partner_kit.training import LocalTrainer


def _sparse(rows: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    return torch.sparse_coo_tensor(rows.unsqueeze(0), values, shape, check_invariants=True).coalesce()


def _run_pair(n_steps: int, weight_decay: float, n_rows: int = 64, hidden: int = 24, density: float = 0.2):
    torch.manual_seed(0)
    fused_w = torch.nn.Parameter(torch.randn(n_rows, hidden))
    gathered_w = torch.nn.Parameter(fused_w.detach().clone())
    fused = LazyAdam([fused_w], lr=1e-3, weight_decay=weight_decay)
    gathered = LazyAdam([gathered_w], lr=1e-3, weight_decay=weight_decay, fused=False)
    rng = np.random.default_rng(1)
    for step in range(n_steps):
        # random row sets, including a single row and an empty step
        present = np.flatnonzero(rng.random(n_rows) < density)
        if step == 3:
            present = present[:1]
        if step == 4:
            present = present[:0]
        rows = torch.from_numpy(present)
        g = torch.randn(rows.numel(), hidden) + 0.3
        fused_w.grad = _sparse(rows, g.clone(), (n_rows, hidden))
        gathered_w.grad = _sparse(rows, g.clone(), (n_rows, hidden))
        fused.step()
        gathered.step()
    return fused_w, fused, gathered_w, gathered


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_fused_equals_the_gathered_update_after_many_steps(weight_decay):
    fused_w, fused, gathered_w, gathered = _run_pair(200, weight_decay)
    assert fused._use_fused(fused.param_groups[0], fused_w, fused_w)
    assert not gathered._use_fused(gathered.param_groups[0], gathered_w, gathered_w)
    a, b = fused.state[fused_w], gathered.state[gathered_w]
    assert torch.equal(a["row_step"], b["row_step"]) and a["row_step"].dtype == torch.int64
    assert int(a["step"]) == int(b["step"]) == 200
    assert (fused_w.detach() - gathered_w.detach()).abs().max() < 1e-6
    assert (a["exp_avg"] - b["exp_avg"]).abs().max() < 1e-6
    assert (a["exp_avg_sq"] - b["exp_avg_sq"]).abs().max() < 1e-6
    # and both really moved the weights (not a comparison of two untouched tensors)
    torch.manual_seed(0)
    assert (fused_w.detach() - torch.randn(64, 24)).abs().max() > 1e-2


def test_fused_equals_dense_adam_when_every_row_is_present():
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(6, 4))
    b = torch.nn.Parameter(a.detach().clone())
    lazy, dense = LazyAdam([a], lr=0.01), torch.optim.Adam([b], lr=0.01)
    for _ in range(20):
        g = torch.randn(6, 4)
        a.grad = _sparse(torch.arange(6), g, (6, 4))
        b.grad = g.clone()
        lazy.step()
        dense.step()
    torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-6, atol=1e-7)


def test_fused_leaves_absent_rows_bit_identical():
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(10, 5))
    before = p.detach().clone()
    opt = LazyAdam([p], lr=0.1)
    for _ in range(4):
        p.grad = _sparse(torch.tensor([2, 7]), torch.randn(2, 5), (10, 5))
        opt.step()
    absent = [0, 1, 3, 4, 5, 6, 8, 9]
    assert torch.equal(p.detach()[absent], before[absent])
    assert not torch.equal(p.detach()[[2, 7]], before[[2, 7]])
    assert opt.state[p]["row_step"].tolist() == [0, 0, 4, 0, 0, 0, 0, 4, 0, 0]
    assert torch.count_nonzero(opt.state[p]["exp_avg_sq"][absent]) == 0


def test_a_loaded_state_continues_exactly_and_keeps_integer_row_steps():
    """load_state_dict replaces the moment tensors: the fused path must update the new ones, not stale views."""
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(12, 3))
    q = torch.nn.Parameter(p.detach().clone())
    first, reference = LazyAdam([p], lr=0.05), LazyAdam([q], lr=0.05, fused=False)
    grads = [(torch.tensor(r), torch.randn(len(r), 3)) for r in ([0, 4, 5], [4, 9], [1, 4, 11], [0, 9])]
    for rows, g in grads[:2]:
        p.grad, q.grad = _sparse(rows, g, (12, 3)), _sparse(rows, g, (12, 3))
        first.step()
        reference.step()
    saved = copy.deepcopy(first.state_dict())
    weights = p.detach().clone()
    p.grad = _sparse(torch.tensor([4, 5]), torch.ones(2, 3), (12, 3))
    first.step()  # a step that the load below undoes: the optimizer's row views must follow the new tensors
    resumed = first
    resumed.load_state_dict(saved)
    with torch.no_grad():
        p.copy_(weights)
    assert resumed.state[p]["row_step"].dtype == torch.int64  # torch's loader had cast it to the weight's dtype
    for rows, g in grads[2:]:
        p.grad, q.grad = _sparse(rows, g, (12, 3)), _sparse(rows, g, (12, 3))
        resumed.step()
        reference.step()
    assert (p.detach() - q.detach()).abs().max() < 1e-6
    assert resumed.state[p]["row_step"].tolist() == reference.state[q]["row_step"].tolist()


def test_trainer_round_trip_through_saved_private_state(tmp_path):
    """The federated path: moments saved as safetensors after a round, restored, training continues the same."""
    plan = small_plan(n_features=384, hidden=(48, 16))
    data = synthetic_data(plan, n_rows=400)
    straight = LocalTrainer(plan, data, seed=2)
    assert straight.trunk_optimizers[0]._use_fused(
        straight.trunk_optimizers[0].param_groups[0], straight.model.trunk.input.weight,
        straight.model.trunk.input.weight)
    straight.train_steps(6, 1)
    straight.train_steps(6, 2)

    first = LocalTrainer(plan, data, seed=2)
    first.train_steps(6, 1)
    first.save_private_state(tmp_path)
    second = LocalTrainer(plan, data, seed=2)
    second.set_trunk(first.get_trunk())
    assert second.load_private_state(tmp_path)
    second.train_steps(6, 2)
    for name, value in straight.get_trunk().items():
        np.testing.assert_allclose(second.get_trunk()[name], value, rtol=0, atol=1e-6, err_msg=name)
    st = second.trunk_optimizers[0].state[second.model.trunk.input.weight]
    assert int(st["step"]) == 12 and st["row_step"].dtype == torch.int64


def test_the_device_generic_hook_keeps_the_gathered_update():
    plan = small_plan(n_features=256, hidden=(32, 16))
    data = synthetic_data(plan, n_rows=200)
    cpu, native = LocalTrainer(plan, data, seed=1), LocalTrainer(plan, data, seed=1, device=NATIVE_CPU)
    assert cpu.trunk_optimizers[0].fused is None and native.trunk_optimizers[0].fused is False
