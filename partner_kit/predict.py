"""Predictions for scientists: SMILES in, per-assay activity probabilities with a conformal confidence out.

Confidence is the conformal result (see `partner_kit.conformal`), which says what it promises: at significance ε
the prediction set ({active}, {inactive}, both, empty) holds the true label for at least 1 − ε of molecules of each
class like the calibration compounds; regression tasks get an interval with the same promise. The old
high/medium/low label is gone. With a prepared directory the page and CSV add the molecule's largest Tanimoto
similarity to the training compounds (how far it is from what the model has seen) and, per molecule, the nearest
measured training compounds. Nothing leaves the partner.

Every molecule is size-checked (raw length, heavy atoms of its largest fragment: the plan's limit) before RDKit
standardizes or draws it, so one huge SMILES cannot take the server down.
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from consortium.plan import Plan
from data_prep.errors import InputError
from data_prep.key import key_check_hash, load_key
from data_prep.prediction import read_frame
from data_prep.prepared import PreparedData
from partner_kit.batching import SparseBatch
from partner_kit.conformal import DEFAULT_SIGNIFICANCE, ConformalModel, prediction_set_matrix
from partner_kit.weights import load_model

MAX_MOLECULES = 100_000
DETAIL_TASKS = 12  # atom-contribution maps drawn by default in one molecule's detail view
CHARS_PER_HEAVY_ATOM = 20  # a raw SMILES longer than this many characters per allowed heavy atom is refused unread


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


def size_error(smiles: str, max_heavy_atoms: int) -> str | None:
    """Why a raw SMILES is too large to standardize, or None; cheap (no sanitization, no drawing).

    Heavy atoms are counted on the largest fragment, as the standardizer counts them after salt stripping, so
    this refuses nothing that `data-prep prepare` would accept (but for pathological mixtures).
    """
    max_chars = CHARS_PER_HEAVY_ATOM * max_heavy_atoms
    if len(smiles) > max_chars:
        return (f"SMILES of {len(smiles)} characters, longer than {max_chars} (the plan allows "
                f"{max_heavy_atoms} heavy atoms); not read")
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    raw = Chem.MolFromSmiles(smiles.strip(), sanitize=False) if smiles.strip() else None
    if raw is None:
        return None  # the standardizer gives the syntax error
    largest = max((sum(1 for i in fragment if raw.GetAtomWithIdx(i).GetAtomicNum() > 1)
                   for fragment in Chem.GetMolFrags(raw, asMols=False, sanitizeFrags=False)), default=0)
    if largest > max_heavy_atoms:
        return f"{largest} heavy atoms, more than max_heavy_atoms ({max_heavy_atoms}) of the plan"
    return None


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
class Molecules:
    """Input molecules in input order: SMILES, names, the 1-based input line/row each came from, and errors
    found while reading (e.g. an unreadable SD record), which keep their row."""

    smiles: list[str]
    names: list[str]
    rows: list[int]
    errors: list[str | None] | None = None

    @classmethod
    def of(cls, smiles: list[str], names: list[str] | None = None) -> Molecules:
        return cls(list(smiles), list(names) if names is not None else [""] * len(smiles),
                   list(range(1, len(smiles) + 1)))


@dataclass
class Prediction:
    """One row per input molecule (in input order) as named columns; `x` holds their keyed fingerprints.

    Columns stay plain arrays/lists: building a pandas frame of ~6,000 columns (2,000 tasks) costs more than
    predicting one molecule, so the API and the page read rows straight from the columns and only the CSV builds
    `table`.
    """

    columns: dict[str, Any]
    task_columns: list[str]
    x: sp.csr_matrix
    #: the per-task columns again as 2-D blocks (names, molecules x names): `records` converts a block at once
    blocks: list[tuple[list[str], np.ndarray]] = field(default_factory=list)
    _table: pd.DataFrame | None = None

    def __len__(self) -> int:
        return len(self.columns["row"])

    @property
    def table(self) -> pd.DataFrame:
        if self._table is None:
            self._table = pd.DataFrame(self.columns)
        return self._table

    def records(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Rows as dicts of Python values (NaN and ±inf as None), the first `limit` of them."""
        n = len(self) if limit is None else min(limit, len(self))
        rows: list[dict[str, Any]] = [{} for _ in range(n)]
        covered: set[str] = set()
        for names, block in self.blocks:  # one conversion per block (2,000 tasks: ~8,000 columns in 6 blocks)
            for row, values in zip(rows, _python_values(block[:n]), strict=True):
                row.update(zip(names, values, strict=True))
            covered.update(names)
        for name, column in self.columns.items():
            if name not in covered:
                for row, value in zip(rows, _python_values(np.asarray(column[:n], dtype=object)), strict=True):
                    row[name] = value
        return [{k: row[k] for k in self.columns} for row in rows]  # the columns' order


