"""`data-prep import-wide`: a MoleculeNet-style wide table (SMILES + one column per assay) -> T0/T1/T2.

Columns whose values are all 0/1 become binary assays (1 -> +1 active, 0 -> -1 inactive); other numeric
columns become dose-response assays with `use_in_regression` (values as given, qualifier '='). Empty cells
are "not tested". Assay ids are 1..n in column order; the column name is kept in `assay_name_META`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from data_prep.atomic import write_atomic
from data_prep.config import ASSAY_TYPES
from data_prep.errors import InputError
from data_prep.io import T0_OPTIONAL, read_text_frame
from data_prep.paths import writable_dir


def read_wide(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise InputError(f"wide table {path} not found")
    return read_text_frame(path, header="expected a header with a SMILES column and assay columns")


def import_wide(
    file: str | Path,
    smiles_col: str,
    out_dir: str | Path,
    id_col: str | None = None,
    binary: bool | Sequence[str] | None = None,
    *,
    assay_type: str = "OTHER",
) -> dict[str, Any]:
    """Write T0.csv, T1.csv.gz and T2.csv for `prepare`; returns counts.

    `binary`: None detects per column (all values 0/1 -> binary), True/False forces every column, a list
    names the binary columns. `assay_type` is written for every assay (its credibility range applies to
    dose-response values: use ADME for values outside 3..12, such as log solubility).
    """
    path = Path(file)
    wide = read_wide(path)
    if assay_type not in ASSAY_TYPES:
        raise InputError(f"assay type {assay_type!r} unknown; use one of {', '.join(ASSAY_TYPES)}")
    for col, what in ((smiles_col, "--smiles-col"), (id_col, "--id-col")):
        if col is not None and col not in wide.columns:
            columns = ", ".join(map(str, wide.columns))
            raise InputError(f"{path.name}: no column {col!r} ({what}); columns are {columns}")
    if wide.empty:
        raise InputError(f"{path.name} has a header but no data rows")
    assays = [c for c in wide.columns if c not in (smiles_col, id_col)]
    if not assays:
        raise InputError(f"{path.name}: no assay columns besides {smiles_col!r}")
    if id_col is None:
        ids = pd.Series([f"C{i:06d}" for i in range(len(wide))])
    else:
        ids = wide[id_col].astype(str).str.strip()
        bad = (ids == "") | ids.duplicated(keep=False)
        if bad.any():
            row = int(np.flatnonzero(bad)[0]) + 1
            raise InputError(f"{path.name}: column {id_col} must hold unique, non-empty ids "
                             f"(row {row}: {ids.iat[row - 1]!r}); leave --id-col out to number compounds")
    forced = set(assays) if binary is True else set() if binary is False or binary is None else set(binary)
    unknown = forced - set(assays)
    if unknown:
        raise InputError(f"{path.name}: --binary names unknown column(s) {sorted(unknown)}")

    t0_rows, t1_parts, skipped = [], [], []
    for col in assays:
        column = wide[col]
        text = column.astype(object).where(column.notna(), "").astype(str).str.strip()
        values = pd.to_numeric(text.replace("", np.nan), errors="coerce").astype(float)
        wrong = (text != "") & ~np.isfinite(values)
        if wrong.any() and wrong.sum() == (text != "").sum():
            raise InputError(f"{path.name}: column {col!r} holds no number (row 1: {text.iat[0]!r}); if it is an "
                             f"id or name column, pass --id-col {col} or remove it from the table")
        if wrong.any():
            row = int(np.flatnonzero(wrong)[0]) + 1
            raise InputError(f"{path.name}: column {col!r} holds a non-numeric value (row {row}: "
                             f"{text.iat[row - 1]!r}); assay columns must be numbers or empty")
        tested = values.notna().to_numpy()
        if not tested.any():
            skipped.append(str(col))
            continue
        is_binary = bool(values[tested].isin([0.0, 1.0]).all()) if binary is None else col in forced
        if is_binary and not values[tested].isin([0.0, 1.0]).all():
            raise InputError(f"{path.name}: column {col!r} is declared binary but holds values other than 0/1")
        assay_id = len(t0_rows) + 1
        t0_rows.append({"input_assay_id": assay_id, "assay_type": assay_type, "use_in_regression": not is_binary,
                        "is_binary": is_binary, "assay_name_META": str(col)})
        v = values[tested].to_numpy()
        t1_parts.append(pd.DataFrame({
            "input_compound_id": ids[tested].to_numpy(), "input_assay_id": assay_id, "standard_qualifier": "=",
            "standard_value": np.where(v > 0, 1, -1) if is_binary else v,
        }))
    if not t0_rows:
        raise InputError(f"{path.name}: no assay column holds any value")
    t0 = pd.DataFrame(t0_rows)
    for col in T0_OPTIONAL:
        if col not in t0:
            t0[col] = "high" if col == "direction" else None
    t0 = t0[["input_assay_id", "assay_type", "use_in_regression", "is_binary", *T0_OPTIONAL, "assay_name_META"]]
    t1 = pd.concat(t1_parts, ignore_index=True)
    t1["standard_value"] = t1["standard_value"].astype(object)
    t2 = pd.DataFrame({"input_compound_id": ids.to_numpy(), "smiles": wide[smiles_col].astype(str).to_numpy()})
    out = writable_dir(out_dir, "--out")
    write_atomic(out / "T0.csv", lambda p: t0.to_csv(p, index=False))
    write_atomic(out / "T1.csv.gz", lambda p: t1.to_csv(p, index=False, compression={"method": "gzip", "mtime": 0}))
    write_atomic(out / "T2.csv", lambda p: t2.to_csv(p, index=False))
    return {
        "compounds": len(t2), "binary_assays": int(t0["is_binary"].sum()),
        "dose_response_assays": int((~t0["is_binary"]).sum()), "records": len(t1), "skipped_columns": skipped,
        "out": str(out),
    }
