"""The last private fine-tuning step: chosen on the validation fold only, the federated model stays a candidate."""

from __future__ import annotations

import json

import numpy as np
from fed_helpers import make_federation

from partner_kit.federated import FederatedPartner
from partner_kit.weights import load_model


def test_finetune_keeps_the_better_of_federated_and_tuned_on_validation(tmp_path):
    fed = make_federation(tmp_path, rounds=2, finetune_epochs=3)
    fed.run()
    for cfg in fed.partners().values():
        metrics = json.loads((cfg.model / "metrics.json").read_text())
        ft = metrics["finetune"]
        assert ft["history"][0]["epoch"] == -1  # the federated model as it came out of the rounds
        assert 0 <= ft["epochs_kept"] <= 3
        assert ft["valid_score"] >= ft["valid_score_federated"]
        assert metrics["variant"] == ("federated" if ft["epochs_kept"] == 0 else "federated+finetune")
        # The saved model is the chosen one: its validation score is the one recorded.
        partner = FederatedPartner(cfg)
        model, _ = load_model(cfg.model, fed.plan)
        partner.trainer.model.load_state_dict(model.state_dict())
        score, _, _ = partner.trainer.selection(cfg.valid_fold)
        assert np.isclose(score, ft["valid_score"], atol=1e-6)


def test_without_finetune_the_model_is_the_best_round(tmp_path):
    fed = make_federation(tmp_path, rounds=2)
    fed.run()
    for cfg in fed.partners().values():
        metrics = json.loads((cfg.model / "metrics.json").read_text())
        assert metrics["finetune"] is None and metrics["variant"] == "federated"
