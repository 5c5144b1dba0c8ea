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

import csv
import io
import json
import math
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pandas as pd
import scipy.sparse as sp

from data_prep.errors import InputError
from data_prep.key import key_check_hash, load_key
from data_prep.prepared import PreparedData
from partner_kit.batching import SparseBatch
from partner_kit.conformal import DEFAULT_SIGNIFICANCE, ConformalModel, prediction_set_matrix
from partner_kit.device import resolve_device
from partner_kit.weights import load_model_and_plan

MAX_MOLECULES = 100_000
DETAIL_TASKS = 12  # atom-contribution maps drawn by default in one molecule's detail view
MAX_SD_LINES = 10_000  # a longer SD record is refused unparsed
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


@dataclass(frozen=True)
class Layout:
    """Where every output column sits: built once per predictor, shared by every `Prediction` it makes.

    The per-task columns come as a few 2-D blocks (probabilities, sets, p-values, interval ends); `order` is the
    CSV's column order (per task its set and p-values side by side) and `positions[b]` the places of block b's
    columns in it, so a row is assembled by one array assignment per block instead of ~8,000 dict inserts.
    """

    meta: tuple[str, ...]  # row, name, smiles, standardized_smiles, error[, max_similarity_to_training]
    blocks: tuple[tuple[str, ...], ...]
    order: tuple[str, ...]
    positions: tuple[np.ndarray, ...]  # the meta columns' places first, then each block's

    @classmethod
    def of(cls, meta: list[str], blocks: list[list[str]], order: list[str]) -> Layout:
        where = {name: i for i, name in enumerate(order)}
        if len(where) != len(order) or set(where) != set(meta).union(*blocks) or order[:len(meta)] != meta:
            raise ValueError("column layout: the meta columns first, then every block column exactly once")
        positions = tuple(np.array([where[n] for n in names], dtype=np.int64) for names in [meta, *blocks])
        return cls(tuple(meta), tuple(tuple(b) for b in blocks), tuple(order), positions)


