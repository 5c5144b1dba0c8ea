"""Heads warmed up before round 1: private training of the fresh heads alone on the consortium's initial trunk."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from fed_helpers import make_federation

from consortium.plan import FederationSpec
from data_prep.errors import InputError
from partner_kit.federated import FederatedPartner


def test_warm_up_trains_the_heads_and_leaves_trunk_and_its_optimizer_untouched(tmp_path):
    fed = make_federation(tmp_path, rounds=1, head_warmup_epochs=2)
    cfg = next(iter(fed.partners().values()))
    partner = FederatedPartner(cfg)
    t = partner.trainer
    trunk = {k: v.clone() for k, v in t.model.trunk.state_dict().items()}
    heads = {k: v.clone() for k, v in t.model.heads.state_dict().items()}
    steps = t.steps_done
    partner.warm_up_heads(seed=1)
    assert all(torch.equal(trunk[k], v) for k, v in t.model.trunk.state_dict().items())
    assert any(not torch.equal(heads[k], v) for k, v in t.model.heads.state_dict().items())
    assert t.steps_done == steps
    assert all(not opt.state for opt in t.trunk_optimizers)  # no trunk moments from the warm-up
    assert all(p.requires_grad for p in t.model.trunk.parameters())


def test_a_warmed_up_federation_differs_from_a_cold_one_and_is_reproducible(tmp_path):
    trunks = {}
    for name, epochs in (("cold", 0), ("warm", 2), ("warm-again", 2)):
        fed = make_federation(tmp_path / name, rounds=2, head_warmup_epochs=epochs)
        status, _ = fed.run()
        from safetensors.numpy import load_file

        trunks[name] = load_file(str(tmp_path / name / "run" / "checkpoints" / "round-002.safetensors"))
        assert status["round"] == 2
    keys = sorted(trunks["cold"])
    assert any(not np.array_equal(trunks["cold"][k], trunks["warm"][k]) for k in keys)
    assert all(np.array_equal(trunks["warm"][k], trunks["warm-again"][k]) for k in keys)


@pytest.mark.parametrize("value", [-1, 1.5, True])
def test_bad_warm_up_setting_is_refused_naming_the_key(value):
    with pytest.raises(InputError, match="federation.head_warmup_epochs"):
        dataclasses.replace(FederationSpec(), head_warmup_epochs=value)