class Predictor:
    """A partner's model ready to score SMILES; build once, call `predict` per request."""

    def __init__(self, model_dir: str | Path, key: str | Path | bytes, prepared: str | Path | None = None,
                 significance: float = DEFAULT_SIGNIFICANCE) -> None:
        if not 0 < significance < 1:
            raise InputError(f"--significance {significance} must be between 0 and 1 (e.g. 0.2 for 80 % sets)")
        self.model_dir = Path(model_dir)
        self.significance = float(significance)
        try:
            self.model, self.info = load_model(self.model_dir)
            self.plan = Plan.from_dict(self.info["plan"], source=str(self.model_dir / "model.json"))
            self.tasks: list[dict[str, Any]] = list(self.info["tasks"])
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise InputError(f"{self.model_dir / 'model.json'} is damaged ({type(exc).__name__}: {exc}); "
                             "copy the model directory again or retrain it") from None
        self.key = key if isinstance(key, bytes) else load_key(key)
        expected = (self.info.get("prepared_manifest") or {}).get("key_check_hash")
        if expected and expected != key_check_hash(self.key):
            raise InputError(f"the secret key does not match the one the model in {self.model_dir} was trained "
                             "with; use the consortium's secret.key")
        self.labels = [task_label(t) for t in self.tasks]
        self.conformal = ConformalModel.load(self.model_dir)
        self.training = self._training_set(prepared) if prepared else None
        self._explainer = None
        self._featurizer = None
        self._lock = threading.Lock()

    def _training_set(self, prepared: str | Path):  # -> neighbours.TrainingSet
        from partner_kit.neighbours import TrainingSet

        data = PreparedData.load(prepared, with_compounds=True)
        if data.manifest.get("plan_hash") not in (None, self.info["plan_hash"]):
            raise InputError(f"{prepared} was prepared under another plan than the model in {self.model_dir}")
        if data.n_features != self.plan.n_features:
            raise InputError(f"{prepared} has fingerprint size {data.n_features}, the model {self.plan.n_features}")
        return TrainingSet(data, self.info.get("test_fold"))

    @property
    def max_heavy_atoms(self) -> int:
        return int(self.plan.data.standardization.max_heavy_atoms)

    def featurize(self, smiles: list[str]) -> tuple[sp.csr_matrix, list[str | None], list[str | None]]:
        """(keyed fingerprint rows, standardized SMILES, errors) per input; too-large inputs are never parsed."""
        from data_prep.featurize import Featurizer
        from data_prep.fingerprint import keyed_csr

        too_big = [size_error(s, self.max_heavy_atoms) for s in smiles]
        safe = ["" if e else s for s, e in zip(smiles, too_big, strict=True)]
        with self._lock:  # one Featurizer (RDKit standardizer objects) per predictor, not per request
            if self._featurizer is None:
                self._featurizer = Featurizer(self.plan.data, scaffolds=False)
            records = [self._featurizer(s) for s in safe]
        x = keyed_csr([r.indices() for r in records], [r.counts() for r in records], self.plan.data.fingerprint,
                      self.key)
        errors = [big or r.error for big, r in zip(too_big, records, strict=True)]
        return x.astype(np.float32), [r.smiles for r in records], errors

    def predict(self, molecules: Molecules | list[str], names: list[str] | None = None) -> Prediction:
        """The prediction table: row, name, smiles, standardized_smiles, error, then per task its columns."""
        if not isinstance(molecules, Molecules):
            molecules = Molecules.of(molecules, names)
        n = len(molecules.smiles)
        if n == 0:
            raise InputError("no molecules given: give at least one SMILES")
        if n > MAX_MOLECULES:
            raise InputError(f"{n} molecules in one request; split the input into parts of at most {MAX_MOLECULES}")
        x, standardized, errors = self.featurize(molecules.smiles)
        if molecules.errors is not None:
            errors = [read or e for read, e in zip(molecules.errors, errors, strict=True)]
        p, v = self.model.predict(SparseBatch.from_csr(x))
        prob, values = p.numpy().astype(np.float64), v.numpy().astype(np.float64)
        failed = np.array([e is not None for e in errors], dtype=bool)
        columns: dict[str, Any] = {
            "row": list(molecules.rows), "name": list(molecules.names), "smiles": list(molecules.smiles),
            "standardized_smiles": [s or "" for s in standardized], "error": [e or "" for e in errors],
        }
        if self.training is not None:
            columns["max_similarity_to_training"] = np.where(failed, np.nan,
                                                             np.round(max_tanimoto(x, self.training.x), 3))
        n_class = prob.shape[1]
        outputs = np.where(failed[:, None], np.nan, np.concatenate([prob, values], axis=1))
        rounded = np.round(outputs, 4)
        for j, label in enumerate(self.labels):
            columns[label] = rounded[:, j]
        blocks = [(list(self.labels), rounded)]
        if self.conformal is not None:
            blocks += self._conformal_columns(columns, outputs, n_class)
        return Prediction(columns=columns, task_columns=self.labels, x=x, blocks=blocks)

    def _conformal_columns(self, columns: dict[str, Any], outputs: np.ndarray,
                           n_class: int) -> list[tuple[list[str], np.ndarray]]:
        """Per task its conformal set and p-values (classification) or interval (regression), all tasks at once;
        adds the columns and returns them as blocks."""
        labels = self.labels
        indices = [int(t.get("task_index", j)) for j, t in enumerate(self.tasks)]
        p0, p1 = self.conformal.p_value_matrix(indices[:n_class], outputs[:, :n_class])
        sets = prediction_set_matrix(p0, p1, self.significance)
        p0, p1 = np.round(p0, 4), np.round(p1, 4)
        for j in range(n_class):
            columns[f"{labels[j]} set"] = sets[:, j].tolist()
            columns[f"{labels[j]} p(active)"] = p1[:, j]
            columns[f"{labels[j]} p(inactive)"] = p0[:, j]
        half = np.array([self.conformal.half_width(i, self.significance) for i in indices[n_class:]])
        low, high = np.round(outputs[:, n_class:] - half, 4), np.round(outputs[:, n_class:] + half, 4)
        for k, j in enumerate(range(n_class, len(labels))):
            columns[f"{labels[j]} low"] = low[:, k]
            columns[f"{labels[j]} high"] = high[:, k]
        names = {suffix: [f"{label} {suffix}" for label in labels[:n_class]]
                 for suffix in ("set", "p(active)", "p(inactive)")}
        regr = {suffix: [f"{label} {suffix}" for label in labels[n_class:]] for suffix in ("low", "high")}
        return [(names["set"], sets), (names["p(active)"], p1), (names["p(inactive)"], p0),
                (regr["low"], low), (regr["high"], high)]

    # ---- one molecule in depth: why (atom contributions) and based on what (neighbours) -----------------
    def explainer(self):  # -> explain.Explainer
        if self._explainer is None:
            from partner_kit.explain import Explainer

            self._explainer = Explainer(self.model, self.plan.data.fingerprint, self.key)
        return self._explainer

    def detail(self, smiles: str, positions: list[int] | None = None, k: int = 5) -> dict[str, Any]:
        """Prediction for every task, atom contributions for the tasks at `positions` (default `map_positions`:
        all tasks, or the `DETAIL_TASKS` most probable ones) and, with a prepared directory, the k nearest
        neighbours."""
        result = self.predict([smiles])
        row = result.records()[0]
        out: dict[str, Any] = {"smiles": smiles, "standardized_smiles": row["standardized_smiles"],
                               "error": row["error"], "significance": self.significance, "tasks": [],
                               "neighbours": None, "map_positions": []}
        if row["error"]:
            return out
        for j, label in enumerate(self.labels):
            entry: dict[str, Any] = {"position": j, "task": label, "kind": self.tasks[j].get("kind"),
                                     "prediction": row[label], "contributions": None}
            for suffix in ("set", "p(active)", "p(inactive)", "low", "high"):
                if f"{label} {suffix}" in row:
                    entry[suffix] = row[f"{label} {suffix}"]
            out["tasks"].append(entry)
        ranked = sorted(out["tasks"], key=lambda t: -(t["prediction"] or 0.0) if t["kind"] == "classification"
                        else 0.0)
        out["map_positions"] = sorted(t["position"] for t in ranked[:DETAIL_TASKS])
        if positions is None:
            positions = out["map_positions"]
        explainer = self.explainer()
        for j in positions:
            if not 0 <= j < len(self.labels):
                raise InputError(f"task {j} does not exist; this model has tasks 0..{len(self.labels) - 1}")
            out["tasks"][j]["contributions"] = explainer.contributions(row["standardized_smiles"], j)
        if self.training is not None:
            out["neighbours"] = self.training.neighbours(result.x[0], k)
        return out


