"""The ServerApp logic on the in-process grid with scripted partners: rounds, records, refusals, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cons_helpers import scripted_app, tiny_plan

from consortium.checkpoints import checkpoint_path, list_checkpoints, load_checkpoint
from consortium.embedded import run_embedded
from consortium.ledger import verify
from consortium.server_app import RunSettings
from consortium.strategy import RoundFailed
from consortium.trunk import initial_trunk, trunk_sha256
from data_prep.errors import InputError

HONEST = {"A": (1.0, 10, ""), "B": (2.0, 20, ""), "C": (3.0, 30, "")}


def _run(tmp_path, plan, partners, rounds=None, resume=False, secagg=False):
    settings = RunSettings(plan=plan, run_dir=tmp_path / "run", rounds=rounds or plan.federation.rounds,
                           resume=resume, mode="embedded")
    return run_embedded(settings, scripted_app(partners, secagg=secagg), {n: {} for n in partners})


def test_embedded_rounds_average_by_examples_and_write_checkpoints_ledger_status(tmp_path):
    plan = tiny_plan(rounds=2)
    status, grid = _run(tmp_path, plan, HONEST)
    run = tmp_path / "run"
    start = initial_trunk(plan, plan.training.seed)
    final = load_checkpoint(checkpoint_path(run, 2), plan)
    for name in start:  # each round adds (1*10 + 2*20 + 3*30) / 60 = 7/3
        np.testing.assert_allclose(final[name], start[name] + 2 * 7 / 3, rtol=1e-6, atol=1e-5)
    entries = verify(run / "ledger.jsonl")
    assert [e.round for e in entries] == [1, 2]
    assert sorted(entries[0].examples) == [10, 20, 30] and len(entries[0].node_ids) == 3
    assert entries[1].trunk_sha256 == trunk_sha256(final)
    assert list(list_checkpoints(run)) == [0, 1, 2]
    saved = json.loads((run / "status.json").read_text())
    assert saved["state"] == "finished" and saved["round"] == 2 and len(saved["nodes"]) == 3
    assert saved["final_partners"] == 3
    assert all(grid.bytes_out[n] > 0 for n in status["partners"].values())


@pytest.mark.parametrize("cheat", ["head", "metric", "shape"])
def test_reply_with_anything_but_the_trunk_is_refused_and_left_out(tmp_path, cheat):
    plan = tiny_plan(rounds=1, min_partners=2)
    partners = {"A": (1.0, 10, ""), "B": (4.0, 30, ""), "M": (100.0, 1000, cheat)}
    status, _ = _run(tmp_path, plan, partners)
    start = initial_trunk(plan, plan.training.seed)
    final = load_checkpoint(checkpoint_path(tmp_path / "run", 1), plan)
    for name in start:  # only A and B: (1*10 + 4*30) / 40
        np.testing.assert_allclose(final[name], start[name] + 3.25, rtol=1e-6, atol=1e-5)
    assert len(status["refused"]) == 1 and str(status["partners"]["M"]) in status["refused"][0]
    assert len(verify(tmp_path / "run" / "ledger.jsonl")[0].node_ids) == 2


def test_round_fails_when_refusals_leave_too_few_partners(tmp_path):
    plan = tiny_plan(rounds=1, min_partners=3)
    with pytest.raises(RoundFailed, match="needs 3"):
        _run(tmp_path, plan, {"A": (1.0, 10, ""), "B": (2.0, 20, ""), "M": (0.0, 5, "head")})
    assert json.loads((tmp_path / "run" / "status.json").read_text())["state"] == "failed"


def test_resume_continues_at_the_next_round_with_the_uninterrupted_result(tmp_path):
    plan = tiny_plan(rounds=3)
    _run(tmp_path / "full", plan, HONEST)
    _run(tmp_path / "split", plan, HONEST, rounds=2)
    with pytest.raises(InputError, match="pass --resume"):
        _run(tmp_path / "split", plan, HONEST)
    status, _ = _run(tmp_path / "split", plan, HONEST, resume=True)
    assert status["first_round"] == 3
    full = verify(tmp_path / "full" / "run" / "ledger.jsonl")
    split = verify(tmp_path / "split" / "run" / "ledger.jsonl")
    assert [e.round for e in split] == [1, 2, 3]
    assert [e.trunk_sha256 for e in split] == [e.trunk_sha256 for e in full]


def test_resume_refuses_a_checkpoint_changed_after_its_round(tmp_path):
    plan = tiny_plan(rounds=2)
    _run(tmp_path, plan, HONEST, rounds=1)
    from consortium.checkpoints import save_checkpoint

    trunk = load_checkpoint(checkpoint_path(tmp_path / "run", 1), plan)
    trunk["input.bias"] = trunk["input.bias"] + 1
    save_checkpoint(tmp_path / "run", 1, trunk, plan)
    with pytest.raises(InputError, match="does not match the ledger"):
        _run(tmp_path, plan, HONEST, resume=True)


def test_secure_aggregation_path_gives_the_weighted_average_within_quantization(tmp_path):
    plan = tiny_plan(rounds=2, secure_aggregation=True)
    status, grid = _run(tmp_path, plan, HONEST, secagg=True)
    start = initial_trunk(plan, plan.training.seed)
    final = load_checkpoint(checkpoint_path(tmp_path / "run", 2), plan)
    for name in start:
        np.testing.assert_allclose(final[name], start[name] + 2 * 7 / 3, atol=2e-4)
    assert status["secure_aggregation"] and status["round"] == 2
    entries = verify(tmp_path / "run" / "ledger.jsonl")
    assert sorted(entries[1].examples) == [10, 20, 30]


@pytest.mark.parametrize("cheat", ["count", "huge", "text", "bytes", "nan", "inf"])
def test_reply_smuggling_text_or_outweighing_the_rest_is_refused_recorded_and_the_round_goes_on(tmp_path, cheat):
    plan = tiny_plan(rounds=2, min_partners=2)
    partners = {"A": (1.0, 10, ""), "B": (4.0, 30, ""), "M": (0.5, 20, cheat)}
    status, _ = _run(tmp_path, plan, partners)
    start = initial_trunk(plan, plan.training.seed)
    final = load_checkpoint(checkpoint_path(tmp_path / "run", 2), plan)
    for name in start:  # only A and B, both rounds: 2 * (1*10 + 4*30) / 40
        np.testing.assert_allclose(final[name], start[name] + 6.5, rtol=1e-6, atol=1e-5)
    entries = verify(tmp_path / "run" / "ledger.jsonl")
    node = status["partners"]["M"]
    assert [len(e.node_ids) for e in entries] == [2, 2] and all(node not in e.node_ids for e in entries)
    assert all(len(e.refused) == 1 and f"node {node}" in e.refused[0] for e in entries)
    assert status["state"] == "finished" and len(status["refused"]) == 2


def test_a_partner_with_another_reference_hash_is_refused_every_round(tmp_path):
    from cons_helpers import GOOD_HASH

    plan = tiny_plan(rounds=2, min_partners=2)
    partners = {"A": (1.0, 10, ""), "B": (4.0, 30, ""), "W": (0.5, 20, "key")}
    status, _ = _run(tmp_path, plan, partners)
    node = status["partners"]["W"]
    entries = verify(tmp_path / "run" / "ledger.jsonl")
    assert all(node not in e.node_ids and len(e.node_ids) == 2 for e in entries)
    assert all("secret key, plan or kit differs" in e.refused[0] for e in entries)
    assert status["no_round_nodes"] == [node]  # connected, in no round: status says it has no federated model
    admission = json.loads((tmp_path / "run" / "admission.json").read_text())
    assert admission["reference_hash"] == GOOD_HASH and "2 of 3 agreed" in admission["source"]


def test_the_plans_reference_hash_wins_over_the_majority_and_a_missing_hash_is_refused_when_required(tmp_path):
    import dataclasses

    from cons_helpers import OTHER_KEY_HASH

    plan = dataclasses.replace(tiny_plan(rounds=1, min_partners=1), reference_hash=OTHER_KEY_HASH)
    partners = {"A": (1.0, 10, ""), "B": (4.0, 30, ""), "W": (0.5, 20, "key")}
    status, _ = _run(tmp_path / "slot", plan, partners)
    assert verify(tmp_path / "slot" / "run" / "ledger.jsonl")[0].node_ids == [status["partners"]["W"]]
    settings = RunSettings(plan=tiny_plan(rounds=1, min_partners=2), run_dir=tmp_path / "strict" / "run", rounds=1,
                           mode="embedded", require_reference=True)
    partners = {"A": (1.0, 10, ""), "B": (4.0, 30, ""), "N": (0.5, 20, "nohash")}
    status, _ = run_embedded(settings, scripted_app(partners), {n: {} for n in partners})
    entries = verify(tmp_path / "strict" / "run" / "ledger.jsonl")
    assert status["partners"]["N"] not in entries[0].node_ids and "carries no reference_hash" in entries[0].refused[0]
