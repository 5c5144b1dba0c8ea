"""Conformal prediction: exact p-values on a hand example, validity on data the calibration never saw, storage."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from pk_helpers import make_tasks, small_plan, synthetic_data

from data_prep.errors import InputError
from partner_kit.conformal import (
    CONFORMAL_JSON,
    ConformalModel,
    calibrate,
    calibrate_model_dir,
    evaluate,
    prediction_set_matrix,
    prediction_sets,
)
from partner_kit.model_outputs import predict_fold
from partner_kit.training import LocalTrainer, train_early_stopping


def long_frame(task_index: int, kind: str, y: np.ndarray, pred: np.ndarray, censor=None) -> pd.DataFrame:
    return pd.DataFrame({"row": np.arange(len(y)), "task_index": task_index, "kind": kind, "y": y,
                         "censor": np.zeros(len(y), np.int8) if censor is None else censor, "pred": pred})


def test_p_values_count_calibration_scores_at_least_as_strange():
    tasks = make_tasks(1, 0)
    # inactives with P(active) 0.1, 0.2, 0.4; actives with P(active) 0.9, 0.6  -> scores 1 - P(own class)
    valid = long_frame(0, "classification", np.array([0, 0, 0, 1, 1.0]), np.array([0.1, 0.2, 0.4, 0.9, 0.6]))
    model = calibrate(valid, tasks)
    p0, p1 = model.p_values(0, np.array([0.3]))
    # inactive: alpha = 0.3; calibration inactive scores (0.1, 0.2, 0.4) -> 1 at least 0.3 -> (1 + 1) / 4
    # active: alpha = 0.7; calibration active scores (0.1, 0.4) -> none at least 0.7 -> (0 + 1) / 3
    assert p0[0] == pytest.approx(2 / 4) and p1[0] == pytest.approx(1 / 3)
    assert prediction_sets(p0, p1, 0.4) == ["inactive"]
    assert prediction_sets(p0, p1, 0.2) == ["both"]
    assert prediction_sets(p0, p1, 0.6) == ["empty"]


def test_exchangeable_scores_give_valid_sets_per_class():
    """With calibration and test drawn from one distribution, the error rate is at most ε (per class)."""
    rng = np.random.default_rng(0)

    def draw(n):
        y = (rng.random(n) < 0.2).astype(float)
        pred = np.clip(rng.normal(0.3 + 0.3 * y, 0.2), 0, 1)
        return long_frame(0, "classification", y, pred)

    model = calibrate(draw(2000), make_tasks(1, 0))
    for eps in (0.05, 0.2):
        row = evaluate(model, draw(20000), eps).iloc[0]
        assert row["validity"] <= eps + 0.015
        assert row["error_active"] <= eps + 0.03 and row["error_inactive"] <= eps + 0.015
        assert row["validity"] >= eps - 0.05  # not trivially conservative either


def test_regression_intervals_cover_and_shrink_with_significance():
    rng = np.random.default_rng(1)
    tasks = make_tasks(0, 1)
    y = rng.normal(6, 1, 3000)
    pred = y + rng.normal(0, 0.5, 3000)
    censor = np.zeros(3000, np.int8)
    censor[:100] = 1  # censored values are not calibrated on
    model = calibrate(long_frame(0, "regression", y[:1000], pred[:1000], censor[:1000]), tasks)
    assert len(model.tasks[0]["scores"]["residual"]) == 1000 - 100
    wide, narrow = model.half_width(0, 0.05), model.half_width(0, 0.3)
    assert narrow < wide < np.inf
    assert wide == pytest.approx(1.96 * 0.5, rel=0.15)
    row = evaluate(model, long_frame(0, "regression", y[1000:], pred[1000:]), 0.1).iloc[0]
    assert row["validity"] <= 0.1 + 0.02 and row["efficiency"] == pytest.approx(2 * model.half_width(0, 0.1))
    tiny = calibrate(long_frame(0, "regression", y[:3], pred[:3]), tasks)
    assert tiny.half_width(0, 0.1) == np.inf  # 3 values cannot promise 90 %


def test_saved_model_round_trips_and_a_broken_file_is_refused(tmp_path):
    tasks = make_tasks(1, 1)
    valid = pd.concat([long_frame(0, "classification", np.array([0, 1.0]), np.array([0.2, 0.7])),
                       long_frame(1, "regression", np.array([5.0, 6.0]), np.array([5.5, 6.1]))])
    model = calibrate(valid, tasks)
    model.save(tmp_path)
    again = ConformalModel.load(tmp_path)
    assert again.to_dict() == model.to_dict()
    assert again.p_values(0, np.array([0.5])) == model.p_values(0, np.array([0.5]))
    assert ConformalModel.load(tmp_path / "elsewhere") is None
    (tmp_path / CONFORMAL_JSON).write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        ConformalModel.load(tmp_path)
    (tmp_path / CONFORMAL_JSON).write_text(json.dumps({"format": "other"}))
    with pytest.raises(InputError, match="not a conformal calibration file"):
        ConformalModel.load(tmp_path)


def test_a_trained_model_is_valid_on_its_test_fold(tmp_path):
    """Calibrated on the validation fold of a real trained model; validity measured on the unseen test fold."""
    plan = small_plan(n_features=256, hidden=(32,), max_epochs=4)
    data = synthetic_data(plan, n_rows=4000, n_class=2, n_regr=1, label_density=0.8)
    trainer = LocalTrainer(plan, data)
    train_early_stopping(trainer, 4, 2)
    valid = predict_fold(trainer.model, trainer.batcher, data, trainer.fold_rows(trainer.valid_fold))
    test = predict_fold(trainer.model, trainer.batcher, data, trainer.fold_rows(trainer.test_fold))
    (tmp_path / "metrics.json").write_text(json.dumps({"test_per_task": [{"task_index": 0}, {"task_index": 2}]}))
    calibrate_model_dir(tmp_path, valid, test, data.tasks, significance=0.2)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    per_task = {row["task_index"]: row for row in metrics["conformal"]["per_task"]}
    assert set(per_task) == {0, 1, 2}
    for idx, row in per_task.items():
        assert row["n"] >= 500  # ~640 labelled test compounds per task: enough to tell 0.2 from 0.26
        assert row["validity"] <= 0.2 + 0.06, (idx, row)
    assert 0 < per_task[0]["efficiency"] <= 1
    assert metrics["test_per_task"][0]["conformal_validity"] == per_task[0]["validity"]
    assert metrics["test_per_task"][1]["conformal_efficiency"] == per_task[2]["efficiency"]
    assert ConformalModel.load(tmp_path).tasks.keys() == {0, 1, 2}


def test_many_tasks_at_once_equal_one_task_at_a_time():
    rng = np.random.default_rng(3)
    tasks = make_tasks(4, 0)
    frames = [long_frame(t, "classification", (rng.random(n) < 0.3).astype(float), rng.random(n))
              for t, n in ((0, 50), (1, 7), (3, 120))]  # task 2 has no calibration data at all
    frames.append(long_frame(1, "classification", np.zeros(3), rng.random(3)))
    model = calibrate(pd.concat(frames), tasks)
    prob = np.concatenate([rng.random((6, 4)), np.array([[0.0, 1.0, 0.5, model.tasks[0]["scores"]["active"][0]]])])
    p0, p1 = model.p_value_matrix([0, 1, 2, 3], prob)
    for j in range(4):
        q0, q1 = model.p_values(j, prob[:, j])
        np.testing.assert_array_equal(p0[:, j], q0)
        np.testing.assert_array_equal(p1[:, j], q1)
    assert np.isnan(p0[:, 2]).all()
    names = prediction_set_matrix(p0, p1, 0.2)
    assert names.shape == (7, 4) and names[:, 2].tolist() == [""] * 7
    assert [names[i, j] for i in range(7) for j in (0, 1, 3)] == [
        prediction_sets(p0[i:i + 1, j], p1[i:i + 1, j], 0.2)[0] for i in range(7) for j in (0, 1, 3)]
