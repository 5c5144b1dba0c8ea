"""End to end on the shared public consortia: every partner prepares, agrees on columns and folds."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from dp_helpers import KEY, OTHER_KEY, check_contract

from data_prep.config import PrepConfig, StandardizationConfig
from data_prep.prepare import prepare
from data_prep.prepared import PreparedData

pytestmark = pytest.mark.slow

TOXCAST = ("APR", "ATG", "BSK", "NVS", "OTHERS", "TOX21")
CHEMBL = ("P1", "P2", "P3")


def t1_rows(folder: Path) -> int:
    return len(pd.read_csv(folder / "T1.csv.gz", usecols=[0]))


@pytest.fixture(scope="module")
def toxcast(shared_data, std_cache, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("toxcast-6")
    for partner in TOXCAST:
        prepare(PrepConfig(), KEY, shared_data / "consortia" / "toxcast-6" / partner, out / partner,
                cache_dir=std_cache, progress=False)
    return {p: out / p for p in TOXCAST}


@pytest.mark.parametrize("partner", TOXCAST)
def test_every_toxcast_partner_prepares_and_meets_the_contract(toxcast, shared_data, partner):
    data = check_contract(toxcast[partner], t1_rows(shared_data / "consortia" / "toxcast-6" / partner))
    assert data.y_regr.shape[1] == 0 and data.y_class.shape[1] > 30
    assert (data.tasks["training_weight"] == 1.0).all()


def rows_by_smiles(folder: Path) -> tuple[PreparedData, dict[str, int]]:
    data = PreparedData.load(folder, with_compounds=True)
    return data, {s: i for i, s in enumerate(data.compounds["smiles"])}


def test_shared_structures_get_identical_rows_and_folds_across_partners(toxcast):
    a, rows_a = rows_by_smiles(toxcast["TOX21"])
    for other in ("ATG", "NVS", "APR"):
        b, rows_b = rows_by_smiles(toxcast[other])
        common = sorted(set(rows_a) & set(rows_b))
        assert len(common) > 500
        ia = [rows_a[s] for s in common]
        ib = [rows_b[s] for s in common]
        assert (a.x[ia] != b.x[ib]).nnz == 0
        assert np.array_equal(a.folds[ia], b.folds[ib])


def test_another_key_moves_the_columns_and_folds_of_the_same_structures(toxcast, shared_data, std_cache, tmp_path):
    prepare(PrepConfig(), OTHER_KEY, shared_data / "consortia" / "toxcast-6" / "APR", tmp_path / "APR",
            cache_dir=std_cache, progress=False)
    a, rows_a = rows_by_smiles(toxcast["APR"])
    b, rows_b = rows_by_smiles(tmp_path / "APR")
    assert rows_a == rows_b  # same structures, same rows
    same_columns = [set(a.x[i].indices) == set(b.x[i].indices) for i in range(a.n_rows)]
    assert not any(same_columns)
    fold_scaffold = a.compounds["fold_scaffold"]
    scaffolds = pd.DataFrame({"scaffold": fold_scaffold.where(fold_scaffold != "", a.compounds["smiles"]),
                              "a": a.folds, "b": b.folds}).drop_duplicates("scaffold")
    assert (scaffolds["a"] != scaffolds["b"]).mean() > 0.6  # ~80 % of scaffolds change fold with another key
    assert a.manifest["key_check_hash"] != b.manifest["key_check_hash"]


@pytest.mark.parametrize("partner", CHEMBL)
def test_every_chembl_partner_prepares_dose_response_tasks(shared_data, std_cache, tmp_path, partner):
    """Checks the data contract on all of chembl-3's partners, with the tautomer step switched off: it is
    RDKit's slowest step (minutes for these 24 k ChEMBL molecules) and has its own unit tests; the default
    plan on chembl-3 is run by benchmarks/bench_data_prep.py."""
    config = dataclasses.replace(PrepConfig(), standardization=StandardizationConfig(canonical_tautomer=False))
    folder = shared_data / "consortia" / "chembl-3" / partner
    summary = prepare(config, KEY, folder, tmp_path / partner, cache_dir=std_cache, progress=False)
    data = check_contract(tmp_path / partner, t1_rows(folder))
    assert data.y_regr.shape[1] > 10 and data.y_class.shape[1] > 10
    regr = data.regr_tasks
    assert (regr["censored_weight"] == config.tasks.censored_weight).all()
    assert set(data.class_tasks["threshold_method"]) == {"auto"}
    assert set(data.class_tasks["threshold"]) <= set(config.tasks.auto_thresholds)
    assert summary["counts"]["dropped_tasks"] > 0  # small assays fail the quorum ...
    assert json.loads((tmp_path / partner / "manifest.json").read_text())["dropped_tasks"][0]["reason"]
    rejected = pd.read_parquet(tmp_path / partner / "rejected.parquet")
    assert (rejected[rejected["stage"] == "tasks"]["file"] == "T1.csv.gz").any()  # ... and their rows are listed
