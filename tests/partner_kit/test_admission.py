"""Key and kit agreement: a partner prepared with another secret key is refused before it is averaged in."""

from __future__ import annotations

import dataclasses
import json

import pytest
from fed_helpers import make_federation

from consortium.embedded import run_embedded
from consortium.ledger import verify
from consortium.server_app import RunSettings
from data_prep.errors import InputError
from data_prep.key import generate_key, key_check_hash, load_key
from partner_kit.client_app import app as partner_app
from partner_kit.reference import cache_path, partner_reference_hash


@pytest.fixture(scope="module")
def fed_with_keys(tmp_path_factory):
    """Three partners; A and B share the consortium's key, C was given another one."""
    root = tmp_path_factory.mktemp("admission")
    fed = make_federation(root, rounds=2, min_partners=2)
    keys = {"good": generate_key(root / "good.key"), "other": generate_key(root / "other.key")}
    std_cache = root / "std-cache"  # standardize the reference set once, for both keys
    hashes = {}
    for name, cfg in fed.partners().items():
        key = keys["other" if name == "C" else "good"]
        manifest = json.loads((cfg.prepared / "manifest.json").read_text())
        hashes[name] = partner_reference_hash(cfg.plan, manifest, cfg.prepared, cfg.model, key, cache_dir=std_cache)
    return fed, keys, hashes


def test_equal_keys_give_equal_hashes_and_the_hash_is_cached_in_the_model_dir(fed_with_keys):
    fed, keys, hashes = fed_with_keys
    assert hashes["A"] == hashes["B"] != hashes["C"]
    cfg = fed.partners()["A"]
    saved = json.loads(cache_path(cfg.model).read_text())
    assert saved["reference_hash"] == hashes["A"] and saved["key_check_hash"] == key_check_hash(load_key(keys["good"]))
    manifest = json.loads((cfg.prepared / "manifest.json").read_text())
    assert partner_reference_hash(cfg.plan, manifest, cfg.prepared, cfg.model) == hashes["A"]  # no key needed now
    with pytest.raises(InputError, match="pass --key"):
        partner_reference_hash(cfg.plan, manifest, cfg.prepared, cfg.model.parent / "fresh-model")


def test_a_key_that_is_not_the_prepared_datas_is_refused_before_joining(fed_with_keys, tmp_path):
    fed, keys, _ = fed_with_keys
    cfg = fed.partners()["A"]
    manifest = {**json.loads((cfg.prepared / "manifest.json").read_text()),
                "key_check_hash": key_check_hash(load_key(keys["good"]))}
    with pytest.raises(InputError, match="is not the key .* was prepared with"):
        partner_reference_hash(cfg.plan, manifest, cfg.prepared, tmp_path / "model", keys["other"])


def test_embedded_partner_with_another_key_is_refused_and_told_why(fed_with_keys):
    fed, _, hashes = fed_with_keys
    partners = {n: dataclasses.replace(c, model=c.model.parent / "model-embedded", reference_hash=hashes[n])
                for n, c in fed.partners().items()}
    settings = RunSettings(plan=fed.plan, run_dir=fed.root / "run-embedded", rounds=2, mode="embedded",
                           require_reference=True)
    status, _ = run_embedded(settings, partner_app, {n: c.to_node_config() for n, c in partners.items()},
                             raise_errors=False)
    c_node = status["partners"]["C"]
    entries = verify(fed.root / "run-embedded" / "ledger.jsonl")
    assert [sorted(e.node_ids) for e in entries] == [sorted([status["partners"]["A"], status["partners"]["B"]])] * 2
    assert f"node {c_node}" in entries[0].refused[0] and "secret key, plan or kit differs" in entries[0].refused[0]
    # From round 2 on the round config names the consortium's hash: C stops before training, saying why.
    assert any("refused by the consortium" in f and "yours is" in f for f in status["failures"]), status["failures"]
    assert not (partners["C"].model / "federated" / "round-002").exists()
    assert json.loads((fed.root / "run-embedded" / "admission.json").read_text())["reference_hash"] == hashes["A"]


def test_wire_audit_records_keys_types_and_sizes_of_every_outgoing_message(fed_with_keys):
    from consortium.plan import trunk_shapes
    from partner_kit.wire_audit import AUDIT_KEY

    fed, _, hashes = fed_with_keys
    partners = {n: dataclasses.replace(c, model=c.model.parent / "model-audit", reference_hash=hashes["A"])
                for n, c in fed.partners().items()}
    audit = fed.root / "audit-B.jsonl"
    configs = {n: {**c.to_node_config(), **({AUDIT_KEY: str(audit)} if n == "B" else {})}
               for n, c in partners.items()}
    settings = RunSettings(plan=fed.plan, run_dir=fed.root / "run-audit", rounds=2, mode="embedded")
    run_embedded(settings, partner_app, configs)
    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [e["message_type"] for e in lines] == ["train", "train", "evaluate"]
    for entry in lines[:2]:
        assert [(a["dtype"], a["shape"]) for a in entry["arrays"]["fitres.parameters"]] == [
            ("float32", list(s)) for s in trunk_shapes(fed.plan).values()]
        assert entry["configs"]["fitres.metrics"] == {"loss": {"type": "float"},
                                                      "reference_hash": {"type": "str", "size": 64}}
    assert "AUC" not in audit.read_text() and "smiles" not in audit.read_text().lower()


def test_a_secure_aggregation_partner_never_sends_values_flower_would_clip():
    import numpy as np
    from pk_helpers import small_plan

    from consortium.plan import FederationSpec
    from partner_kit.client_app import check_clipping_range
    from partner_kit.federated import PlanMismatch

    plan = dataclasses.replace(small_plan(), federation=FederationSpec(secure_aggregation=True,
                                                                       secagg_clipping_range=2.0))
    check_clipping_range([np.full(3, 1.99, np.float32), np.full(2, -2.0, np.float32)], plan)
    with pytest.raises(PlanMismatch, match="beyond federation.secagg_clipping_range = 2"):
        check_clipping_range([np.zeros(3, np.float32), np.array([0.0, -2.5], np.float32)], plan)
    with pytest.raises(PlanMismatch, match="clip"):
        check_clipping_range([np.array([np.nan], np.float32)], plan)
    check_clipping_range([np.full(3, 50.0, np.float32)], small_plan())  # plain FedAvg: no clipping to fear


def test_join_refuses_before_connecting_when_the_plan_names_another_reference_hash(fed_with_keys):
    from consortium.plan import Plan
    from partner_kit.join import with_reference_hash

    fed, _, hashes = fed_with_keys
    cfg = fed.partners()["A"]
    plan = Plan.load(fed.plan_path)
    assert with_reference_hash(cfg, plan, None).reference_hash == hashes["A"]  # from the model dir's cache
    slotted = dataclasses.replace(plan, reference_hash=hashes["C"])  # the slot is outside the plan hash
    assert slotted.hash == plan.hash
    with pytest.raises(InputError, match="is not the plan's reference_hash"):
        with_reference_hash(cfg, slotted, None)
