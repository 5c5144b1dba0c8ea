"""Model directories: safetensors round trip, no pickle, mismatch errors naming both values."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from pk_helpers import small_plan, synthetic_data

from data_prep.errors import InputError
from partner_kit.batching import CsrBatcher
from partner_kit.training import LocalTrainer, predict_rows
from partner_kit.weights import (
    check_model_matches_data,
    load_model,
    read_model_json,
    read_trunk,
    save_model,
    write_trunk,
)


@pytest.fixture
def saved(plan, data, tmp_path):
    tr = LocalTrainer(plan, data)
    tr.train_steps(3, seed=0)
    save_model(tmp_path / "model", tr, plan=plan, tasks=data.tasks, metrics={"x": float("nan")},
               extra={"seed": 7})
    return tr, tmp_path / "model"


def test_saved_model_loads_back_bit_identical_and_predicts_the_same(saved, plan, data):
    tr, model_dir = saved
    model, info = load_model(model_dir)
    for a, b in ((tr.model.trunk, model.trunk), (tr.model.heads, model.heads)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    rows = np.arange(data.n_rows)
    batcher = CsrBatcher(data)
    for x, y in zip(predict_rows(tr.model, batcher, rows), predict_rows(model, batcher, rows), strict=True):
        np.testing.assert_array_equal(x, y)
    assert info["plan_hash"] == plan.hash and info["seed"] == 7 and info["n_regr_tasks"] == 2


def test_weight_files_are_safetensors_not_pickle(saved):
    _, model_dir = saved
    for name in ("trunk.safetensors", "heads.safetensors"):
        raw = (model_dir / name).read_bytes()
        header_len = int.from_bytes(raw[:8], "little")
        assert raw[8:9] == b"{" and b"__metadata__" in raw[8:8 + header_len]
        assert b"\x80\x04" not in raw[:2]   # not a pickle stream


def test_trunk_file_round_trip_and_shape_check(plan, data, tmp_path):
    arrays = LocalTrainer(plan, data).get_trunk()
    write_trunk(tmp_path / "t.safetensors", arrays)
    back = read_trunk(tmp_path / "t.safetensors", plan)
    assert all(np.array_equal(arrays[k], back[k]) for k in arrays)
    bigger = small_plan(n_features=512)
    with pytest.raises(InputError, match=r"input.weight.*\(256, 32\).*\(512, 32\)"):
        read_trunk(tmp_path / "t.safetensors", bigger)


def test_model_and_prepared_mismatch_errors_name_both_values(saved, plan, data):
    _, model_dir = saved
    info = read_model_json(model_dir)
    check_model_matches_data(info, data)   # the partner's own data is fine
    other_hash = dataclasses.replace(data, manifest={"plan_hash": "f" * 64})
    with pytest.raises(InputError, match=f"plan hash ffffffffffffffff.*plan hash {plan.hash[:16]}"):
        check_model_matches_data(info, other_hash)
    fewer_tasks = synthetic_data(plan, n_class=3, n_regr=2)
    with pytest.raises(InputError, match="3 classification \\+ 2 regression tasks but the model has 4 \\+ 2"):
        check_model_matches_data(info, fewer_tasks)
    other_size = synthetic_data(small_plan(n_features=512))
    other_size.manifest = {"plan_hash": plan.hash}
    with pytest.raises(InputError, match="fingerprint size 512 but the model expects 256"):
        check_model_matches_data(info, other_size)


def test_loading_with_another_plan_names_both_hashes(saved):
    _, model_dir = saved
    other = small_plan(hidden=(32, 8))
    with pytest.raises(InputError, match=f"plan hash {other.hash[:16]}.*differs.*"):
        load_model(model_dir, other)


def test_missing_model_directory_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="not a model directory"):
        load_model(tmp_path / "nothing")


def test_a_model_saved_by_another_kit_version_loads_when_only_its_federation_table_differs(saved, plan, data):
    """Federation settings added or renamed since a model was saved shape no model: it still loads and predicts
    the same; what shapes the model (here the trunk) is still checked strictly."""
    import json

    tr, model_dir = saved
    info = json.loads((model_dir / "model.json").read_text())
    fed = info["plan"]["federation"]
    fed.pop("head_warmup_epochs")
    fed["fp16_wire"] = False  # a key of an older version
    (model_dir / "model.json").write_text(json.dumps(info))
    model, _ = load_model(model_dir)
    rows = np.arange(data.n_rows)
    batcher = CsrBatcher(data)
    for x, y in zip(predict_rows(tr.model, batcher, rows), predict_rows(model, batcher, rows), strict=True):
        np.testing.assert_array_equal(x, y)
    info["plan"]["trunk"]["unknown_width"] = 3
    (model_dir / "model.json").write_text(json.dumps(info))
    with pytest.raises(InputError, match="unknown key"):
        load_model(model_dir)
