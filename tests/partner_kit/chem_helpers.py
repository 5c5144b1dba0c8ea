"""A small real-chemistry model for the prediction tests, from the bundled examples (no ../shared needed).

Molecules: the tox21-3 demo partners' structures (examples/tox21-3/*/T2.csv), standardized and fingerprinted by
data_prep's own featurizer. Labels are known functions of the structure, so the tests know the right answer:
task 0 "has a nitro group", task 1 "has a carboxylic acid", task 2 (regression) Crippen logP.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from pk_helpers import make_tasks, small_plan
from rdkit import Chem
from rdkit.Chem import Crippen

from data_prep.fingerprint import keyed_csr
from data_prep.key import key_check_hash, load_key
from data_prep.parallel import compute_records
from data_prep.prepared import PreparedData

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "tox21-3"
NITRO = Chem.MolFromSmarts("[N+](=O)[O-]")
ACID = Chem.MolFromSmarts("C(=O)[OX2H1]")
ASPIRIN = "CC(=O)Oc1ccccc1C(=O)O"
NITROBENZENE = "O=[N+]([O-])c1ccccc1"
FIXED_KEY = "5eed" * 16


def example_smiles(n: int) -> list[str]:
    frames = [pd.read_csv(EXAMPLES / p / "T2.csv", dtype=str) for p in ("A", "B", "C")]
    return pd.concat(frames)["smiles"].dropna().head(n).tolist()


_BUILT: dict[str, dict] = {}


@pytest.fixture(scope="session")
def chem_model(tmp_path_factory) -> dict:
    """One trained example model for every prediction test module of the session (import this fixture).

    Memoized here: each module importing the fixture gets its own fixture definition, so the session scope alone
    would train the model once per module."""
    if "model" not in _BUILT:
        _BUILT["model"] = build_model(tmp_path_factory.mktemp("chem_model"))
    return _BUILT["model"]


def build_model(root: Path, n_molecules: int = 1600, max_epochs: int = 10) -> dict:
    """Prepared directory + trained model under `root` (training also writes conformal.json); paths and data."""
    from partner_kit.training import fit

    key_path = root / "secret.key"  # a fixed key: the same model (column permutation) in every run
    key_path.write_text(FIXED_KEY + "\n")
    key_path.chmod(0o600)
    key = load_key(key_path)
    plan = small_plan(n_features=2048, hidden=(64,), max_epochs=max_epochs, patience=4, learning_rate=3e-3)
    records = [r for r in compute_records(example_smiles(n_molecules), plan.data, n_jobs=1, cache_dir=False,
                                          progress=False) if r.ok]
    unique = list({r.smiles: r for r in records}.values())
    mols = [Chem.MolFromSmiles(r.smiles) for r in unique]
    nitro = np.array([m.HasSubstructMatch(NITRO) for m in mols], dtype=np.float32)
    acid = np.array([m.HasSubstructMatch(ACID) for m in mols], dtype=np.float32)
    logp = np.array([Crippen.MolLogP(m) for m in mols], dtype=np.float32)
    n = len(unique)
    x = keyed_csr([r.indices() for r in unique], [r.counts() for r in unique], plan.data.fingerprint, key)
    y_class = sp.csr_matrix(np.stack([2 * nitro - 1, 2 * acid - 1], axis=1))
    every_row, first_col = np.arange(n), np.zeros(n, dtype=np.int64)  # explicit entries: a logP of 0.0 is known
    y_regr = sp.csr_matrix((logp, (every_row, first_col)), shape=(n, 1))
    y_censor = sp.csr_matrix((np.zeros(n, np.int8), (every_row, first_col)), shape=(n, 1))
    folds = (np.arange(n) % 5).astype(np.int8)
    compounds = pd.DataFrame({"row": np.arange(n, dtype=np.int64),
                              "input_compound_ids": [[f"EX-{i:05d}"] for i in range(n)],
                              "smiles": [r.smiles for r in unique], "scaffold": [r.scaffold for r in unique],
                              "fold": folds})
    data = PreparedData(x=x.astype(np.float32), folds=folds, y_class=y_class, y_regr=y_regr, y_censor=y_censor,
                        tasks=make_tasks(2, 1), compounds=compounds,
                        manifest={"plan_hash": plan.hash, "key_check_hash": key_check_hash(key)})
    data.save(root / "prepared")
    model_dir = root / "model"
    fit(plan, data, model_dir, progress=False)
    return {"root": root, "key": key_path, "model": model_dir, "prepared": root / "prepared", "plan": plan,
            "data": data, "nitro": nitro, "smiles": [r.smiles for r in unique]}
