"""Output and cache locations checked up front, so a bad `--out` or `--cache` is one clear message before any
work is done, not a traceback at the end of a long run."""

from __future__ import annotations

import tempfile
from pathlib import Path

from data_prep.errors import InputError


def check_out_dir(path: str | Path, option: str = "--out") -> Path:
    """Prove `path` can be created (or written) as a directory without creating it: its nearest existing
    ancestor must be a directory we can write in. InputError otherwise."""
    path = Path(path).absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        where = "is a file" if existing == path else f"is under {existing}, which is a file"
        raise InputError(f"{option} {path} {where}; give a directory path")
    try:
        with tempfile.TemporaryFile(dir=existing, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise InputError(f"{option} {path} cannot be written ({exc.strerror or exc} in {existing}); choose a "
                         "directory you can write to") from None
    return Path(path)


def writable_dir(path: str | Path, option: str = "--out") -> Path:
    """Create `path` as a directory (with its parents) after `check_out_dir`; InputError when impossible."""
    check_out_dir(path, option)
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{option} {path} cannot be created ({exc.strerror or exc}); choose a directory you "
                         "can write to") from None
    return Path(path)
