"""The consistency hash over the shipped reference set."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
from dp_helpers import KEY, OTHER_KEY
from typer.testing import CliRunner

from consortium.plan import Plan
from data_prep.cli import app
from data_prep.config import FoldConfig
from data_prep.reference import REFERENCE_DIR, prepared_hash, reference_hash


@pytest.fixture(scope="module")
def default_hash(tmp_path_factory, std_cache) -> tuple[str, Plan]:
    """Fills the test cache; the command-line test below checks that uncached runs give the same hash."""
    plan = Plan()
    return reference_hash(plan, KEY, keep=tmp_path_factory.mktemp("ref") / "prepared", cache_dir=std_cache), plan


def test_reference_set_is_shipped_and_exercises_each_path():
    t0 = pd.read_csv(REFERENCE_DIR / "T0.csv")
    t2 = pd.read_csv(REFERENCE_DIR / "T2.csv")
    assert set(t0["is_binary"]) == {True, False} and t0["use_in_regression"].any()
    assert len(t2) > 400


def test_same_plan_and_key_give_the_same_hash(default_hash, tmp_path, std_cache):
    digest, plan = default_hash
    assert len(digest) == 64 and int(digest, 16) >= 0
    again = reference_hash(plan, KEY, keep=tmp_path / "again", cache_dir=std_cache)
    assert again == digest
    assert prepared_hash(tmp_path / "again") == digest


def test_other_key_or_plan_gives_another_hash(default_hash, std_cache):
    digest, plan = default_hash
    assert reference_hash(plan, OTHER_KEY, cache_dir=std_cache) != digest
    four_folds = dataclasses.replace(plan, data=dataclasses.replace(plan.data, folds=FoldConfig(n_folds=4)))
    assert reference_hash(four_folds, KEY, cache_dir=std_cache) != digest
    renamed = dataclasses.replace(plan, name="another consortium")  # plan content changes, outputs do not
    assert reference_hash(renamed, KEY, cache_dir=std_cache) != digest


def test_cli_prints_the_hash_and_checks_the_plans_reference_hash(default_hash, tmp_path):
    """Two uncached runs of the command: they also show the cache does not change the hash."""
    digest, plan = default_hash
    plan.save(tmp_path / "plan.toml")
    (tmp_path / "secret.key").write_text(KEY.hex())
    args = ["reference-hash", "--plan", str(tmp_path / "plan.toml"), "--key", str(tmp_path / "secret.key")]
    dataclasses.replace(plan, reference_hash="0" * 64).save(tmp_path / "plan.toml")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and "mismatch" in result.output
    assert digest in result.output  # the hash is printed before the comparison
    dataclasses.replace(plan, reference_hash=digest).save(tmp_path / "plan.toml")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0 and "matches the plan's reference_hash" in result.output
