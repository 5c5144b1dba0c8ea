"""The shared contracts: plan file, secret key, atomic writes, prepared-directory round trip."""

from __future__ import annotations

import dataclasses
import os
import stat

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from typer.testing import CliRunner

from consortium.cli import app as consortium_app
from consortium.plan import Plan, TrunkSpec, trunk_shapes
from data_prep.atomic import write_atomic
from data_prep.cli import app as data_prep_app
from data_prep.config import PrepConfig
from data_prep.errors import InputError
from data_prep.key import generate_key, key_check_hash, load_key
from data_prep.prepared import PreparedData


def test_consortium_init_writes_a_plan_that_loads_with_the_same_hash_on_both_sides(tmp_path):
    out = tmp_path / "plan.toml"
    result = CliRunner().invoke(consortium_app, ["init", "--out", str(out), "--hidden", "500,200"])
    assert result.exit_code == 0, result.output
    plan = Plan.load(out)
    assert plan.trunk.hidden_sizes == [500, 200]
    assert plan.data.fingerprint.size == 32000 and plan.data.fingerprint.radius == 3
    assert PrepConfig.from_file(out).plan_hash == plan.hash


def test_plan_hash_changes_with_content_but_not_with_reference_hash():
    plan = Plan()
    assert dataclasses.replace(plan, reference_hash="abc").hash == plan.hash
    assert dataclasses.replace(plan, trunk=TrunkSpec(hidden_sizes=[100])).hash != plan.hash


def test_incomplete_plan_file_is_refused_with_the_missing_keys(tmp_path):
    path = tmp_path / "plan.toml"
    path.write_text('name = "x"\n[fingerprint]\nradius = 2\n')
    with pytest.raises(InputError, match="incomplete.*consortium init"):
        Plan.load(path)


def test_unknown_plan_key_is_named(tmp_path):
    path = tmp_path / "plan.toml"
    Plan().save(path)
    path.write_text(path.read_text().replace("[fingerprint]\n", "[fingerprint]\nradious = 2\n"))
    with pytest.raises(InputError, match="radious"):
        Plan.load(path)


def test_trunk_shapes_follow_the_hidden_sizes():
    plan = dataclasses.replace(Plan(), trunk=TrunkSpec(hidden_sizes=[300, 100]))
    assert trunk_shapes(plan) == {
        "input.weight": (32000, 300), "input.bias": (300,),
        "hidden.0.weight": (100, 300), "hidden.0.bias": (100,),
    }


def test_keygen_writes_an_owner_only_key_and_refuses_to_overwrite(tmp_path):
    path = tmp_path / "secret.key"
    runner = CliRunner()
    assert runner.invoke(data_prep_app, ["keygen", "--out", str(path)]).exit_code == 0
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    key = load_key(path)
    assert len(key) == 32
    again = runner.invoke(data_prep_app, ["keygen", "--out", str(path)])
    assert again.exit_code == 2 and "refusing to overwrite" in again.output
    assert load_key(path) == key


def test_key_check_hash_distinguishes_keys_without_containing_them(tmp_path):
    a, b = generate_key(tmp_path / "a.key"), generate_key(tmp_path / "b.key")
    ka, kb = load_key(a), load_key(b)
    assert key_check_hash(ka) == key_check_hash(load_key(a))
    assert key_check_hash(ka) != key_check_hash(kb)
    assert ka.hex() not in key_check_hash(ka)


def test_malformed_key_gives_a_clear_error(tmp_path):
    path = tmp_path / "bad.key"
    path.write_text("not hex\n")
    with pytest.raises(InputError, match="not hex"):
        load_key(path)


def test_atomic_write_leaves_the_old_file_when_the_writer_fails(tmp_path):
    path = tmp_path / "ledger.jsonl"
    path.write_text("old\n")

    def crash(tmp):
        tmp.write_text("half")
        raise RuntimeError("power cut")

    with pytest.raises(RuntimeError):
        write_atomic(path, crash)
    assert path.read_text() == "old\n"
    assert list(tmp_path.iterdir()) == [path]


def _toy_prepared(n: int = 6) -> PreparedData:
    rng = np.random.default_rng(0)
    x = sp.random(n, 64, density=0.2, format="csr", dtype=np.float32, random_state=1)
    y_class = sp.csr_matrix(np.where(rng.random((n, 2)) < 0.5, 1.0, -1.0).astype(np.float32))
    y_regr = sp.csr_matrix(rng.random((n, 1)).astype(np.float32))
    censor = y_regr.copy().astype(np.int8)
    censor.data[:] = 0
    tasks = pd.DataFrame({
        "task_index": [0, 1, 2], "kind": ["classification", "classification", "regression"],
        "input_assay_id": ["1", "1", "2"], "threshold": [6.0, 5.0, np.nan], "direction": ["high"] * 3,
        "training_weight": [1.0] * 3, "aggregation_weight": [1.0] * 3, "censored_weight": [1.0] * 3,
    })
    return PreparedData(x=x, folds=np.arange(n, dtype=np.int8) % 5, y_class=y_class, y_regr=y_regr,
                        y_censor=censor, tasks=tasks, manifest={"plan_hash": "p"})


def test_prepared_directory_round_trips_through_scipy_load_npz(tmp_path):
    data = _toy_prepared()
    data.save(tmp_path / "prepared")
    back = PreparedData.load(tmp_path / "prepared")
    assert (back.x != data.x).nnz == 0
    assert np.array_equal(back.folds, data.folds)
    assert sp.load_npz(tmp_path / "prepared" / "y_class.npz").shape == (6, 2)
    assert back.manifest == {"plan_hash": "p"}


def test_prepared_shape_mismatch_is_reported(tmp_path):
    data = _toy_prepared()
    data.folds = data.folds[:-1]
    with pytest.raises(InputError, match="folds.npy"):
        data.validate()


def test_loading_a_directory_that_is_not_prepared_says_how_to_make_one(tmp_path):
    with pytest.raises(InputError, match="data-prep prepare") as err:
        PreparedData.load(tmp_path)
    assert f"--out {tmp_path}`" in str(err.value)
