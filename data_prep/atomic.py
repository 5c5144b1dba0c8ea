"""Atomic file writes: a crash leaves either the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | Path, mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is fsynced and renamed over `path`.

    The file keeps mkstemp's owner-only mode 0600 (partner outputs are private by default) unless `mode` says
    otherwise, e.g. 0o644 for a public file such as the consortium plan.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if mode is not None:
            os.chmod(tmp_path, mode)
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_atomic(path: str | Path, writer: Callable[[Path], object], mode: int | None = None) -> Path:
    """Call `writer(tmp_path)` and move the result into place (`mode`: see atomic_path)."""
    with atomic_path(path, mode) as tmp:
        writer(tmp)
    return Path(path)


def write_bytes_atomic(path: str | Path, data: bytes, mode: int | None = None) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_bytes(data), mode)


def write_text_atomic(path: str | Path, text: str, mode: int | None = None) -> Path:
    return write_bytes_atomic(path, text.encode(), mode)
