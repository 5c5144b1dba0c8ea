"""A local cache of standardized structures, so re-runs only standardize what is new.

Keyed by a content hash of the input SMILES; one SQLite file per namespace (standardization profile,
fingerprint shape, RDKit and code version — see `featurize.cache_namespace`), so a changed plan or kit never
reads stale results. Entries hold no key-dependent data (columns are permuted and folds assigned after
lookup), but they do hold structures: the cache stays on the partner's machine like the inputs.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path

from data_prep.errors import InputError
from data_prep.featurize import MolRecord
from data_prep.paths import writable_dir

_BATCH = 900  # below SQLite's default limit of bound parameters per statement


def default_cache_dir() -> Path:
    env = os.environ.get("FEDQSAR_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fedqsar"


def smiles_key(smiles: str) -> bytes:
    return hashlib.sha256(smiles.encode("utf-8", "surrogatepass")).digest()[:16]


class RecordCache:
    """SQLite-backed map: input SMILES hash -> MolRecord, for one namespace."""

    def __init__(self, directory: str | Path, namespace: str) -> None:
        """Open (or create) the namespace's database; a cache that cannot be used is an InputError naming it."""
        directory = Path(directory)
        writable_dir(directory, "--cache")
        self.path = directory / f"standardized-{namespace[:24]}.sqlite"
        try:
            self.db = sqlite3.connect(self.path, timeout=120)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS records (key BLOB PRIMARY KEY, smiles TEXT, error TEXT, "
                "scaffold TEXT NOT NULL, fp_idx BLOB NOT NULL, fp_cnt BLOB NOT NULL, "
                "network_scaffold TEXT NOT NULL) WITHOUT ROWID"
            )
            self.db.execute("SELECT key, smiles, error, scaffold, fp_idx, fp_cnt, network_scaffold FROM records "
                            "LIMIT 1").fetchall()
            self.db.commit()
        except sqlite3.Error as exc:
            raise InputError(f"--cache {directory}: {self.path.name} is not a usable cache database ({exc}); "
                             "delete that file (it only holds recomputable results) or run with --no-cache") from None

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, MolRecord]:
        found: dict[bytes, MolRecord] = {}
        for start in range(0, len(keys), _BATCH):
            batch = keys[start : start + _BATCH]
            marks = ",".join("?" * len(batch))
            rows = self.db.execute(
                "SELECT key, smiles, error, scaffold, fp_idx, fp_cnt, network_scaffold FROM records "
                f"WHERE key IN ({marks})", batch,
            )
            for key, *fields in rows:
                found[key] = MolRecord(*fields)
        return found

    def put_many(self, items: Iterable[tuple[bytes, MolRecord]]) -> None:
        self.db.executemany(
            "INSERT OR REPLACE INTO records VALUES (?, ?, ?, ?, ?, ?, ?)", ((k, *r) for k, r in items)
        )
        self.db.commit()

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> RecordCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
