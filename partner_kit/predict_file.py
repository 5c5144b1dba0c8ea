"""A file of molecules to a predictions CSV one chunk at a time: memory flat in the input's size.

Each chunk of the input (`molecule_files.iter_molecules`) is predicted and appended to a temporary file beside
`--out`, which replaces `--out` only when every chunk is written (atomic: a failure leaves the old file). A
molecule's row never depends on its chunk (prediction is per molecule), and rows keep input order and numbers,
so the CSV equals the one written from the whole input at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from data_prep.atomic import write_atomic
from data_prep.errors import InputError
from partner_kit.molecule_files import CHUNK_MOLECULES, iter_molecules
from partner_kit.predict import Predictor


@dataclass
class Written:
    """What `predict_file` wrote: molecules, how many failed (error column), seconds."""

    molecules: int = 0
    failed: int = 0
    seconds: float = 0.0


def predict_file(predictor: Predictor, input_path: str | Path, out: str | Path, *,
                 chunk_size: int = CHUNK_MOLECULES,
                 progress: Callable[[Written], None] | None = None) -> Written:
    """Predict every molecule of `input_path` into the CSV `out`; `progress` is called after each chunk."""
    written = Written()
    start = time.perf_counter()

    def write(tmp: Path) -> None:
        with tmp.open("w", encoding="utf-8", newline="") as handle:
            for chunk in iter_molecules(input_path, chunk_size):
                result = predictor.predict(chunk)
                try:
                    result.write_csv(handle, header=written.molecules == 0)
                except OSError as exc:
                    raise InputError(f"cannot write --out {out}: {exc.strerror or exc}") from None
                written.molecules += len(result)
                written.failed += sum(1 for error in result.meta["error"] if error)
                written.seconds = time.perf_counter() - start
                if progress is not None:
                    progress(written)

    try:
        write_atomic(out, write)
    except OSError as exc:
        raise InputError(f"cannot write --out {out}: {exc.strerror or exc}") from None
    return written
