"""prepare-smiles: rows for prediction in the keyed column space, every input kept in place."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from dp_helpers import KEY
from typer.testing import CliRunner

from consortium.plan import Plan
from data_prep.cli import app
from data_prep.featurize import featurize_smiles


def test_cli_writes_one_row_per_input_with_errors_in_place(tmp_path):
    plan = Plan()
    plan.save(tmp_path / "plan.toml")
    (tmp_path / "secret.key").write_text(KEY.hex())
    pd.DataFrame({"name": ["phenol", "junk", "ethanol", "empty"],
                  "smiles": ["c1ccccc1O", "C1CC", "CCO", ""]}).to_csv(tmp_path / "in.csv", index=False)
    result = CliRunner().invoke(app, ["prepare-smiles", "--plan", str(tmp_path / "plan.toml"), "--key",
                                      str(tmp_path / "secret.key"), "--input", str(tmp_path / "in.csv"),
                                      "--id-col", "name", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    x = sp.load_npz(tmp_path / "out" / "x.npz")
    mols = pd.read_parquet(tmp_path / "out" / "molecules.parquet")
    assert x.shape == (4, plan.n_features)
    assert mols["id"].tolist() == ["phenol", "junk", "ethanol", "empty"]
    assert mols["error"].isna().tolist() == [True, False, True, False]
    assert mols["standardized_smiles"][0] == "Oc1ccccc1"
    assert np.array_equal(x.getnnz(axis=1) > 0, [True, False, True, False])
    expected, _ = featurize_smiles(["c1ccccc1O", "CCO"], plan.data, KEY)
    assert (x[[0, 2]] != expected).nnz == 0


def test_smi_files_and_missing_columns(tmp_path):
    Plan().save(tmp_path / "plan.toml")
    (tmp_path / "secret.key").write_text(KEY.hex())
    (tmp_path / "in.smi").write_text("c1ccccc1O phenol\n\nCCO\n")
    base = ["prepare-smiles", "--plan", str(tmp_path / "plan.toml"), "--key", str(tmp_path / "secret.key")]
    result = CliRunner().invoke(app, [*base, "--input", str(tmp_path / "in.smi"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 0 and "2 rows, 0 failed" in " ".join(result.output.split())
    pd.DataFrame({"SMILES": ["CCO"]}).to_csv(tmp_path / "in.csv", index=False)
    result = CliRunner().invoke(app, [*base, "--input", str(tmp_path / "in.csv"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "no column 'smiles' (--smiles-col)" in " ".join(result.output.split())
