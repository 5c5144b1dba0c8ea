"""Keyed fingerprints: RDKit's folded Morgan bits, columns permuted by the secret key."""

from __future__ import annotations

import numpy as np
import pandas as pd
from dp_helpers import KEY, OTHER_KEY
from rdkit import Chem
from rdkit.Chem import rdFingerprintGenerator

from data_prep.config import FingerprintConfig, PrepConfig
from data_prep.featurize import Featurizer, featurize_smiles
from data_prep.fingerprint import key_permutation
from data_prep.reference import REFERENCE_DIR

SMILES = ["c1ccccc1O", "CCN(CC)CC", "O=C(O)c1ccccc1", "CCCCCCCC", "notasmiles", "c1ccc2[nH]ccc2c1"]


def test_key_permutation_is_a_bijection_that_depends_on_the_key():
    p1, p2 = key_permutation(KEY, 4096), key_permutation(KEY, 4096)
    assert np.array_equal(p1, p2)
    assert np.array_equal(np.sort(p1), np.arange(4096))
    q = key_permutation(OTHER_KEY, 4096)
    assert np.array_equal(np.sort(q), np.arange(4096))
    assert (p1 != q).mean() > 0.99


def test_same_key_gives_same_columns_and_other_key_other_columns():
    config = PrepConfig(fingerprint=FingerprintConfig(size=4096))
    x1, _ = featurize_smiles(SMILES, config, KEY)
    x2, _ = featurize_smiles(SMILES, config, KEY)
    y, _ = featurize_smiles(SMILES, config, OTHER_KEY)
    assert (x1 != x2).nnz == 0
    assert np.array_equal(x1.getnnz(axis=1), y.getnnz(axis=1))  # same number of bits per molecule
    for i in range(len(SMILES)):
        if x1[i].nnz:
            assert set(x1[i].indices) != set(y[i].indices)


def test_columns_are_rdkit_morgan_bits_moved_by_the_permutation():
    config = FingerprintConfig(radius=2, size=2048)
    x, _ = featurize_smiles(["CC(=O)Nc1ccc(O)cc1"], PrepConfig(fingerprint=config), KEY)
    gen = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    bits = np.array(list(gen.GetFingerprint(Chem.MolFromSmiles("CC(=O)Nc1ccc(O)cc1")).GetOnBits()))
    assert set(x[0].indices) == set(key_permutation(KEY, 2048)[bits])
    assert set(x[0].data) == {1.0}


def test_count_fingerprints_hold_counts_and_binary_ones():
    counts, _ = featurize_smiles(["CCCCCCCCCC"], PrepConfig(fingerprint=FingerprintConfig(binary=False)), KEY)
    binary, _ = featurize_smiles(["CCCCCCCCCC"], PrepConfig(), KEY)
    assert counts.data.max() > 1 and set(binary.data) == {1.0}
    assert np.array_equal(np.sort(counts.indices), np.sort(binary.indices))
    assert counts.dtype == np.float32 and counts.shape == (1, 32000)


def test_featurize_keeps_every_input_in_place_with_errors_for_failures():
    x, errors = featurize_smiles(SMILES, PrepConfig(), KEY)
    assert x.shape == (len(SMILES), 32000)
    assert errors[4] is not None and "cannot be parsed" in errors[4]
    assert x[4].nnz == 0
    assert all(e is None for i, e in enumerate(errors) if i != 4)
    assert all(x[i].nnz > 0 for i in range(len(SMILES)) if i != 4)


def test_a_molecules_row_does_not_depend_on_the_batch():
    config = PrepConfig()
    alone = [featurize_smiles([s], config, KEY)[0] for s in SMILES]
    batch, _ = featurize_smiles(list(reversed(SMILES)) + SMILES, config, KEY)
    for i, row in enumerate(alone):
        assert (batch[len(SMILES) + i] != row).nnz == 0
        assert (batch[len(SMILES) - 1 - i] != row).nnz == 0


def test_fingerprint_of_the_final_molecule_equals_that_of_its_standardized_smiles():
    """Rows are merged by standardized SMILES, so the bits must be a function of that SMILES alone."""
    featurizer = Featurizer(PrepConfig())
    smiles = pd.read_csv(REFERENCE_DIR / "T2.csv")["smiles"]
    # every 4th molecule, and all charged or metal-containing ones (where hydrogen flags differed)
    sample = [s for i, s in enumerate(smiles) if i % 4 == 0 or "+" in s or "-]" in s]
    for smi in sample:
        record = featurizer(smi)
        if not record.ok:
            continue
        again = featurizer(record.smiles)
        assert again.smiles == record.smiles, smi
        assert again.fp_idx == record.fp_idx and again.fp_cnt == record.fp_cnt, smi
        assert again.scaffold == record.scaffold, smi
