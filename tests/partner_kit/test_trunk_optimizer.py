"""The trunk optimizer's moments are private round state: kept across rounds (or reset, by plan), never sent."""

from __future__ import annotations

import json

import pytest
import torch
from fed_helpers import make_federation

from consortium.ledger import verify
from partner_kit.federated import FederatedPartner
from partner_kit.weights import TRUNK_OPTIMIZER_FILE, load_tensors


def _trunk_steps(round_dir) -> int:
    """The global step count of the sparse input layer's LazyAdam saved with a round's private state."""
    tensors = load_tensors(round_dir / TRUNK_OPTIMIZER_FILE)
    return int(tensors["0.state.0.step"].reshape(-1)[0])


@pytest.mark.parametrize(("mode", "expected_rounds"), [("keep", 3), ("reset", 1)])
def test_trunk_moments_persist_across_rounds_unless_reset(tmp_path, mode, expected_rounds):
    fed = make_federation(tmp_path, rounds=3, trunk_optimizer=mode)
    fed.run()
    steps = fed.plan.federation.local_steps
    for cfg in fed.partners().values():
        work = cfg.model / "federated"
        # "keep": round 3 continued Adam from rounds 1-2; "reset": fresh moments on every averaged trunk.
        assert _trunk_steps(work / "round-003") == expected_rounds * steps
        meta = json.loads((work / "round-003" / "private_state.json").read_text())
        assert len(meta["trunk_param_groups"]) == 2


def test_restored_trunk_moments_equal_the_saved_ones(tmp_path):
    fed = make_federation(tmp_path, rounds=2)
    fed.run()
    cfg = next(iter(fed.partners().values()))
    saved = load_tensors(cfg.model / "federated" / "round-002" / TRUNK_OPTIMIZER_FILE)
    fresh = FederatedPartner(cfg)
    assert fresh._restore_state(3) == 2
    for i, opt in enumerate(fresh.trainer.trunk_optimizers):
        for idx, p in enumerate(p for g in opt.param_groups for p in g["params"]):
            for key, value in opt.state[p].items():
                assert torch.equal(value.reshape(-1), saved[f"{i}.state.{idx}.{key}"].reshape(-1))


def test_resumed_run_with_kept_moments_equals_an_uninterrupted_one(tmp_path):
    fed = make_federation(tmp_path, rounds=3)
    fed.run("whole", "model-whole")
    fed.run("split", "model-split", rounds=2)
    fed.run("split", "model-split", rounds=3, resume=True)
    whole = [e.trunk_sha256 for e in verify(tmp_path / "whole" / "ledger.jsonl")]
    split = [e.trunk_sha256 for e in verify(tmp_path / "split" / "ledger.jsonl")]
    assert whole == split


def test_keep_checkpoints_prunes_old_rounds_and_the_run_still_verifies_and_resumes(tmp_path):
    from consortium.checkpoints import list_checkpoints
    from consortium.embedded import run_embedded
    from consortium.ledger import verify_run
    from consortium.server_app import RunSettings
    from partner_kit.client_app import app as partner_app

    fed = make_federation(tmp_path, rounds=4)
    nodes = {n: c.to_node_config() for n, c in fed.partners().items()}

    def run(rounds: int, resume: bool) -> None:
        settings = RunSettings(plan=fed.plan, run_dir=tmp_path / "run", rounds=rounds, resume=resume,
                               mode="embedded", keep_checkpoints=2)
        run_embedded(settings, partner_app, nodes)

    run(3, False)
    assert sorted(list_checkpoints(tmp_path / "run")) == [2, 3]
    assert len(verify_run(tmp_path / "run")) == 3  # every round's hash is still in the ledger
    run(4, True)
    assert sorted(list_checkpoints(tmp_path / "run")) == [3, 4]
    assert len(verify_run(tmp_path / "run")) == 4


def test_a_failed_background_write_stops_the_partner_at_its_next_round(tmp_path, monkeypatch):
    """Written behind, a round's private state that could not be saved (disk full) must not pass unnoticed:
    the partner's next round re-raises the error instead of training on."""
    import dataclasses

    from consortium.trunk import initial_trunk
    from partner_kit.weights import HEADS_FILE

    fed = make_federation(tmp_path, rounds=2)
    cfg = dataclasses.replace(next(iter(fed.partners().values())), write_behind=True)
    partner = FederatedPartner(cfg)
    trunk = list(initial_trunk(fed.plan, 0).values())
    config = {"round": 1, "seed": 1, "plan_hash": fed.plan.hash}
    partner.fit_round(trunk, config)
    partner.wait_for_writes()
    assert (partner.round_dir(1) / HEADS_FILE).is_file()

    def disk_full(model_dir):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(partner.trainer, "save_private_state", disk_full)
    partner.fit_round(trunk, {**config, "round": 2})
    with pytest.raises(OSError, match="No space left"):
        partner.fit_round(trunk, {**config, "round": 3})
    partner.close()
