"""`data-prep prepare-smiles`: SMILES for prediction -> keyed fingerprint rows, every input kept in place.

Uses the same standardization and keyed fingerprint as `prepare`, so a model trained on prepared data
reads these rows directly. A molecule that fails keeps an empty row and an error; no row depends on the
other molecules of the batch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from data_prep.atomic import write_atomic
from data_prep.errors import InputError
from data_prep.fingerprint import keyed_csr
from data_prep.io import read_text_frame
from data_prep.parallel import compute_records
from data_prep.paths import writable_dir
from data_prep.prepare import resolve_config, resolve_key


def read_frame(path: str | Path, smiles_col: str = "smiles") -> pd.DataFrame:
    """A CSV/CSV.gz (all text) or Parquet table; unreadable or empty files become InputErrors, not tracebacks."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"input file {path} not found")
    return read_text_frame(path, header=f"expected a header with a {smiles_col!r} column")


def read_smiles_table(path: str | Path, smiles_col: str = "smiles", id_col: str | None = None) -> pd.DataFrame:
    """A table with a `smiles` column (and `id` when asked) from CSV/CSV.gz/Parquet or a .smi/.txt list.

    A `.smi` line is a SMILES optionally followed by whitespace and a name (the SMILES file format), so only
    its first word is the structure. Everywhere else a cell or a `.txt` line is the structure as a whole: text
    after a space is not silently dropped but makes the row fail with its reason."""
    path = Path(path)
    if path.suffix in (".smi", ".txt"):
        if not path.is_file():
            raise InputError(f"input file {path} not found")
        try:
            lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        except (UnicodeDecodeError, OSError) as exc:
            raise InputError(f"{path.name} cannot be read: {str(exc).strip()}") from None
        named = path.suffix == ".smi"
        frame = pd.DataFrame({smiles_col: [line.split()[0] if line and named else line for line in lines]})
        frame = frame[[bool(line) for line in lines]].reset_index(drop=True)
    else:
        frame = read_frame(path, smiles_col)
    for col, option in ((smiles_col, "--smiles-col"), (id_col, "--id-col")):
        if col is not None and col not in frame.columns:
            raise InputError(f"{path.name}: no column {col!r} ({option}); columns are "
                             f"{', '.join(map(str, frame.columns))}")
    out = pd.DataFrame({"smiles": frame[smiles_col].astype(object).where(frame[smiles_col].notna(), "")
                        .astype(str).to_numpy()})
    if id_col is not None:
        out.insert(0, "id", frame[id_col].astype(str).to_numpy())
    return out


def write_prediction_rows(
    plan: Any, key: str | Path | bytes, input_file: str | Path, out_dir: str | Path, *,
    smiles_col: str = "smiles", id_col: str | None = None, n_jobs: int | None = 1,
) -> dict[str, int]:
    """Write x.npz (CSR float32, one row per input) and molecules.parquet (row, [id,] smiles,
    standardized_smiles, error)."""
    config = resolve_config(plan)
    key = resolve_key(key)
    if n_jobs is not None and n_jobs < 1:
        raise InputError(f"--jobs must be at least 1, got {n_jobs}")
    table = read_smiles_table(input_file, smiles_col, id_col)
    out = writable_dir(out_dir, "--out")
    records = compute_records(table["smiles"].tolist(), config, n_jobs=n_jobs, cache_dir=False, progress=True)
    x = keyed_csr([r.indices() for r in records], [r.counts() for r in records], config.fingerprint, key)
    table.insert(0, "row", np.arange(len(table), dtype=np.int64))
    table["standardized_smiles"] = [r.smiles for r in records]
    table["error"] = [r.error for r in records]

    def save_x(p: Path) -> None:
        with open(p, "wb") as fh:
            sp.save_npz(fh, x, compressed=True)

    write_atomic(out / "x.npz", save_x)
    write_atomic(out / "molecules.parquet", lambda p: table.to_parquet(p, index=False))
    return {"rows": len(table), "failed": int(table["error"].notna().sum())}
