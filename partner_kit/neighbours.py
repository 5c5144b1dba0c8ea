"""Based on what: the partner's most similar measured training compounds for a query molecule.

Tanimoto similarity on the keyed fingerprints (bits = non-zero columns, as `predict.max_tanimoto`), against the
training rows of the partner's own prepared directory (the test fold left out, as for the applicability domain).
Structures and labels come from that directory and stay at the partner.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from data_prep.prepared import PreparedData


def tanimoto(query: sp.csr_matrix, reference: sp.csr_matrix) -> np.ndarray:
    """Dense (n_query x n_reference) Tanimoto similarities of the rows' non-zero patterns."""
    q = (query > 0).astype(np.float32).tocsr()
    r = (reference > 0).astype(np.float32).tocsr()
    inter = (q @ r.T).toarray()
    union = np.asarray(q.sum(axis=1)).reshape(-1, 1) + np.asarray(r.sum(axis=1)).reshape(1, -1) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def nearest(query: sp.csr_matrix, reference: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(reference indices, similarities) of the k most similar rows per query; ties broken by lower index."""
    sim = tanimoto(query, reference)
    k = min(int(k), reference.shape[0])
    order = np.lexsort((np.broadcast_to(np.arange(sim.shape[1]), sim.shape), -sim), axis=1)[:, :k]
    return order, np.take_along_axis(sim, order, axis=1)


@dataclass
class Neighbour:
    row: int                      # matrix row in the prepared directory
    similarity: float
    smiles: str                   # standardized SMILES from compounds.parquet
    compound_ids: list[str]
    measurements: dict[int, str]  # task position -> "active" / "inactive" / "< 5.2" / "6.1"


class TrainingSet:
    """The training rows of a prepared directory, their structures and labels, for neighbour look-ups."""

    def __init__(self, data: PreparedData, test_fold: int | None) -> None:
        keep = np.asarray(data.folds) != test_fold if test_fold is not None else np.ones(data.n_rows, dtype=bool)
        self.rows = np.flatnonzero(keep)
        self.x = data.x[self.rows].tocsr()
        self.compounds = data.compounds
        self.y_class = data.y_class.tocsr()
        self.y_regr = data.y_regr.tocsr()
        self.y_censor = data.y_censor.tocsr()
        self.n_class = data.y_class.shape[1]

    def measurements(self, row: int) -> dict[int, str]:
        out: dict[int, str] = {}
        yc = self.y_class[row]
        for col, value in zip(yc.indices, yc.data, strict=True):
            out[int(col)] = "active" if value > 0 else "inactive"
        yr, cz = self.y_regr[row], self.y_censor[row]
        flags = dict(zip(cz.indices.tolist(), cz.data.tolist(), strict=True))
        for col, value in zip(yr.indices, yr.data, strict=True):
            op = {-1: "< ", 1: "> "}.get(flags.get(int(col), 0), "")
            out[self.n_class + int(col)] = f"{op}{value:.3g}"
        return out

    def neighbours(self, x: sp.csr_matrix, k: int = 5) -> list[Neighbour]:
        """The k most similar training compounds of one query row."""
        if self.x.shape[0] == 0:
            return []
        idx, sim = nearest(x, self.x, k)
        out = []
        for i, s in zip(idx[0], sim[0], strict=True):
            row = int(self.rows[i])
            out.append(Neighbour(row=row, similarity=float(s), smiles=self._smiles(row),
                                 compound_ids=self._ids(row), measurements=self.measurements(row)))
        return out

    def _smiles(self, row: int) -> str:
        return "" if self.compounds is None else str(self.compounds["smiles"].iloc[row])

    def _ids(self, row: int) -> list[str]:
        if self.compounds is None or "input_compound_ids" not in self.compounds.columns:
            return []
        ids: Any = self.compounds["input_compound_ids"].iloc[row]
        return [str(i) for i in (ids if isinstance(ids, list | tuple | np.ndarray) else [ids])]


def neighbours_frame(neighbours: list[Neighbour], labels: list[str]) -> pd.DataFrame:
    """One row per neighbour: similarity, structure, ids and its measurement for each task (blank if none)."""
    return pd.DataFrame([{"row": n.row, "similarity": round(n.similarity, 3), "smiles": n.smiles,
                          "compound_ids": " ".join(n.compound_ids),
                          **{label: n.measurements.get(j, "") for j, label in enumerate(labels)}}
                         for n in neighbours])