@dataclass
class Prediction:
    """One row per input molecule (in input order); `x` holds their keyed fingerprints.

    The per-task values stay 2-D blocks (molecules x tasks): a pandas frame or a dict of ~8,000 columns (2,000
    tasks) costs more than predicting one molecule, so the API and the page convert rows straight from the blocks
    and only the CSV builds `table`.
    """

    meta: dict[str, list[Any] | np.ndarray]
    blocks: list[np.ndarray]  # in `layout.blocks` order
    layout: Layout
    task_columns: list[str]
    x: sp.csr_matrix
    _table: pd.DataFrame | None = None

    def __len__(self) -> int:
        return len(self.meta["row"])

    @property
    def column_names(self) -> list[str]:
        return list(self.layout.order)

    @property
    def columns(self) -> dict[str, Any]:
        """Every column by name, in output order (built on demand: the CSV and the page's column checks)."""
        by_name: dict[str, Any] = dict(self.meta)
        for names, block in zip(self.layout.blocks, self.blocks, strict=True):
            by_name.update(zip(names, block.T, strict=True))
        return {name: by_name[name] for name in self.layout.order}

    @property
    def table(self) -> pd.DataFrame:
        if self._table is None:
            self._table = pd.DataFrame(self.columns)
        return self._table

    def records(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Rows as dicts of Python values (NaN and ±inf as None) in column order, the first `limit` of them."""
        order = self.layout.order
        return [dict(zip(order, row, strict=True)) for row in self._values(limit).tolist()]

    def write_csv(self, handle: TextIO, header: bool = True) -> None:
        """The rows as CSV, byte for byte what `table.to_csv(index=False)` writes, ~10 x faster for 2,000 tasks.

        No pandas frame: the meta columns (SMILES, names, errors: text that may need quoting) go through the csv
        module; the ~8,000 per-task cells, which never need quoting (numbers as pandas writes them, i.e. their
        repr, NaN empty, set names), are joined as they are (`_csv_cells`)."""
        layout = self.layout
        writer = csv.writer(handle, lineterminator="\n")
        if header:
            writer.writerow(layout.order)
        n_meta = len(layout.meta)
        cells = np.empty((len(self), len(layout.order) - n_meta), dtype=object)
        for places, block in zip(layout.positions[1:], self.blocks, strict=True):
            cells[:, places - n_meta] = _csv_cells(block)
        meta = [_python_values(np.asarray(self.meta[name], dtype=object), finite=False) for name in layout.meta]
        line = io.StringIO()
        meta_writer = csv.writer(line, lineterminator="")
        for i, row in enumerate(cells.tolist()):
            line.seek(0)
            line.truncate()
            meta_writer.writerow([column[i] for column in meta])
            handle.write(line.getvalue() + ("," + ",".join(row) if row else "") + "\n")

    def _values(self, limit: int | None) -> np.ndarray:
        """(molecules x columns) object array of Python values in column order; NaN and ±inf as None."""
        n = len(self) if limit is None else min(limit, len(self))
        out = np.empty((n, len(self.layout.order)), dtype=object)
        meta_at, *block_at = self.layout.positions
        for place, name in zip(meta_at, self.layout.meta, strict=True):
            out[:, place] = _python_values(np.asarray(self.meta[name][:n], dtype=object))
        for places, block in zip(block_at, self.blocks, strict=True):
            out[:, places] = _objects(block[:n])
        return out


_TEN_THOUSANDTHS = np.array([repr(i / 10_000) for i in range(10_001)], dtype=object)


def _csv_cells(block: np.ndarray) -> np.ndarray:
    """A block's CSV cells as strings: each float as its `repr` (looked up for the multiples of 0.0001 in [0, 1]
    that probabilities and p-values rounded to 4 decimals are, checked exactly), NaN as ''; set names as they are
    (checked: none needs quoting)."""
    if block.dtype.kind != "f":
        if any(c in str(v) for v in set(block.ravel().tolist()) for c in ',"\r\n'):
            raise ValueError("a per-task cell would need CSV quoting")
        return block
    out = np.full(block.shape, "", dtype=object)
    with np.errstate(over="ignore", invalid="ignore"):  # huge values overflow to inf and take the repr path
        steps = np.rint(block * 10_000)
        table = (steps >= 0) & (steps <= 10_000) & (steps / 10_000 == block) & ~np.signbit(block)  # not NaN, -0.0
    out[table] = _TEN_THOUSANDTHS[steps[table].astype(np.int64)]
    rest = ~table & ~np.isnan(block)
    out[rest] = [repr(v) for v in block[rest].tolist()]
    return out


class Predictor:
    """A partner's model ready to score SMILES; build once, call `predict` per request."""

    def __init__(self, model_dir: str | Path, key: str | Path | bytes, prepared: str | Path | None = None,
                 significance: float = DEFAULT_SIGNIFICANCE, device: str = "cpu") -> None:
        if not 0 < significance < 1:
            raise InputError(f"--significance {significance} must be between 0 and 1 (e.g. 0.2 for 80 % sets)")
        self.model_dir = Path(model_dir)
        self.significance = float(significance)
        try:
            self.model, self.info, self.plan = load_model_and_plan(self.model_dir)
            self.tasks: list[dict[str, Any]] = list(self.info["tasks"])
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise InputError(f"{self.model_dir / 'model.json'} is damaged ({type(exc).__name__}: {exc}); "
                             "copy the model directory again or retrain it") from None
        self.model.to(resolve_device(device))  # `model.predict` moves batches there and read-outs back
        self.key = key if isinstance(key, bytes) else load_key(key)
        expected = (self.info.get("prepared_manifest") or {}).get("key_check_hash")
        if expected and expected != key_check_hash(self.key):
            raise InputError(f"the secret key does not match the one the model in {self.model_dir} was trained "
                             "with; use the consortium's secret.key")
        self.labels = [task_label(t) for t in self.tasks]
        self._task_indices = [int(t.get("task_index", j)) for j, t in enumerate(self.tasks)]
        self.conformal = ConformalModel.load(self.model_dir)
        self.training = self._training_set(prepared) if prepared else None
        self._explainer = None
        self._featurizer = None
        self._lock = threading.Lock()
        self._layouts: dict[int, Layout] = {}
        self._half_widths: np.ndarray | None = None

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
        meta: dict[str, Any] = {
            "row": list(molecules.rows), "name": list(molecules.names), "smiles": list(molecules.smiles),
            "standardized_smiles": [s or "" for s in standardized], "error": [e or "" for e in errors],
        }
        if self.training is not None:
            meta["max_similarity_to_training"] = np.where(failed, np.nan,
                                                          np.round(max_tanimoto(x, self.training.x), 3))
        n_class = prob.shape[1]
        outputs = np.where(failed[:, None], np.nan, np.concatenate([prob, values], axis=1))
        blocks = [np.round(outputs, 4)]
        if self.conformal is not None:
            blocks += self._conformal_blocks(outputs, n_class)
        return Prediction(meta=meta, blocks=blocks, layout=self._layout(n_class), task_columns=self.labels, x=x)

    def _layout(self, n_class: int) -> Layout:
        """The output columns (the same for every request of this predictor): built on the first one."""
        if self._layouts.get(n_class) is None:
            labels = self.labels
            meta = ["row", "name", "smiles", "standardized_smiles", "error"]
            meta += ["max_similarity_to_training"] if self.training is not None else []
            blocks, order = [list(labels)], meta + list(labels)
            if self.conformal is not None:
                cls, regr = labels[:n_class], labels[n_class:]
                blocks += [[f"{label} {suffix}" for label in cls] for suffix in ("set", "p(active)", "p(inactive)")]
                blocks += [[f"{label} {suffix}" for label in regr] for suffix in ("low", "high")]
                order += [f"{label} {suffix}" for label in cls for suffix in ("set", "p(active)", "p(inactive)")]
                order += [f"{label} {suffix}" for label in regr for suffix in ("low", "high")]
            self._layouts[n_class] = Layout.of(meta, blocks, order)
        return self._layouts[n_class]

    def _conformal_blocks(self, outputs: np.ndarray, n_class: int) -> list[np.ndarray]:
        """Per task its conformal set and p-values (classification) or interval (regression), all tasks at once:
        the blocks set, p(active), p(inactive), low, high (molecules x tasks each)."""
        indices = self._task_indices
        p0, p1 = self.conformal.p_value_matrix(indices[:n_class], outputs[:, :n_class])
        sets = prediction_set_matrix(p0, p1, self.significance)
        if self._half_widths is None:  # fixed per predictor: the significance is
            self._half_widths = np.array([self.conformal.half_width(i, self.significance)
                                          for i in indices[n_class:]], dtype=np.float64)
        half = self._half_widths
        low, high = np.round(outputs[:, n_class:] - half, 4), np.round(outputs[:, n_class:] + half, 4)
        return [sets, np.round(p1, 4), np.round(p0, 4), low, high]

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


