"""LocalTrainer: learning, reproducibility, trunk exchange, frozen trunk, private state, fit/early stopping."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from pk_helpers import replace_training, small_plan, synthetic_data

from data_prep.errors import InputError
from partner_kit.training import LocalTrainer, fit


def _trunk_equal(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def _heads(trainer: LocalTrainer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in trainer.model.heads.state_dict().items()}


def test_train_rows_exclude_validation_and_test_folds_and_batch_size_follows_the_plan(plan, data):
    tr = LocalTrainer(plan, data, valid_fold=2, test_fold=4)
    folds = data.folds[tr.train_rows]
    assert not np.isin(folds, [2, 4]).any() and tr.n_train == tr.train_rows.size
    assert tr.batch_size == int(np.clip(round(0.1 * tr.n_train), 16, 128))


def test_training_improves_validation_metrics_on_learnable_data():
    plan = small_plan(learning_rate=0.01)
    data = synthetic_data(plan, n_rows=800)
    tr = LocalTrainer(plan, data)
    before = tr.evaluate(1)
    for epoch in range(8):
        tr.train_epoch(epoch)
    after = tr.evaluate(1)
    assert after["auc_roc"] > before["auc_roc"] + 0.15 and after["auc_roc"] > 0.68
    assert after["r2"] > 0.2


def test_same_seed_gives_bit_identical_training_and_different_seed_does_not(plan, data):
    runs = []
    for seed in (5, 5, 6):
        tr = LocalTrainer(plan, data, seed=seed)
        tr.train_epoch(11)
        tr.train_steps(3, seed=12)
        runs.append(tr.get_trunk())
    assert _trunk_equal(runs[0], runs[1])
    assert not _trunk_equal(runs[0], runs[2])


def test_train_steps_from_same_state_and_seed_is_deterministic_and_does_not_touch_global_rng(plan, data):
    tr = LocalTrainer(plan, data)
    trunk, heads = tr.get_trunk(), _heads(tr)
    torch.manual_seed(123)
    expected_global = torch.rand(1)
    torch.manual_seed(123)
    loss_a = tr.train_steps(4, seed=99)
    after_a = tr.get_trunk()
    assert torch.equal(torch.rand(1), expected_global)   # dropout used a forked generator
    tr2 = LocalTrainer(plan, data)
    tr2.set_trunk(trunk)
    tr2.model.heads.load_state_dict(heads)
    assert tr2.train_steps(4, seed=99) == loss_a
    assert _trunk_equal(tr2.get_trunk(), after_a)
    assert tr.steps_done == 4


def test_get_trunk_returns_float32_arrays_named_as_the_plan_and_set_trunk_round_trips(plan, data):
    from consortium.plan import trunk_shapes

    tr = LocalTrainer(plan, data)
    arrays = tr.get_trunk()
    assert {k: v.shape for k, v in arrays.items()} == trunk_shapes(plan)
    assert all(v.dtype == np.float32 for v in arrays.values())
    arrays["input.weight"] += 1.0           # a copy: changing it does not change the model
    assert not _trunk_equal(arrays, tr.get_trunk())
    tr.set_trunk(arrays)
    assert _trunk_equal(arrays, tr.get_trunk())


def test_set_trunk_rejects_wrong_names_and_shapes_with_a_clear_error(plan, data):
    tr = LocalTrainer(plan, data)
    arrays = tr.get_trunk()
    bad = dict(arrays, **{"input.weight": arrays["input.weight"][:10]})
    with pytest.raises(InputError, match=r"input.weight.*shape \(10, 32\).*\(256, 32\)"):
        tr.set_trunk(bad)
    with pytest.raises(InputError, match="missing.*hidden.0.bias"):
        tr.set_trunk({k: v for k, v in arrays.items() if k != "hidden.0.bias"})


def test_swapping_the_trunk_leaves_heads_bit_identical(plan, data):
    tr = LocalTrainer(plan, data)
    tr.train_steps(3, seed=1)
    heads = _heads(tr)
    other = LocalTrainer(plan, data, seed=42)
    other.train_steps(5, seed=2)
    tr.set_trunk(other.get_trunk())
    tr.reset_trunk_optimizer()
    assert all(torch.equal(heads[k], v) for k, v in tr.model.heads.state_dict().items())
    assert _trunk_equal(tr.get_trunk(), other.get_trunk())


def test_frozen_trunk_trains_heads_only(plan, data):
    tr = LocalTrainer(plan, data, freeze_trunk=True)
    trunk, heads = tr.get_trunk(), _heads(tr)
    tr.train_epoch(0)
    assert _trunk_equal(trunk, tr.get_trunk())
    assert not torch.equal(heads["classification.weight"], tr.model.heads.state_dict()["classification.weight"])


def test_reset_trunk_optimizer_forgets_moments(plan, data):
    tr = LocalTrainer(plan, data)
    tr.train_steps(2, seed=0)
    assert all(len(opt.state) for opt in tr.trunk_optimizers)
    tr.reset_trunk_optimizer()
    assert all(len(opt.state) == 0 for opt in tr.trunk_optimizers)


def test_private_state_round_trip_restores_heads_and_their_optimizer(plan, data, tmp_path):
    tr = LocalTrainer(plan, data)
    assert tr.load_private_state(tmp_path / "model") is False
    tr.train_steps(3, seed=0)
    tr.save_private_state(tmp_path / "model")
    trunk = tr.get_trunk()
    tr.train_steps(2, seed=1)
    expected = _heads(tr)

    fresh = LocalTrainer(plan, data, seed=99)
    assert fresh.load_private_state(tmp_path / "model") is True
    fresh.set_trunk(trunk)
    fresh.trunk_optimizers = []   # compare heads only: same heads, same head moments, same trunk
    tr_copy = LocalTrainer(plan, data)
    tr_copy.load_private_state(tmp_path / "model")
    tr_copy.set_trunk(trunk)
    tr_copy.trunk_optimizers = []
    fresh.train_steps(2, seed=1)
    tr_copy.train_steps(2, seed=1)
    assert all(torch.equal(fresh.model.heads.state_dict()[k], v) for k, v in _heads(tr_copy).items())
    assert fresh.steps_done == tr_copy.steps_done == 5
    assert set(expected) == set(_heads(fresh))


def test_private_state_for_other_tasks_is_refused(plan, data, tmp_path):
    LocalTrainer(plan, data).save_private_state(tmp_path / "m")
    other = LocalTrainer(plan, synthetic_data(plan, n_class=3, n_regr=2))
    with pytest.raises(InputError, match="heads do not fit"):
        other.load_private_state(tmp_path / "m")


def test_invalid_folds_and_fingerprint_size_are_input_errors(plan, data):
    with pytest.raises(InputError, match="both 1"):
        LocalTrainer(plan, data, valid_fold=1, test_fold=1)
    with pytest.raises(InputError, match="out of range"):
        LocalTrainer(plan, data, valid_fold=7)
    with pytest.raises(InputError, match="fingerprint size 256 but the plan says 512"):
        LocalTrainer(small_plan(n_features=512), data)


def test_fit_keeps_the_best_validation_epoch_and_writes_the_model_directory(tmp_path):
    plan = replace_training(small_plan(), learning_rate=0.02, max_epochs=12, patience=2)
    data = synthetic_data(plan, n_rows=400)
    metrics = fit(plan, data, tmp_path / "model", progress=False)
    history = metrics["history"]
    best = max(range(len(history)), key=lambda i: history[i]["valid_score"])
    assert metrics["best_epoch"] == best
    assert metrics["valid"]["auc_pr"] == pytest.approx(history[best]["valid_auc_pr"], abs=1e-9)
    assert len(history) <= best + 1 + plan.training.patience
    files = {p.name for p in (tmp_path / "model").iterdir()}
    assert {"trunk.safetensors", "heads.safetensors", "model.json", "metrics.json"} <= files
    info = json.loads((tmp_path / "model" / "model.json").read_text())
    assert info["plan_hash"] == plan.hash and info["seed"] == plan.training.seed
    assert len(info["tasks"]) == len(data.tasks) and info["versions"]["torch"] == torch.__version__


def test_fit_from_an_initial_frozen_trunk_keeps_that_trunk(plan, data, tmp_path):
    from partner_kit.weights import read_trunk

    start = LocalTrainer(plan, data, seed=3).get_trunk()
    fit(plan, data, tmp_path / "m", init_trunk=start, freeze_trunk=True, progress=False, max_epochs=2)
    assert _trunk_equal(read_trunk(tmp_path / "m" / "trunk.safetensors", plan), start)
