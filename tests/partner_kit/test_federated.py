"""The partner's federated round logic, driven by the real server logic on the in-process grid."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fed_helpers import make_federation

from consortium.checkpoints import checkpoint_path, load_checkpoint
from consortium.embedded import PartnerFailed
from consortium.ledger import verify
from consortium.plan import trunk_shapes
from partner_kit.client_app import app as partner_app
from partner_kit.federated import FederatedPartner, PlanMismatch, load_prepared_cached
from partner_kit.join import check_partner
from partner_kit.weights import load_tensors, read_trunk


def test_embedded_run_persists_heads_per_round_and_writes_each_partners_model(tmp_path):
    fed = make_federation(tmp_path, rounds=2)
    status, _ = fed.run()
    entries = verify(tmp_path / "run" / "ledger.jsonl")
    assert [len(e.node_ids) for e in entries] == [3, 3]
    for cfg in fed.partners().values():
        work = cfg.model / "federated"
        state = json.loads((work / "round-002" / "private_state.json").read_text())
        assert state["steps_done"] == 2 * fed.plan.federation.local_steps  # heads trained on, round after round
        assert (work / "round-001" / "heads.safetensors").is_file()
        selection = json.loads((work / "selection.json").read_text())
        assert [h["round"] for h in selection["history"]] == [1, 2]
        metrics = json.loads((cfg.model / "metrics.json").read_text())
        assert metrics["federated"] and metrics["best_round"] == selection["best_round"]
        assert len(metrics["test_per_task"]) == 4 and metrics["test"]["n_class_tasks"] == 3
        # the model's trunk is the consortium's trunk of the partner's own best round
        best = load_checkpoint(checkpoint_path(tmp_path / "run", metrics["best_round"]), fed.plan)
        mine = read_trunk(cfg.model / "trunk.safetensors", fed.plan)
        assert all(np.array_equal(best[k], mine[k]) for k in best)
        assert load_tensors(cfg.model / "heads.safetensors")
    assert status["final_partners"] == 3


def test_replies_carry_only_trunk_arrays_example_count_and_loss(tmp_path):
    fed = make_federation(tmp_path, rounds=1)
    replies = []

    def recording_app(msg, ctx):
        reply = partner_app(msg, ctx)
        replies.append((msg.metadata.message_type, reply.content))
        return reply

    fed.run(client_app=recording_app)
    fits = [c for t, c in replies if t == "train"]
    assert len(fits) == 3
    shapes = list(trunk_shapes(fed.plan).values())
    n_train = {FederatedPartner(c).trainer.n_train for c in fed.partners("probe").values()}
    for content in fits:
        assert set(content.array_records) == {"fitres.parameters"}
        assert set(content.metric_records) == {"fitres.num_examples"}
        assert set(content.config_records) == {"fitres.metrics", "fitres.status"}
        assert set(content.config_records["fitres.metrics"]) == {"loss"}
        assert content.metric_records["fitres.num_examples"]["num_examples"] in n_train
        arrays = [a.numpy() for a in content.array_records["fitres.parameters"].values()]
        assert [a.shape for a in arrays] == shapes and all(a.dtype == np.float32 for a in arrays)
    evals = [c for t, c in replies if t == "evaluate"]
    assert len(evals) == 3
    for content in evals:  # the final message returns a loss and a count; per-task metrics stay local
        assert not content.array_records
        assert set(content.config_records["evaluateres.metrics"]) == set()


def test_same_seed_plan_and_data_give_the_same_trunks(tmp_path):
    fed = make_federation(tmp_path, rounds=2)
    fed.run("run1", "model1")
    fed.run("run2", "model2")
    a = [e.trunk_sha256 for e in verify(tmp_path / "run1" / "ledger.jsonl")]
    b = [e.trunk_sha256 for e in verify(tmp_path / "run2" / "ledger.jsonl")]
    assert a == b


def test_resume_after_a_stop_gives_the_uninterrupted_result(tmp_path):
    fed = make_federation(tmp_path, rounds=3)
    fed.run("full", "model_full")
    fed.run("split", "model_split", rounds=2)
    status, _ = fed.run("split", "model_split", resume=True)
    assert status["first_round"] == 3
    full = verify(tmp_path / "full" / "ledger.jsonl")
    split = verify(tmp_path / "split" / "ledger.jsonl")
    assert [e.round for e in split] == [1, 2, 3]
    assert [e.trunk_sha256 for e in split] == [e.trunk_sha256 for e in full]


def test_state_held_across_rounds_and_written_behind_equals_state_read_back_each_round(tmp_path, monkeypatch):
    """An embedded partner keeps its trainer's state between rounds and writes it in the background; a partner
    rebuilt from disk for every message (as a fresh deployed ClientApp is) must give the same bits."""
    import dataclasses

    from consortium.embedded import run_embedded
    from consortium.server_app import RunSettings
    from partner_kit import client_app, federated

    fed = make_federation(tmp_path, rounds=3)

    def run(name: str, write_behind: bool) -> None:
        partners = {n: dataclasses.replace(c, model=tmp_path / name / n, write_behind=write_behind)
                    for n, c in fed.partners().items()}
        settings = RunSettings(plan=fed.plan, run_dir=tmp_path / f"run-{name}", rounds=3, mode="embedded")
        run_embedded(settings, partner_app, {n: c.to_node_config() for n, c in partners.items()})
        federated.release_partners(federated.PartnerConfig.from_node_config({**c.to_node_config(), "name": n})
                                   for n, c in partners.items())

    run("live", write_behind=True)
    with monkeypatch.context() as m:
        m.setattr(client_app, "get_partner", federated.FederatedPartner)  # a new partner, state from disk
        run("disk", write_behind=False)
    assert not [c for c in federated._PARTNERS if str(tmp_path) in str(c.model)]  # released
    live = [e.trunk_sha256 for e in verify(tmp_path / "run-live" / "ledger.jsonl")]
    assert live == [e.trunk_sha256 for e in verify(tmp_path / "run-disk" / "ledger.jsonl")]
    for n in fed.prepared:
        for rel in ("heads.safetensors", "federated/round-003/trunk_optimizer.safetensors",
                    "federated/round-003/heads_optimizer.safetensors"):
            assert (tmp_path / "live" / n / rel).read_bytes() == (tmp_path / "disk" / n / rel).read_bytes(), rel
        assert not (tmp_path / "live" / n / "federated" / "round-001").exists()  # older rounds dropped


def test_consortium_plan_differing_from_the_partners_plan_is_refused_naming_both(tmp_path):
    fed = make_federation(tmp_path, rounds=1)
    other = fed.plan.__class__(**{**fed.plan.__dict__, "name": "another consortium"})
    with pytest.raises(PartnerFailed, match="the consortium runs plan hash .* but your plan .*plan.toml has hash"):
        fed.run(plan=other)


def test_prepared_directory_of_another_plan_is_refused_before_joining(tmp_path):
    fed = make_federation(tmp_path, rounds=1)
    cfg = fed.partners()["A"]
    manifest = cfg.prepared / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "plan_hash": "f" * 64}))
    with pytest.raises(PlanMismatch, match="prepared directory .* was made under plan hash ffffffff"):
        check_partner(cfg)
    with pytest.raises(PlanMismatch, match="re-run `data-prep prepare`"):
        FederatedPartner(cfg)


@pytest.mark.parametrize(("schedule", "steps"), [("per_iteration", 1), ("local_steps", 4)])
def test_schedule_sets_the_optimizer_steps_per_round(tmp_path, schedule, steps):
    fed = make_federation(tmp_path, rounds=2, schedule=schedule, local_steps=4)
    fed.run()
    state = json.loads((fed.partners()["B"].model / "federated" / "round-002" / "private_state.json").read_text())
    assert state["steps_done"] == 2 * steps


def test_local_epochs_schedule_trains_whole_epochs_per_round(tmp_path):
    fed = make_federation(tmp_path, rounds=1, schedule="local_epochs", local_epochs=2)
    fed.run()
    partner = FederatedPartner(fed.partners()["C"])
    batches = -(-partner.trainer.n_train // partner.trainer.batch_size)
    state = json.loads((partner.round_dir(1) / "private_state.json").read_text())
    assert state["steps_done"] == 2 * batches


def test_secure_aggregation_and_fp16_wire_stay_close_to_the_plain_trunk(tmp_path):
    plain = make_federation(tmp_path / "plain", rounds=1)
    plain.run()
    ref = load_checkpoint(checkpoint_path(tmp_path / "plain" / "run", 1), plain.plan)
    for option in ("secure_aggregation", "fp16_wire"):
        fed = make_federation(tmp_path / option, rounds=1, **{option: True})
        fed.run()
        got = load_checkpoint(checkpoint_path(tmp_path / option / "run", 1), fed.plan)
        for k in ref:
            np.testing.assert_allclose(got[k], ref[k], atol=2e-3, err_msg=option)


def _is_mapped(arr) -> bool:
    while arr is not None:
        if isinstance(arr, np.memmap):
            return True
        arr = getattr(arr, "base", None)
    return False


def test_prepared_data_cache_is_memory_mapped_and_equal_to_the_directory(tmp_path):
    fed = make_federation(tmp_path, rounds=1)
    cfg = fed.partners()["A"]
    first = load_prepared_cached(cfg.prepared, tmp_path / "cache")
    second = load_prepared_cached(cfg.prepared, tmp_path / "cache")
    assert _is_mapped(second.x.indices) and _is_mapped(second.y_class.data)
    assert (first.x != second.x).nnz == 0 and (first.y_class != second.y_class).nnz == 0
    assert np.array_equal(first.folds, second.folds)
