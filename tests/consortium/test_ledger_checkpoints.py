"""The round ledger's hash chain and the per-round trunk checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cons_helpers import tiny_plan, with_federation

from consortium.checkpoints import checkpoint_path, list_checkpoints, load_checkpoint, save_checkpoint
from consortium.ledger import GENESIS, Ledger, LedgerError, line_sha256, verify
from consortium.trunk import initial_trunk, trunk_sha256
from data_prep.errors import InputError


def _ledger(tmp_path, rounds=3) -> Ledger:
    ledger = Ledger(tmp_path / "ledger.jsonl")
    for r in range(1, rounds + 1):
        ledger.append(round=r, plan_hash="p" * 64, node_ids=[5, 9], examples=[100, 40 + r], losses=[0.5, 0.4],
                      trunk_sha256=f"{r:064x}")
    return ledger


def test_ledger_chain_verifies_and_links_each_line_to_the_previous(tmp_path):
    ledger = _ledger(tmp_path)
    entries = verify(ledger.path)
    assert [e.round for e in entries] == [1, 2, 3]
    lines = ledger.path.read_bytes().splitlines()
    assert entries[0].prev_sha256 == GENESIS
    assert entries[1].prev_sha256 == line_sha256(lines[0])
    assert entries[2].prev_sha256 == line_sha256(lines[1])
    assert entries[2].node_ids == [5, 9] and entries[2].examples == [100, 43]


def test_ledger_verify_detects_an_edited_line(tmp_path):
    ledger = _ledger(tmp_path)
    lines = ledger.path.read_text().splitlines()
    entry = json.loads(lines[1])
    entry["examples"] = [100, 4000]  # a partner's weight inflated after the fact
    lines[1] = json.dumps(entry, sort_keys=True, separators=(",", ":"))
    ledger.path.write_text("\n".join(lines) + "\n")
    with pytest.raises(LedgerError, match="line 3 \\(round 3\\).*line 2 was edited"):
        verify(ledger.path)


def test_ledger_verify_detects_a_removed_line_and_a_rewritten_last_line(tmp_path):
    ledger = _ledger(tmp_path)
    lines = ledger.path.read_text().splitlines()
    ledger.path.write_text("\n".join([lines[0], lines[2]]) + "\n")
    with pytest.raises(LedgerError, match="line 2"):
        verify(ledger.path)
    ledger = _ledger(tmp_path / "b")
    lines = ledger.path.read_text().splitlines()
    lines[2] = lines[2].replace('"losses":[0.5,0.4]', '"losses":[0.5, 0.4]')
    ledger.path.write_text("\n".join(lines) + "\n")
    with pytest.raises(LedgerError, match="rewritten"):
        verify(ledger.path)


def test_ledger_append_refuses_a_round_out_of_order(tmp_path):
    ledger = _ledger(tmp_path, rounds=2)
    with pytest.raises(LedgerError, match="does not follow"):
        ledger.append(round=4, plan_hash="p", node_ids=[1], examples=[1], losses=[0.0], trunk_sha256="0")


def test_checkpoint_round_trips_and_records_the_trunk_hash(tmp_path):
    plan = tiny_plan()
    trunk = initial_trunk(plan, 3)
    path = save_checkpoint(tmp_path, 7, trunk, plan)
    assert path == checkpoint_path(tmp_path, 7) and path.name == "round-007.safetensors"
    back = load_checkpoint(path, plan)
    assert trunk_sha256(back) == trunk_sha256(trunk)
    assert all(np.array_equal(back[k], trunk[k]) for k in trunk)
    assert list(list_checkpoints(tmp_path)) == [7]
    assert not list(tmp_path.joinpath("checkpoints").glob("*.tmp"))


def test_checkpoint_of_another_plan_is_refused(tmp_path):
    plan = tiny_plan()
    path = save_checkpoint(tmp_path, 1, initial_trunk(plan, 0), plan)
    with pytest.raises(InputError, match="another plan"):
        load_checkpoint(path, with_federation(plan, local_steps=7))


def test_initial_trunk_is_deterministic_per_seed():
    plan = tiny_plan()
    assert trunk_sha256(initial_trunk(plan, 1)) == trunk_sha256(initial_trunk(plan, 1))
    assert trunk_sha256(initial_trunk(plan, 1)) != trunk_sha256(initial_trunk(plan, 2))
