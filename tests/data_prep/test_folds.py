"""Scaffold folds: keyed, shared by related chemotypes (TUNER's scaffold network), acyclic molecules spread out."""

from __future__ import annotations

from collections import Counter

import pandas as pd
import pytest
from dp_helpers import KEY, OTHER_KEY, small_config, t0_row, write_inputs
from rdkit import Chem

from data_prep.config import FoldConfig, PrepConfig
from data_prep.errors import InputError
from data_prep.featurize import Featurizer
from data_prep.folds import assign_fold, network_scaffold, scaffold_smiles
from data_prep.prepare import prepare


def test_scaffold_is_the_murcko_ring_system_and_empty_for_acyclic():
    assert scaffold_smiles(Chem.MolFromSmiles("CCOc1ccc(CC(=O)O)cc1")) == "c1ccccc1"
    assert scaffold_smiles(Chem.MolFromSmiles("c1ccccc1CCN1CCCC1")) == "c1ccc(CCN2CCCC2)cc1"
    assert scaffold_smiles(Chem.MolFromSmiles("CCCCCC(=O)O")) == ""


def test_molecules_sharing_a_scaffold_share_a_fold():
    mols = ["Cc1ccccc1", "Oc1ccccc1", "NC(=O)c1ccccc1", "CCCCc1ccccc1"]
    folds = {assign_fold(KEY, scaffold_smiles(Chem.MolFromSmiles(s)), s, 5) for s in mols}
    assert len(folds) == 1


def test_fold_is_deterministic_in_range_and_keyed():
    scaffolds = [f"c1ccc({'C' * i}N2CCCC2)cc1" for i in range(200)]
    a = [assign_fold(KEY, s, "", 5) for s in scaffolds]
    assert a == [assign_fold(KEY, s, "", 5) for s in scaffolds]
    assert set(a) == {0, 1, 2, 3, 4}
    b = [assign_fold(OTHER_KEY, s, "", 5) for s in scaffolds]
    assert sum(x != y for x, y in zip(a, b, strict=True)) > 100  # ~80 % move with another key


def test_acyclic_molecules_do_not_share_one_fold():
    acyclic = ["C" * n + "O" for n in range(1, 60)]
    assert all(scaffold_smiles(Chem.MolFromSmiles(s)) == "" for s in acyclic)
    folds = Counter(assign_fold(KEY, "", s, 5) for s in acyclic)
    assert len(folds) == 5 and max(folds.values()) < 30
    # ... and each is hashed by its own SMILES, so the same acyclic molecule always lands alike.
    assert assign_fold(KEY, "", "CCO", 5) == assign_fold(KEY, "", "CCO", 5)


#: A carbazole (3 fused rings) with different rings hung on it: four Murcko scaffolds, one TUNER scaffold.
CARBAZOLES = ["c1ccc(Cn2c3ccccc3c3ccccc32)cc1", "c1ccc(-n2c3ccccc3c3ccccc32)nc1",
              "O=C(C1CCCCC1)n1c2ccccc2c2ccccc21", "c1ccc2c(c1)[nH]c1cc(-c3ccco3)ccc12"]
CARBAZOLE = "c1ccc2c(c1)[nH]c1ccccc12"


def test_network_scaffold_reduces_to_at_most_three_rings_with_tuners_preferences():
    murcko = [scaffold_smiles(Chem.MolFromSmiles(s)) for s in CARBAZOLES]
    assert len(set(murcko)) == 4
    assert {network_scaffold(m) for m in murcko} == {CARBAZOLE}
    # <= 3 rings: the Murcko scaffold is its own reduction; acyclic stays empty.
    for small in ("c1ccccc1", "c1ccc(-c2ccc(-c3ccccc3)cc2)cc1", CARBAZOLE):
        assert network_scaffold(small) == small
    assert network_scaffold("") == ""
    # Among 3-ring sub-scaffolds TUNER prefers heterocycles: the pyridine survives, a phenyl goes.
    quaterphenyl = scaffold_smiles(Chem.MolFromSmiles("c1ccc(-c2ccc(-c3ccc(-c4ccncc4)cc3)cc2)cc1"))
    assert network_scaffold(quaterphenyl) == "c1ccc(-c2ccc(-c3ccncc3)cc2)cc1"
    # A fused ring system is never cut: a steroid keeps its four rings.
    steroid = scaffold_smiles(Chem.MolFromSmiles("CC12CCC3C(CCC4CC(=O)CCC34C)C1CCC2O"))
    assert network_scaffold(steroid) == steroid


def test_related_chemotypes_share_a_fold_under_scaffold_network_but_not_necessarily_under_murcko():
    records = [Featurizer(PrepConfig())(s) for s in CARBAZOLES]
    assert {r.fold_scaffold("scaffold_network") for r in records} == {CARBAZOLE}
    for key in (KEY, OTHER_KEY):
        network = {assign_fold(key, r.fold_scaffold("scaffold_network"), r.smiles, 5) for r in records}
        assert len(network) == 1
    murcko = [{assign_fold(key, r.fold_scaffold("scaffold"), r.smiles, 5) for r in records}
              for key in (KEY, OTHER_KEY)]
    assert max(len(m) for m in murcko) > 1  # Murcko folds split these analogues across the test boundary


def test_fold_method_is_a_plan_setting_with_the_tuner_method_as_default():
    assert FoldConfig().method == "scaffold_network"
    assert FoldConfig(method="scaffold").method == "scaffold"
    with pytest.raises(InputError, match="folds.method 'murcko'.*'scaffold_network', 'scaffold'"):
        FoldConfig(method="murcko")


def test_partners_with_one_key_agree_on_folds_and_the_fold_scaffold_is_listed(tmp_path):
    """Two partners holding different and shared compounds: the shared ones get the same fold."""
    shared = [(f"S{i}", s) for i, s in enumerate(CARBAZOLES + ["c1ccc2ccccc2c1", "CCCCCCO", "C1CCNCC1"])]
    only_a = [(f"A{i}", s) for i, s in enumerate(["c1ccncc1C", "O=C1CCCC1", "c1ccc(-c2ccccc2)cc1"])]
    only_b = [(f"B{i}", s) for i, s in enumerate(["C1CCOC1CC", "Cn1c2ccccc2c2ccccc21", "CC(C)CC(=O)O"])]
    folds = {}
    for name, mols in (("a", shared + only_a), ("b", only_b + shared[::-1])):
        t1 = [(cid, "B1", "=", 1 if i % 2 else -1) for i, (cid, _) in enumerate(mols)]
        write_inputs(tmp_path / name, [t0_row("B1", binary=True)], t1, mols)
        prepare(small_config(), KEY, tmp_path / name, tmp_path / f"{name}-out", cache_dir=False, n_jobs=1,
                progress=False)
        compounds = pd.read_parquet(tmp_path / f"{name}-out" / "compounds.parquet")
        folds[name] = dict(zip(compounds["smiles"], compounds["fold"], strict=True))
        carbazoles = compounds[compounds["fold_scaffold"] == CARBAZOLE]
        assert len(carbazoles) >= 4 and carbazoles["fold"].nunique() == 1
        assert (compounds["scaffold"] != compounds["fold_scaffold"]).sum() == 4  # the 4-ring carbazoles only
    common = set(folds["a"]) & set(folds["b"])
    assert len(common) == 7 and all(folds["a"][s] == folds["b"][s] for s in common)
