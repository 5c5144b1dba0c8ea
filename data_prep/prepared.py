"""The prepared-directory contract between data_prep and partner_kit (see docs/design.md).

Matrices follow SparseChem's conventions: CSR float32 inputs, +1/-1 class labels with absent = unknown,
censor flags -1 '<', 0 '=', +1 '>' on the pattern of the regression values, an int8 fold vector.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from data_prep.atomic import write_atomic, write_text_atomic
from data_prep.errors import InputError

FILES = (
    "manifest.json", "x.npz", "folds.npy", "y_class.npz", "y_regr.npz", "y_censor.npz",
    "tasks.parquet", "compounds.parquet", "rejected.parquet",
)

TASK_COLUMNS = (
    "task_index", "kind", "input_assay_id", "threshold", "direction",
    "training_weight", "aggregation_weight", "censored_weight",
)
REJECT_COLUMNS = ("file", "row", "id", "stage", "reason")


@dataclass
class PreparedData:
    """One partner's model-ready data. `tasks` lists classification tasks first, then regression tasks."""

    x: sp.csr_matrix
    folds: np.ndarray
    y_class: sp.csr_matrix
    y_regr: sp.csr_matrix
    y_censor: sp.csr_matrix
    tasks: pd.DataFrame
    manifest: dict[str, Any] = field(default_factory=dict)
    compounds: pd.DataFrame | None = None
    rejected: pd.DataFrame | None = None

    @property
    def n_rows(self) -> int:
        return self.x.shape[0]

    @property
    def n_features(self) -> int:
        return self.x.shape[1]

    @property
    def class_tasks(self) -> pd.DataFrame:
        return self.tasks[self.tasks["kind"] == "classification"]

    @property
    def regr_tasks(self) -> pd.DataFrame:
        return self.tasks[self.tasks["kind"] == "regression"]

    def validate(self, source: str = "prepared data") -> None:
        """Check the shapes and value conventions agree; raise InputError naming what is off."""
        n = self.n_rows
        checks = [
            (self.folds.shape == (n,), f"folds.npy has {self.folds.shape[0]} entries for {n} rows"),
            (self.y_class.shape[0] == n, f"y_class.npz has {self.y_class.shape[0]} rows, x has {n}"),
            (self.y_regr.shape[0] == n, f"y_regr.npz has {self.y_regr.shape[0]} rows, x has {n}"),
            (self.y_censor.shape == self.y_regr.shape, "y_censor.npz and y_regr.npz shapes differ"),
            (self.y_class.shape[1] == len(self.class_tasks),
             f"y_class.npz has {self.y_class.shape[1]} columns, tasks.parquet {len(self.class_tasks)} class tasks"),
            (self.y_regr.shape[1] == len(self.regr_tasks),
             f"y_regr.npz has {self.y_regr.shape[1]} columns, tasks.parquet {len(self.regr_tasks)} regression tasks"),
            (bool(np.isin(self.y_class.data, (-1.0, 1.0)).all()), "y_class.npz holds labels other than +1/-1"),
        ]
        for ok, msg in checks:
            if not ok:
                raise InputError(f"{source}: {msg}; re-run `data-prep prepare`")

    def save(self, out: str | Path) -> Path:
        """Write every file atomically; the manifest goes last so its presence means a complete directory."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        self.validate()
        write_atomic(out / "x.npz", lambda p: _save_npz(p, self.x.astype(np.float32)))
        write_atomic(out / "folds.npy", lambda p: _save_npy(p, self.folds.astype(np.int8)))
        write_atomic(out / "y_class.npz", lambda p: _save_npz(p, self.y_class.astype(np.float32)))
        write_atomic(out / "y_regr.npz", lambda p: _save_npz(p, self.y_regr.astype(np.float32)))
        write_atomic(out / "y_censor.npz", lambda p: _save_npz(p, self.y_censor.astype(np.int8)))
        frames = {"tasks": self.tasks, "compounds": self.compounds, "rejected": self.rejected}
        for name, frame in frames.items():
            if frame is None:
                frame = pd.DataFrame(columns=list(REJECT_COLUMNS)) if name == "rejected" else pd.DataFrame()
            write_atomic(out / f"{name}.parquet", lambda p, f=frame: f.to_parquet(p, index=False))
        write_text_atomic(out / "manifest.json", json.dumps(self.manifest, indent=2, default=str) + "\n")
        return out

    @classmethod
    def load(cls, path: str | Path, with_compounds: bool = False) -> PreparedData:
        """Load a prepared directory; the compound table (structures, ids) only when asked for."""
        path = Path(path)
        if not (path / "manifest.json").is_file():
            raise InputError(
                f"{path} is not a prepared directory (no manifest.json); "
                f"create it with `data-prep prepare --out {path}`"
            )
        missing = [f for f in FILES if not (path / f).is_file()]
        if missing:
            raise InputError(f"{path} is incomplete, missing {missing}; re-run `data-prep prepare`")
        data = cls(
            x=sp.load_npz(path / "x.npz").tocsr(),
            folds=np.load(path / "folds.npy", allow_pickle=False),
            y_class=sp.load_npz(path / "y_class.npz").tocsr(),
            y_regr=sp.load_npz(path / "y_regr.npz").tocsr(),
            y_censor=sp.load_npz(path / "y_censor.npz").tocsr(),
            tasks=pd.read_parquet(path / "tasks.parquet"),
            manifest=json.loads((path / "manifest.json").read_text()),
            compounds=pd.read_parquet(path / "compounds.parquet") if with_compounds else None,
        )
        data.validate(source=str(path))
        return data


def _save_npz(path: Path, matrix: sp.spmatrix) -> None:
    with open(path, "wb") as fh:
        sp.save_npz(fh, sp.csr_matrix(matrix), compressed=True)


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as fh:
        np.save(fh, array, allow_pickle=False)
