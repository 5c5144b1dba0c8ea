"""Scaffold folds: keyed, shared by molecules with one scaffold, acyclic molecules spread out."""

from __future__ import annotations

from collections import Counter

from dp_helpers import KEY, OTHER_KEY
from rdkit import Chem

from data_prep.folds import assign_fold, scaffold_smiles


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
