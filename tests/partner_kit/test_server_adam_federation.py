"""A federation whose trunk Adam runs on the server: partners send `trunk − gradient`; runs resume exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fed_helpers import make_federation
from pk_helpers import small_plan, synthetic_data

from consortium.checkpoints import checkpoint_path, list_checkpoints
from consortium.ledger import verify
from consortium.server_optimizer import state_path
from data_prep.errors import InputError
from partner_kit.batching import step_batches
from partner_kit.training import LocalTrainer


def test_a_gradient_step_partner_moves_its_trunk_by_minus_the_batch_gradient():
    plan = small_plan()
    data = synthetic_data(plan, n_rows=200, n_class=3, n_regr=1, seed=3)
    t = LocalTrainer(plan, data, seed=5, trunk_step="gradient")
    ref = LocalTrainer(plan, data, seed=5)  # same initial weights; used only to compute the gradient by hand
    before = {k: v.copy() for k, v in t.get_trunk().items()}
    head_before = {k: v.clone() for k, v in t.model.heads.state_dict().items()}
    t.train_steps(1, seed=11)
    rows = next(step_batches(ref.train_rows, ref.batch_size, 1, np.random.default_rng(11)))
    ref.model.train()
    with torch.random.fork_rng():
        torch.manual_seed(11)
        ref.loss(ref.batcher.batch(rows)).backward()
    grads = {n: p.grad.to_dense().numpy() for n, p in ref.model.trunk.named_parameters()}
    after = t.get_trunk()
    for name, g in grads.items():
        np.testing.assert_allclose(before[name] - after[name], g, rtol=1e-4, atol=1e-7)
    assert any(not torch.equal(v, head_before[k]) for k, v in t.model.heads.state_dict().items())  # Adam heads
    assert t.trunk_optimizers[0].state_dict()["state"] == {}  # no trunk moments on the partner


def test_server_adam_run_checkpoints_its_moments_and_resumes_exactly(tmp_path):
    fed = make_federation(tmp_path, rounds=4, schedule="per_iteration", server_optimizer="adam")
    fed.run("whole", "model-whole")
    fed.run("split", "model-split", rounds=2)
    fed.run("split", "model-split", rounds=4, resume=True)
    whole = [e.trunk_sha256 for e in verify(tmp_path / "whole" / "ledger.jsonl")]
    split = [e.trunk_sha256 for e in verify(tmp_path / "split" / "ledger.jsonl")]
    assert whole == split and len(set(whole)) == 4
    for rnd in list_checkpoints(tmp_path / "whole"):
        assert state_path(checkpoint_path(tmp_path / "whole", rnd)).is_file() == (rnd > 0)


def test_resume_without_the_server_moments_says_what_is_missing(tmp_path):
    fed = make_federation(tmp_path, rounds=3, schedule="per_iteration", server_optimizer="adam")
    fed.run(rounds=2)
    state_path(checkpoint_path(tmp_path / "run", 2)).unlink()
    with pytest.raises(InputError, match="server-adam.safetensors not found"):
        fed.run(rounds=3, resume=True)
