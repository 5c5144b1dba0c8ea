"""Predictions for scientists: SMILES in, per-assay activity probabilities with a confidence out.

Confidence combines two things a chemist can check:
- the task's reliability: its held-out test AUC-ROC recorded in the model's `metrics.json`;
- the molecule's applicability domain: its largest Tanimoto similarity to the partner's training compounds,
  computed on the keyed fingerprints of a prepared directory (optional; nothing leaves the partner).
`high` needs AUC-ROC >= 0.8 and (if known) similarity >= 0.5; `low` means AUC-ROC < 0.7, a task that could not be
evaluated, or similarity < 0.3; everything else is `medium`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from consortium.plan import Plan
from data_prep.errors import InputError
from data_prep.featurize import featurize_smiles
from data_prep.key import key_check_hash, load_key
from data_prep.prediction import read_frame
from data_prep.prepared import PreparedData
from partner_kit.batching import SparseBatch
from partner_kit.weights import METRICS_JSON, load_model

HIGH_AUC, LOW_AUC = 0.8, 0.7
HIGH_SIMILARITY, LOW_SIMILARITY = 0.5, 0.3
MAX_MOLECULES = 100_000


def task_label(task: dict[str, Any]) -> str:
    """A column name a scientist can read: assay id, and the activity threshold for classification tasks."""
    assay = task.get("input_assay_id")
    if task.get("kind") == "regression":
        return f"assay {assay} value"
    threshold = task.get("threshold")
    if threshold is None or (isinstance(threshold, float) and math.isnan(threshold)):
        return f"assay {assay} active"
    op = "<=" if str(task.get("direction", "high")).lower() in ("low", "down", "-1") else ">="
    return f"assay {assay} {op} {float(threshold):g}"


def confidence_level(auc_roc: float | None, similarity: float | None) -> str:
    if auc_roc is None or math.isnan(auc_roc) or auc_roc < LOW_AUC:
        return "low"
    if similarity is not None and not math.isnan(similarity) and similarity < LOW_SIMILARITY:
        return "low"
    sim_ok = similarity is None or math.isnan(similarity) or similarity >= HIGH_SIMILARITY
    return "high" if auc_roc >= HIGH_AUC and sim_ok else "medium"


def max_tanimoto(query: sp.csr_matrix, reference: sp.csr_matrix) -> np.ndarray:
    """Largest Tanimoto similarity of each query row to any reference row (bits = non-zero columns)."""
    q = (query > 0).astype(np.float32).tocsr()
    r = (reference > 0).astype(np.float32).tocsr()
    out = np.zeros(q.shape[0])
    if r.shape[0] == 0:
        return out
    q_bits = np.asarray(q.sum(axis=1)).ravel()
    r_bits = np.asarray(r.sum(axis=1)).ravel()
    for start in range(0, q.shape[0], 256):  # bounded memory: 256 queries x all references at a time
        inter = (q[start:start + 256] @ r.T).toarray()
        union = q_bits[start:start + 256, None] + r_bits[None, :] - inter
        with np.errstate(divide="ignore", invalid="ignore"):
            sim = np.where(union > 0, inter / union, 0.0)
        out[start:start + 256] = sim.max(axis=1)
    return out


@dataclass
class Prediction:
    """One table row per input molecule (in input order) and the task columns it holds."""

    table: pd.DataFrame
    task_columns: list[str]


class Predictor:
    """A partner's model ready to score SMILES; build once, call `predict` per request."""

    def __init__(self, model_dir: str | Path, key: str | Path | bytes, prepared: str | Path | None = None) -> None:
        self.model_dir = Path(model_dir)
        self.model, self.info = load_model(self.model_dir)
        self.plan = Plan.from_dict(self.info["plan"], source=str(self.model_dir / "model.json"))
        self.key = key if isinstance(key, bytes) else load_key(key)
        expected = (self.info.get("prepared_manifest") or {}).get("key_check_hash")
        if expected and expected != key_check_hash(self.key):
            raise InputError(f"the secret key does not match the one the model in {self.model_dir} was trained "
                             "with; use the consortium's secret.key")
        self.tasks = self.info["tasks"]
        self.labels = [task_label(t) for t in self.tasks]
        self.task_auc = self._task_auc()
        self.reference = self._training_fingerprints(prepared) if prepared else None

    def _task_auc(self) -> list[float]:
        path = self.model_dir / METRICS_JSON
        per_task = []
        if path.is_file():
            import json

            per_task = json.loads(path.read_text()).get("test_per_task") or []
        by_index = {row.get("task_index"): row.get("auc_roc") for row in per_task}
        return [float(by_index.get(t.get("task_index")) or math.nan) for t in self.tasks]

    def _training_fingerprints(self, prepared: str | Path) -> sp.csr_matrix:
        data = PreparedData.load(prepared)
        if data.manifest.get("plan_hash") not in (None, self.info["plan_hash"]):
            raise InputError(f"{prepared} was prepared under another plan than the model in {self.model_dir}")
        test_fold = self.info.get("test_fold")
        keep = data.folds != test_fold if test_fold is not None else np.ones(data.n_rows, dtype=bool)
        return data.x[np.flatnonzero(keep)]

    def predict(self, smiles: list[str], names: list[str] | None = None) -> Prediction:
        if len(smiles) > MAX_MOLECULES:
            raise InputError(f"{len(smiles)} molecules in one request; split the input into parts of "
                             f"at most {MAX_MOLECULES}")
        x, errors = featurize_smiles(smiles, self.plan.data, self.key)
        prob, values = (np.zeros((len(smiles), 0)), np.zeros((len(smiles), 0)))
        if len(smiles):
            p, v = self.model.predict(SparseBatch.from_csr(x.astype(np.float32)))
            prob, values = p.numpy(), v.numpy()
        similarity = max_tanimoto(x, self.reference) if self.reference is not None else None
        table = pd.DataFrame({
            "row": np.arange(1, len(smiles) + 1),
            "name": names if names is not None else [""] * len(smiles),
            "smiles": smiles,
            "error": [e or "" for e in errors],
        })
        failed = np.array([e is not None for e in errors], dtype=bool)
        if similarity is not None:
            table["max_similarity_to_training"] = np.where(failed, np.nan, np.round(similarity, 3))
        n_class = prob.shape[1]
        for j, (task, label) in enumerate(zip(self.tasks, self.labels, strict=True)):
            column = prob[:, j] if j < n_class else values[:, j - n_class]
            table[label] = np.where(failed, np.nan, np.round(column, 4))
            if task.get("kind") == "classification":
                table[f"{label} confidence"] = [
                    "" if bad else confidence_level(self.task_auc[j], None if similarity is None else similarity[i])
                    for i, bad in enumerate(failed)
                ]
        return Prediction(table=table, task_columns=self.labels)


