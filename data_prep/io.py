"""Reading the partner's input files (T0 assays, T1 activities, T2 structures) as CSV, CSV.gz or Parquet.

Everything is read as text first, so a value of the wrong type becomes a clear message naming the file,
column and row instead of a silent cast. File-level problems (missing file or column, empty file, a column
whose values are all of the wrong type) raise InputError; row-level problems are left to `validate`.
Row numbers in messages and in `rejected.parquet` count data rows from 1 (the header is not a row).
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from data_prep.errors import InputError

SUFFIXES = (".csv", ".csv.gz", ".parquet")

T0_REQUIRED = ("input_assay_id", "assay_type", "use_in_regression", "is_binary")
T0_OPTIONAL = (
    "expert_threshold_1", "expert_threshold_2", "expert_threshold_3", "expert_threshold_4",
    "expert_threshold_5", "direction", "catalog_assay_id", "parent_assay_id",
)
T1_REQUIRED = ("input_compound_id", "input_assay_id", "standard_qualifier", "standard_value")
T2_REQUIRED = ("input_compound_id", "smiles")
REQUIRED = {"T0": T0_REQUIRED, "T1": T1_REQUIRED, "T2": T2_REQUIRED}


@dataclass
class InputTable:
    """One input file read as text; `row` numbers data rows from 1."""

    name: str  # T0, T1 or T2
    path: Path
    frame: pd.DataFrame

    @property
    def label(self) -> str:
        return self.path.name

    def example(self, column: str, mask: pd.Series | None = None) -> str:
        """`row N: column='value'` for the first row matching `mask` (or the first row)."""
        frame = self.frame if mask is None else self.frame[mask]
        if frame.empty:
            return "no rows"
        pos = frame.index[0]
        return f"row {pos + 1}: {column}={self.frame.at[pos, column]!r}"


def find_input(directory: str | Path, name: str) -> Path:
    """The one file `name`.csv / .csv.gz / .parquet in `directory`."""
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"input directory {directory} not found; it must hold T0, T1 and T2 files")
    found = [directory / f"{name}{s}" for s in SUFFIXES if (directory / f"{name}{s}").is_file()]
    if not found:
        raise InputError(
            f"{directory} has no {name} file; expected one of "
            + ", ".join(f"{name}{s}" for s in SUFFIXES)
        )
    if len(found) > 1:
        raise InputError(f"{directory} holds several {name} files ({', '.join(p.name for p in found)}); keep one")
    return found[0]


#: CSV rows parsed per block. The parser builds a Python string per cell before pandas packs a block into
#: compact Arrow strings, so reading in blocks bounds that transient (≈ 4 GB at 20 M T1 rows read whole).
READ_BLOCK_ROWS = 500_000


def read_text_frame(path: Path, *, header: str) -> pd.DataFrame:
    """A CSV/CSV.gz (every cell as text, '' when empty) or Parquet table; an empty or unreadable file becomes
    an InputError naming it. `header` says what the file's header needs, for the empty-file message."""
    try:
        if path.name.endswith(".parquet"):
            return pd.read_parquet(path)
        with pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8",
                         chunksize=READ_BLOCK_ROWS) as blocks:
            parts = list(blocks)
        return parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)
    except pd.errors.EmptyDataError:
        raise InputError(f"{path.name} is empty; {header}") from None
    except UnicodeDecodeError:
        raise InputError(f"{path.name} is not UTF-8 text; save it as UTF-8 CSV") from None
    except (EOFError, zlib.error):  # click would print a bare "Aborted." for an EOFError
        raise InputError(f"{path} is truncated or corrupt (the compressed data ends early); copy or export "
                         "it again") from None
    except (pd.errors.ParserError, ValueError, OSError) as exc:
        raise InputError(f"{path.name} cannot be read: {str(exc).strip()}") from None


def read_table(path: str | Path, name: str) -> InputTable:
    """Read one input file as strings ('' for empty cells), checking it is readable, non-empty and complete."""
    path = Path(path)
    frame = read_text_frame(path, header=f"it needs a header line with the columns {', '.join(REQUIRED[name])}")
    if path.name.endswith(".parquet"):
        # the CSV path's dtype (compact Arrow strings), not a Python object per cell
        frame = frame.astype("string").fillna("").astype(str)
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in REQUIRED[name] if c not in frame.columns]
    if missing:
        raise InputError(
            f"{path.name}: missing column(s) {', '.join(missing)}; found {', '.join(frame.columns) or 'none'}. "
            f"{name} needs {', '.join(REQUIRED[name])} (MELLODDY-TUNER names)"
        )
    if frame.empty:
        raise InputError(f"{path.name} has a header but no data rows")
    for column in frame.columns:
        frame[column] = frame[column].str.strip()
    return InputTable(name, path, frame.reset_index(drop=True))


def read_inputs(directory: str | Path) -> dict[str, InputTable]:
    return {name: read_table(find_input(directory, name), name) for name in ("T0", "T1", "T2")}


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