def _python_values(block: np.ndarray) -> list:
    """A block's rows (or a column's values) as Python values, NaN and ±inf as None (JSON has neither)."""
    if block.dtype.kind == "f":
        values = block.astype(object)
        values[~np.isfinite(block)] = None
        return values.tolist()

    def clean(v: Any) -> Any:
        return None if isinstance(v, float) and not math.isfinite(v) else v

    if block.ndim == 1:
        return [clean(v) for v in block.tolist()]
    return [[clean(v) for v in row] for row in block.tolist()]


def parse_smiles_lines(text: str) -> Molecules:
    """`SMILES [name]` per line; blank lines are skipped but counted, so `rows` are the input line numbers."""
    smiles, names, rows = [], [], []
    for number, line in enumerate(text.splitlines(), start=1):
        parts = line.split(maxsplit=1)
        if not parts:
            continue
        smiles.append(parts[0])
        names.append(parts[1].strip() if len(parts) > 1 else "")
        rows.append(number)
    return Molecules(smiles, names, rows)


def read_molecules(path: str | Path) -> Molecules:
    """Molecules from .smi/.txt (SMILES [name] per line), .sdf, or CSV/Parquet with a `smiles` column."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".smi", ".txt", ".sdf"):
        if not path.is_file():
            raise InputError(f"input file {path} not found")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise InputError(f"{path} is not UTF-8 text; give one SMILES [name] per line") from None
        molecules = molecules_from_sdf(text, str(path)) if suffix == ".sdf" else parse_smiles_lines(text)
    else:
        molecules = molecules_from_frame(read_frame(path), str(path))
    if not molecules.smiles:
        raise InputError(f"{path} holds no molecules; give one SMILES per line or a table with a 'smiles' column")
    return molecules


def molecules_from_frame(frame: pd.DataFrame, source: str) -> Molecules:
    """SMILES from the `smiles` column (any case) and names from `name`, `id` or `compound_id` if present."""
    col = next((c for c in frame.columns if str(c).lower() == "smiles"), None)
    if col is None:
        raise InputError(f"{source} has no 'smiles' column (columns: {list(frame.columns)[:10]}); "
                         "add one, or pass a .smi file with one SMILES per line")
    name_col = next((c for c in frame.columns if str(c).lower() in ("name", "id", "compound_id")), None)
    smiles = frame[col].fillna("").astype(str).tolist()
    names = frame[name_col].fillna("").astype(str).tolist() if name_col else [""] * len(smiles)
    return Molecules(smiles, names, list(range(1, len(smiles) + 1)))


def molecules_from_sdf(text: str, source: str) -> Molecules:
    """One molecule per SD record, as SMILES (title line as name); a record RDKit cannot read keeps its row.

    The SMILES is then size-checked like any other input; records of more than 10,000 lines are not parsed.
    """
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    records = [r for r in text.split("$$$$") if r.strip()]
    smiles, names, errors = [], [], []
    for number, record in enumerate(records, start=1):
        block = record.lstrip("\r\n")
        lines = block.splitlines()
        names.append(lines[0].strip() if lines else "")
        mol = Chem.MolFromMolBlock(block, sanitize=False) if len(lines) <= 10_000 else None
        text = None
        if mol is not None:
            try:
                text = Chem.MolToSmiles(mol)
            except Exception:  # RDKit cannot write some unsanitized records
                text = None
        smiles.append(text or "")
        errors.append(None if text else f"SD record {number} of {source} cannot be read as a molecule")
    return Molecules(smiles, names, list(range(1, len(smiles) + 1)), errors)
