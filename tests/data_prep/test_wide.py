"""import-wide: MoleculeNet wide tables to T0/T1/T2."""

from __future__ import annotations

import pandas as pd
import pytest
from dp_helpers import KEY, small_config
from typer.testing import CliRunner

from data_prep.cli import app
from data_prep.errors import InputError
from data_prep.prepare import prepare
from data_prep.wide import import_wide

WIDE = pd.DataFrame({
    "mol_id": [f"X{i}" for i in range(8)],
    "smiles": ["c1ccccc1O", "CCO", "c1ccncc1", "CC(=O)O", "C1CCCCC1", "c1ccc2ccccc2c1", "CCN", "OCCO"],
    "tox": [1, 0, 1, 0, None, 1, 0, 0],
    "pic50": [6.5, 7.1, None, 5.0, 4.2, 8.0, 5.5, 6.0],
    "empty": [None] * 8,
})


def test_binary_and_continuous_columns_become_the_right_assays(tmp_path):
    WIDE.to_csv(tmp_path / "wide.csv", index=False)
    summary = import_wide(tmp_path / "wide.csv", "smiles", tmp_path / "out", id_col="mol_id")
    assert summary["binary_assays"] == 1 and summary["dose_response_assays"] == 1
    assert summary["skipped_columns"] == ["empty"] and summary["records"] == 7 + 7
    t0 = pd.read_csv(tmp_path / "out" / "T0.csv")
    assert t0[["assay_name_META", "is_binary", "use_in_regression"]].values.tolist() == [
        ["tox", True, False], ["pic50", False, True]]
    t1 = pd.read_csv(tmp_path / "out" / "T1.csv.gz")
    tox = t1[t1["input_assay_id"] == 1].set_index("input_compound_id")["standard_value"]
    assert tox["X0"] == 1 and tox["X1"] == -1 and "X4" not in tox.index
    pic = t1[t1["input_assay_id"] == 2].set_index("input_compound_id")["standard_value"]
    assert pic["X5"] == 8.0 and "X2" not in pic.index
    t2 = pd.read_csv(tmp_path / "out" / "T2.csv")
    assert t2["input_compound_id"].tolist() == WIDE["mol_id"].tolist()


def test_binary_choice_can_be_forced(tmp_path):
    WIDE.drop(columns="empty").to_csv(tmp_path / "wide.csv", index=False)
    s = import_wide(tmp_path / "wide.csv", "smiles", tmp_path / "a", id_col="mol_id", binary=False)
    assert s["binary_assays"] == 0 and s["dose_response_assays"] == 2
    with pytest.raises(InputError, match="'pic50' is declared binary but holds values other than 0/1"):
        import_wide(tmp_path / "wide.csv", "smiles", tmp_path / "b", id_col="mol_id", binary=True)


def test_bad_wide_tables_give_clear_errors(tmp_path):
    bad = WIDE.astype(object)
    bad.loc[3, "pic50"] = "n/a"
    bad.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(InputError, match="column 'pic50' holds a non-numeric value \\(row 4: 'n/a'\\)"):
        import_wide(tmp_path / "bad.csv", "smiles", tmp_path / "out", id_col="mol_id")
    with pytest.raises(InputError, match="column 'mol_id' holds no number .* pass --id-col mol_id"):
        import_wide(tmp_path / "bad.csv", "smiles", tmp_path / "out")
    with pytest.raises(InputError, match="no column 'SMILES' \\(--smiles-col\\)"):
        import_wide(tmp_path / "bad.csv", "SMILES", tmp_path / "out")
    WIDE.assign(mol_id="same").to_csv(tmp_path / "dup.csv", index=False)
    with pytest.raises(InputError, match="must hold unique, non-empty ids"):
        import_wide(tmp_path / "dup.csv", "smiles", tmp_path / "out", id_col="mol_id")


def test_imported_tables_prepare_and_the_cli_works(tmp_path):
    WIDE.to_csv(tmp_path / "wide.csv", index=False)
    result = CliRunner().invoke(app, ["import-wide", str(tmp_path / "wide.csv"), "--out", str(tmp_path / "in"),
                                      "--id-col", "mol_id"])
    assert result.exit_code == 0, result.output
    assert "1 binary + 1 dose-response assays" in result.output
    summary = prepare(small_config(min_regression_values=3), KEY, tmp_path / "in", tmp_path / "out",
                      cache_dir=False, n_jobs=1, progress=False)
    assert summary["counts"]["classification_tasks"] >= 1 and summary["counts"]["regression_tasks"] == 1
    result = CliRunner().invoke(app, ["import-wide", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "not found" in result.output