def read_molecules(path: str | Path) -> tuple[list[str], list[str]]:
    """SMILES (and names) from .smi/.txt (SMILES [name] per line) or CSV/Parquet with a `smiles` column."""
    path = Path(path)
    if path.suffix.lower() in (".smi", ".txt"):
        if not path.is_file():
            raise InputError(f"input file {path} not found")
        try:
            lines = [ln.split(maxsplit=1) for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        except UnicodeDecodeError:
            raise InputError(f"{path} is not UTF-8 text; give one SMILES [name] per line") from None
        return [p[0] for p in lines], [p[1].strip() if len(p) > 1 else "" for p in lines]
    return molecules_from_frame(read_frame(path), str(path))


def molecules_from_frame(frame: pd.DataFrame, source: str) -> tuple[list[str], list[str]]:
    """SMILES from the `smiles` column (any case) and names from `name`, `id` or `compound_id` if present."""
    col = next((c for c in frame.columns if str(c).lower() == "smiles"), None)
    if col is None:
        raise InputError(f"{source} has no 'smiles' column (columns: {list(frame.columns)[:10]}); "
                         "add one, or pass a .smi file with one SMILES per line")
    name_col = next((c for c in frame.columns if str(c).lower() in ("name", "id", "compound_id")), None)
    smiles = frame[col].fillna("").astype(str).tolist()
    names = frame[name_col].fillna("").astype(str).tolist() if name_col else [""] * len(smiles)
    return smiles, names
