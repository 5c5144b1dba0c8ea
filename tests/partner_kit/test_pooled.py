"""The pooled upper bound equals a hand-built centralized model; each partner's slice predicts like the whole."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from pk_helpers import synthetic_data

from data_prep.prepared import PreparedData
from partner_kit.batching import CsrBatcher
from partner_kit.model_outputs import TEST_PREDICTIONS, read_predictions
from partner_kit.pooled import partner_model, pool, train_pooled
from partner_kit.training import LocalTrainer, predict_rows, train_early_stopping


def _two_partners(plan) -> dict[str, PreparedData]:
    a = synthetic_data(plan, n_rows=300, n_class=3, n_regr=1, seed=1)
    b = synthetic_data(plan, n_rows=200, n_class=2, n_regr=2, seed=2)
    return {"A": a, "B": b}


def test_pool_is_the_hand_built_concatenation(plan):
    datas = _two_partners(plan)
    pooled, slices = pool(datas)
    a, b = datas["A"], datas["B"]
    # Rows stacked, labels block-diagonal: A's rows carry only A's task columns and vice versa.
    assert (pooled.x != sp.vstack([a.x, b.x])).nnz == 0
    yc = np.zeros((500, 5), np.float32)
    yc[:300, :3], yc[300:, 3:] = a.y_class.toarray(), b.y_class.toarray()
    np.testing.assert_array_equal(pooled.y_class.toarray(), yc)
    yr = np.zeros((500, 3), np.float32)
    yr[:300, :1], yr[300:, 1:] = a.y_regr.toarray(), b.y_regr.toarray()
    np.testing.assert_array_equal(pooled.y_regr.toarray(), yr)
    np.testing.assert_array_equal(pooled.folds, np.concatenate([a.folds, b.folds]))
    assert list(pooled.tasks["input_assay_id"]) == ["A:100", "A:101", "A:102", "B:100", "B:101",
                                                    "A:103", "B:102", "B:103"]
    assert list(pooled.tasks["task_index"]) == list(range(8))
    assert list(slices["B"].class_cols) == [3, 4] and list(slices["B"].regr_cols) == [1, 2]
    pooled.validate(source="pooled")


def test_pooled_training_equals_a_centralized_model_and_slices_predict_alike(plan, tmp_path):
    datas = _two_partners(plan)
    out = {n: tmp_path / n for n in datas}
    metrics = train_pooled(plan, datas, out, seed=3)
    # The same centralized model built by hand from the concatenated data, same seed.
    pooled, slices = pool(datas)
    trainer = LocalTrainer(plan, pooled, seed=3)
    run = train_early_stopping(trainer, plan.training.max_epochs, plan.training.patience)
    assert metrics["A"]["best_epoch"] == metrics["B"]["best_epoch"] == run["best_epoch"]
    p_all, r_all = predict_rows(trainer.model, trainer.batcher, np.arange(pooled.n_rows))
    for name, data in datas.items():
        s = slices[name]
        model = partner_model(plan, trainer.model, data, s)
        p, r = predict_rows(model, CsrBatcher(data), np.arange(data.n_rows))
        np.testing.assert_allclose(p, p_all[s.rows][:, s.class_cols], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(r, r_all[s.rows][:, s.regr_cols], rtol=1e-5, atol=1e-5)
        # The written per-partner model's test predictions are those of the centralized model.
        preds = read_predictions(out[name] / TEST_PREDICTIONS)
        test_rows = np.flatnonzero(np.asarray(data.folds) == 0)
        cls = preds[preds["kind"] == "classification"]
        expected = p_all[s.rows][:, s.class_cols][cls["row"].to_numpy(), cls["task_index"].to_numpy()]
        np.testing.assert_allclose(cls["pred"].to_numpy(), expected, rtol=1e-5, atol=1e-6)
        assert set(cls["row"]) <= set(test_rows)
        assert not pd.isna(metrics[name]["test"]["auc_roc"])
    assert torch.equal(model.trunk.input.weight, trainer.model.trunk.input.weight)
