"""The consistency hash: every partner prepares the same public reference set and compares one SHA-256.

Equal hashes mean equal plan, key, kit behaviour (RDKit version included, through its outputs) and
therefore equal fingerprint columns and folds everywhere; the hash reveals neither key nor data. It covers
the plan hash, the key check hash and the content of every prepared matrix and table — not timings, paths,
dates or cache statistics, which legitimately differ between machines.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from data_prep.prepare import prepare, resolve_config

REFERENCE_DIR = Path(__file__).resolve().parent / "reference"
HASH_VERSION = b"fedqsar reference hash v1"


def prepared_hash(directory: str | Path) -> str:
    """SHA-256 over the plan hash, key check hash and canonical bytes of a prepared directory's content."""
    directory = Path(directory)
    manifest = json.loads((directory / "manifest.json").read_text())
    digest = hashlib.sha256(HASH_VERSION)

    def put(name: str, payload: bytes) -> None:
        digest.update(name.encode() + b"\0" + len(payload).to_bytes(8, "big") + payload)

    put("plan_hash", manifest["plan_hash"].encode())
    put("data_config_hash", manifest["data_config_hash"].encode())
    put("key_check_hash", manifest["key_check_hash"].encode())
    for name, dtype in (("x", np.float32), ("y_class", np.float32), ("y_regr", np.float32),
                        ("y_censor", np.int8)):
        m = sp.load_npz(directory / f"{name}.npz").tocsr()
        m.sort_indices()
        put(name + ".shape", np.asarray(m.shape, dtype="<i8").tobytes())
        put(name + ".indptr", m.indptr.astype("<i8").tobytes())
        put(name + ".indices", m.indices.astype("<i4").tobytes())
        put(name + ".data", m.data.astype(np.dtype(dtype).newbyteorder("<")).tobytes())
    put("folds", np.load(directory / "folds.npy", allow_pickle=False).astype(np.int8).tobytes())
    tasks = pd.read_parquet(directory / "tasks.parquet")
    put("tasks", tasks.to_csv(index=False, float_format="%.9g").encode())
    compounds = pd.read_parquet(directory / "compounds.parquet")
    put("compounds", "\n".join(
        f"{s}\t{f}\t{'|'.join(ids)}" for s, f, ids in
        zip(compounds["smiles"], compounds["fold"], compounds["input_compound_ids"], strict=True)
    ).encode())
    return digest.hexdigest()


def reference_hash(plan: Any, key: str | Path | bytes, *, n_jobs: int | None = None,
                   keep: str | Path | None = None, cache_dir: str | Path | bool = False) -> str:
    """Prepare the shipped reference set and hash it.

    `keep`: a directory to leave the prepared reference in, for inspection. `cache_dir`: off by default,
    and the command line never uses it — the point is to exercise this kit's RDKit; tests pass one to
    avoid standardizing the same 549 molecules again and again.
    """
    config = resolve_config(plan)
    with tempfile.TemporaryDirectory(prefix="fedqsar-reference-") as tmp:
        out = Path(keep) if keep is not None else Path(tmp) / "prepared"
        prepare(config, key, REFERENCE_DIR, out, cache_dir=cache_dir, n_jobs=n_jobs, progress=False)
        return prepared_hash(out)
