"""Files of molecules read a chunk at a time, so `partner-kit predict` holds one chunk of an input of any size.

.smi/.txt (`SMILES [name]` per line), .sdf (one record per molecule) and CSV/CSV.gz/Parquet tables with a
`smiles` column are read lazily (lines, 1 MiB of SD text, pandas' or pyarrow's chunked readers). Every chunk
numbers its rows as the whole file would (input line for .smi, record for .sdf, data row for tables), so a
chunked prediction equals the one of the whole file; `partner_kit.predict.read_molecules` is these chunks joined.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TextIO

import pandas as pd

from data_prep.errors import InputError
from partner_kit.predict import MAX_SD_LINES, Molecules, numbered_smiles, sd_record_molecule

CHUNK_MOLECULES = 500  # molecules per chunk: ~40 MB of per-task values at 2,000 tasks
_READ_BYTES = 1 << 20


def iter_molecules(path: str | Path, chunk_size: int = CHUNK_MOLECULES) -> Iterator[Molecules]:
    """The file's molecules in input order, at most `chunk_size` per chunk (none empty); an InputError for a
    missing, unreadable or molecule-less file (possibly after earlier chunks were yielded)."""
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    path = Path(path)
    if not path.is_file():
        raise InputError(f"input file {path} not found")
    suffix = path.suffix.lower()
    if suffix in (".smi", ".txt"):
        chunks = _smi_chunks(path, chunk_size)
    elif suffix == ".sdf":
        chunks = _sdf_chunks(path, chunk_size)
    elif path.name.lower().endswith(".parquet"):
        chunks = _parquet_chunks(path, chunk_size)
    else:
        chunks = _csv_chunks(path, chunk_size)
    empty = True
    for chunk in chunks:
        if chunk.smiles:
            empty = False
            yield chunk
    if empty:
        raise InputError(f"{path} holds no molecules; give one SMILES per line or a table with a 'smiles' column")


def _batched(items: Iterable[tuple[int, str, str, str | None]], size: int, errors: bool) -> Iterator[Molecules]:
    """(row, smiles, name, error) tuples as Molecules of at most `size`."""
    chunk = Molecules([], [], [], [] if errors else None)
    for row, smiles, name, error in items:
        chunk.rows.append(row)
        chunk.smiles.append(smiles)
        chunk.names.append(name)
        if chunk.errors is not None:
            chunk.errors.append(error)
        if len(chunk.rows) == size:
            yield chunk
            chunk = Molecules([], [], [], [] if errors else None)
    yield chunk


@contextlib.contextmanager
def _text_errors(path: Path, what: str) -> Iterator[None]:
    try:
        yield
    except UnicodeDecodeError:
        raise InputError(f"{path} is not UTF-8 text; {what}") from None
    except OSError as exc:
        raise InputError(f"{path} cannot be read: {exc.strerror or exc}") from None


def _smi_chunks(path: Path, size: int) -> Iterator[Molecules]:
    with _text_errors(path, "give one SMILES [name] per line"), path.open(encoding="utf-8") as handle:
        yield from _batched(((row, s, name, None) for row, s, name in numbered_smiles(handle)), size, False)


def sd_records(handle: TextIO, max_lines: int = MAX_SD_LINES, read_size: int = _READ_BYTES) -> Iterator[str]:
    """The text between `$$$$` separators, as `text.split("$$$$")` gives it, read 1 MiB at a time.

    A record longer than `max_lines` lines keeps only its first lines (it is refused unparsed either way) and the
    rest is skipped, so one huge record never sits in memory.
    """
    buffer, head = "", None  # head: the first lines of an over-long record whose rest is being skipped
    blank = False  # whether all of that record read so far is whitespace (then a blank record, skipped later)

    def cut() -> str:  # the head, made non-blank (an extra line) when the record has text after it
        return head + "\n." if head is not None and not head.strip() and not blank else head or ""

    while data := handle.read(read_size):
        *records, buffer = (buffer + data).split("$$$$")
        for record in records:
            if head is not None:
                blank = blank and not record.strip()
                record, head = cut(), None
            yield record
        if head is not None:
            blank = blank and not buffer.strip()
            buffer = buffer[-3:]  # skipped, but for the start of a `$$$$` split across two reads
        elif buffer.count("\n") > max_lines + 1:
            start = len(buffer) - len(buffer.lstrip("\r\n"))  # leading newlines are not the record's lines
            lines = buffer[start:].split("\n", max_lines + 2)
            if len(lines) > max_lines + 2:
                head, blank = buffer[:start] + "\n".join(lines[:max_lines + 2]), not buffer.strip()
                buffer = buffer[-3:]
    if head is not None:
        blank = blank and not buffer.strip()
        buffer = cut()
    yield buffer


def _sdf_chunks(path: Path, size: int) -> Iterator[Molecules]:
    source = str(path)

    def molecules() -> Iterator[tuple[int, str, str, str | None]]:
        number = 0
        with path.open(encoding="utf-8") as handle:
            for record in sd_records(handle):
                if record.strip():
                    number += 1
                    smiles, name, error = sd_record_molecule(record, number, source)
                    yield number, smiles, name, error

    with _text_errors(path, "an SD file is text"):
        yield from _batched(molecules(), size, True)


def _columns(columns: list[str], source: str) -> tuple[str, str | None]:
    """The `smiles` column (any case) and the name column (`name`, `id` or `compound_id`), if any."""
    col = next((c for c in columns if str(c).lower() == "smiles"), None)
    if col is None:
        raise InputError(f"{source} has no 'smiles' column (columns: {list(columns)[:10]}); "
                         "add one, or pass a .smi file with one SMILES per line")
    return col, next((c for c in columns if str(c).lower() in ("name", "id", "compound_id")), None)


def _frame_chunk(frame: pd.DataFrame, col: str, name_col: str | None, first_row: int) -> Molecules:
    smiles = frame[col].fillna("").astype(str).tolist()
    names = frame[name_col].fillna("").astype(str).tolist() if name_col else [""] * len(smiles)
    return Molecules(smiles, names, list(range(first_row, first_row + len(smiles))))


@contextlib.contextmanager
def _table_errors(path: Path) -> Iterator[None]:
    """The messages `data_prep.io.read_text_frame` gives for a file it cannot read as a whole."""
    try:
        yield
    except pd.errors.EmptyDataError:
        raise InputError(f"{path.name} is empty; expected a header with a 'smiles' column") from None
    except UnicodeDecodeError:
        raise InputError(f"{path.name} is not UTF-8 text; save it as UTF-8 CSV") from None
    except (EOFError, zlib.error):
        raise InputError(f"{path} is truncated or corrupt (the compressed data ends early); copy or export "
                         "it again") from None
    except (pd.errors.ParserError, ValueError, OSError) as exc:
        raise InputError(f"{path.name} cannot be read: {str(exc).strip()}") from None


def _csv_chunks(path: Path, size: int) -> Iterator[Molecules]:
    options = dict(dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8")
    with _table_errors(path):
        col, name_col = _columns(list(pd.read_csv(path, nrows=0, **options).columns), str(path))
        row = 1
        with pd.read_csv(path, chunksize=size, usecols=[c for c in (col, name_col) if c], **options) as reader:
            for frame in reader:
                yield _frame_chunk(frame, col, name_col, row)
                row += len(frame)


def _parquet_chunks(path: Path, size: int) -> Iterator[Molecules]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    with _table_errors(path):
        try:
            handle = pq.ParquetFile(path)
        except pa.ArrowException as exc:
            raise InputError(f"{path.name} cannot be read: {str(exc).strip()}") from None
        col, name_col = _columns(list(handle.schema_arrow.names), str(path))
        row = 1
        for batch in handle.iter_batches(batch_size=size, columns=[c for c in (col, name_col) if c]):
            frame = batch.to_pandas()
            yield _frame_chunk(frame, col, name_col, row)
            row += len(frame)
