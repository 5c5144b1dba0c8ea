"""Output and cache locations checked up front, so a bad `--out` or `--cache` is one clear message before any
work is done, not a traceback at the end of a long run."""

from __future__ import annotations

import tempfile
from pathlib import Path

from data_prep.errors import InputError


def writable_dir(path: str | Path, option: str = "--out") -> Path:
    """Create `path` as a directory (with its parents) and prove it can be written; InputError otherwise."""
    path = Path(path)
    for existing in (path, *path.parents):
        if existing.exists():
            if not existing.is_dir():
                where = "is a file" if existing == path else f"is under {existing}, which is a file"
                raise InputError(f"{option} {path} {where}; give a directory path")
            break
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise InputError(f"{option} {path} cannot be written ({exc.strerror or exc}); choose a directory you "
                         "can write to") from None
    return path