def _objects(block: np.ndarray, finite: bool = True) -> np.ndarray:
    """A numeric block as Python floats with NaN (and ±inf when `finite`: JSON has neither) as None; other blocks
    (sets: strings) as they are."""
    if block.dtype.kind != "f":
        return block
    values = block.astype(object)
    values[~np.isfinite(block) if finite else np.isnan(block)] = None
    return values


def _python_values(block: np.ndarray, finite: bool = True) -> list:
    """A block's rows (or a column's values) as Python values, NaN (and ±inf when `finite`) as None."""
    if block.dtype.kind == "f":
        return _objects(block, finite).tolist()

    def clean(v: Any) -> Any:
        return None if isinstance(v, float) and (not math.isfinite(v) if finite else math.isnan(v)) else v

    if block.ndim == 1:
        return [clean(v) for v in block.tolist()]
    return [[clean(v) for v in row] for row in block.tolist()]


def numbered_smiles(lines: Iterable[str]) -> Iterator[tuple[int, str, str]]:
    """(line number, SMILES, name) per non-blank `SMILES [name]` line of `lines` (pieces of text, e.g. a file's
    lines or one whole text: each is split as `str.splitlines` splits, so both number the lines alike)."""
    number = 0
    for piece in lines:
        for line in piece.splitlines():
            number += 1
            parts = line.split(maxsplit=1)
            if parts:
                yield number, parts[0], parts[1].strip() if len(parts) > 1 else ""


def parse_smiles_lines(text: str) -> Molecules:
    """`SMILES [name]` per line; blank lines are skipped but counted, so `rows` are the input line numbers."""
    found = list(numbered_smiles([text]))
    return Molecules([s for _, s, _ in found], [n for _, _, n in found], [r for r, _, _ in found])


def read_molecules(path: str | Path) -> Molecules:
    """Molecules from .smi/.txt (SMILES [name] per line), .sdf, or CSV/Parquet with a `smiles` column, all at
    once (`partner_kit.molecule_files.iter_molecules` reads them a chunk at a time)."""
    from partner_kit.molecule_files import iter_molecules

    chunks = list(iter_molecules(path, chunk_size=MAX_MOLECULES))
    errors = None if all(c.errors is None for c in chunks) else [
        e for c in chunks for e in (c.errors if c.errors is not None else [None] * len(c.smiles))]
    return Molecules([s for c in chunks for s in c.smiles], [n for c in chunks for n in c.names],
                     [r for c in chunks for r in c.rows], errors)


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
    records = [r for r in text.split("$$$$") if r.strip()]
    smiles, names, errors = [], [], []
    for number, record in enumerate(records, start=1):
        text, name, error = sd_record_molecule(record, number, source)
        smiles.append(text)
        names.append(name)
        errors.append(error)
    return Molecules(smiles, names, list(range(1, len(smiles) + 1)), errors)


def sd_record_molecule(record: str, number: int, source: str) -> tuple[str, str, str | None]:
    """(SMILES or '', title line, error or None) of the SD record numbered `number` (from 1) in `source`."""
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    block = record.lstrip("\r\n")
    lines = block.splitlines()
    name = lines[0].strip() if lines else ""
    mol = Chem.MolFromMolBlock(block, sanitize=False) if len(lines) <= MAX_SD_LINES else None
    text = None
    if mol is not None:
        try:
            text = Chem.MolToSmiles(mol)
        except Exception:  # RDKit cannot write some unsanitized records
            text = None
    return text or "", name, None if text else f"SD record {number} of {source} cannot be read as a molecule"
