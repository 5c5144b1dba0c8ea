"""`data-prep prepare`: a partner's T0/T1/T2 files -> the prepared directory (see docs/design.md).

Stages: read -> validate -> standardize (cached, parallel) -> rows & folds (duplicates merged) ->
aggregate replicates -> tasks & quorums -> write. Every input row ends up either used or in
`rejected.parquet` with the stage and reason; the manifest records counts per stage and timings.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import rdkit
import scipy.sparse as sp

import data_prep
from data_prep.aggregate import aggregate, index_dtype
from data_prep.atomic import write_text_atomic
from data_prep.config import PrepConfig, plan_hash
from data_prep.console import console
from data_prep.errors import InputError
from data_prep.featurize import MolRecord
from data_prep.fingerprint import keyed_csr
from data_prep.folds import assign_fold
from data_prep.io import file_sha256, read_inputs
from data_prep.key import KEY_BYTES, key_check_hash, load_key
from data_prep.losses import AssayLosses
from data_prep.parallel import compute_records
from data_prep.paths import check_out_dir
from data_prep.prepared import PreparedData
from data_prep.tasks import TaskSet, build_tasks, task_table
from data_prep.validate import STAGES, Rejects, assay_record_counts, validate_t0, validate_t1, validate_t2

FORMAT = "fedqsar-prepared/1"


def resolve_config(plan: Any) -> PrepConfig:
    """A PrepConfig from a plan file path, a PrepConfig, or a consortium Plan object (duck-typed)."""
    if isinstance(plan, PrepConfig):
        return plan
    if isinstance(getattr(plan, "data", None), PrepConfig):
        return replace(plan.data, plan_hash=plan.hash)
    if isinstance(plan, str | Path):
        return PrepConfig.from_file(plan)
    raise TypeError(f"plan must be a path, a PrepConfig or a Plan, not {type(plan).__name__}")


def resolve_key(key: str | Path | bytes) -> bytes:
    if isinstance(key, bytes):
        if len(key) != KEY_BYTES:
            raise InputError(f"the secret key must be {KEY_BYTES} bytes, got {len(key)}")
        return key
    return load_key(key)


class _Stages:
    """Wall-clock seconds per stage, printed as they finish when `verbose`."""

    def __init__(self, verbose: bool) -> None:
        self.seconds: dict[str, float] = {}
        self.verbose = verbose

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - start, 3)
        if self.verbose:
            console.print(f"  {name:<12} {self.seconds[name]:8.2f} s", highlight=False)


def prepare(
    plan: str | Path | PrepConfig,
    key: str | Path | bytes,
    input_dir: str | Path,
    out_dir: str | Path,
    *,
    cache_dir: str | Path | None | bool = None,
    n_jobs: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Prepare one partner's input directory; returns the summary that is also written as manifest.json.

    `cache_dir`: where standardized structures are cached (None: ~/.cache/fedqsar or $FEDQSAR_CACHE;
    False: no cache). `n_jobs`: worker processes for standardization (None: all cores).
    """
    config = resolve_config(plan)
    key = resolve_key(key)
    if n_jobs is not None and n_jobs < 1:
        raise InputError(f"--jobs must be at least 1, got {n_jobs} (leave it out to use every core)")
    stage = _Stages(progress)
    rejects = Rejects()
    rules = config.tasks
    n_folds = config.folds.n_folds

    with stage("read"):
        tables = read_inputs(input_dir)
        check_out_dir(out_dir, "--out")  # before the long part, not after it; nothing created yet
    t0, t1, t2 = tables["T0"], tables["T1"], tables["T2"]
    losses = AssayLosses(assay_record_counts(t1))
    with stage("validate"):
        assays = validate_t0(t0, rules, rejects)
        compounds, rejected_ids = validate_t2(t2, rejects)
        records = validate_t1(t1, assays, compounds, rejected_ids, rejects, losses)
        # The T1 text (≈ 50 bytes a record) is not needed past validation: free it before the later stages.
        n_t1 = len(t1.frame)
        t1.frame = t1.frame.iloc[:0]
        _release_freed_arrow_memory()
    std_stats: dict[str, Any] = {}
    with stage("standardize"):
        mols = compute_records(compounds["smiles"].tolist(), config, n_jobs=n_jobs, cache_dir=cache_dir,
                               progress=progress, stats=std_stats)
    with stage("rows"):
        rows = _merge_structures(compounds, mols, key, n_folds, config.folds.method, rejects, t2.label)
        records = _attach_rows(records, rows, rejects, t1.label)
    with stage("aggregate"):
        binary = set(assays.index[assays["is_binary"]])
        groups = aggregate(records, binary, rejects, t1.label)
    with stage("tasks"):
        tasks = build_tasks(groups, assays, rows.folds, rules, n_folds)
        keep_rows = _account_for_unused(tasks, groups, records, assays, rows, rejects, t0.label, t1.label,
                                        t2.label, losses)
        used_t1 = int(records["used"].sum())
        del records  # ≈ 40 bytes a record (0.8 GB at 20 M): writing needs the merged groups only
    warnings = losses.warnings()
    with stage("write"):
        data, counts = _assemble(config, key, tasks, groups, rows, keep_rows, rejects)
        n_rejected_t1 = rejects.count(t1.label)
        if used_t1 + n_rejected_t1 != n_t1:  # an internal bookkeeping bug, never user input
            raise RuntimeError(f"T1 accounting: {used_t1} used + {n_rejected_t1} rejected != {n_t1}")
        rejected = rejects.frame()
        manifest = {
            "format": FORMAT,
            "kit_version": data_prep.__version__,
            "rdkit_version": rdkit.__version__,
            "created_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "plan_hash": config.plan_hash,
            "data_config_hash": plan_hash(config.to_dict()),
            "key_check_hash": key_check_hash(key),
            "n_features": config.fingerprint.size,
            "n_folds": n_folds,
            "inputs": {
                name: {"file": tab.path.name, "sha256": file_sha256(tab.path),
                       "rows": n_t1 if tab is t1 else len(tab.frame)}
                for name, tab in tables.items()
            },
            "counts": {
                "t0_rows": len(t0.frame), "t1_rows": n_t1, "t2_rows": len(t2.frame),
                "t1_rows_used": used_t1,
                "compounds_standardized": int(sum(m.ok for m in mols)),
                "compounds_failed_standardization": int(sum(not m.ok for m in mols)),
                "unique_structures": int(len(rows.smiles)),
                **counts,
                "rejected": _reject_counts(rejected),
            },
            "fold_sizes": np.bincount(data.folds, minlength=n_folds).tolist(),
            "dropped_tasks": _jsonable(tasks.dropped),
            "warnings": warnings,
            "standardization": std_stats,
        }
        data.manifest = manifest
        data.rejected = rejected
        manifest["timings_s"] = stage.seconds
        data.save(out_dir)
    # The manifest was written with every stage's time but its own; rewrite it complete (atomically).
    manifest["timings_s"] = dict(stage.seconds, total=round(sum(stage.seconds.values()), 3))
    write_text_atomic(Path(out_dir) / "manifest.json", json.dumps(manifest, indent=2, default=str) + "\n")
    if progress:
        _print_summary(manifest)
    for line in warnings:  # also without progress output: this is data the partner did not mean to lose
        console.print(f"[bold yellow]warning:[/] {line}", highlight=False, soft_wrap=True)
    return manifest


def _release_freed_arrow_memory() -> None:
    """Hand the freed T1 text back to the system: Arrow's allocator (mimalloc or jemalloc) keeps freed pages
    mapped for reuse by Arrow alone, which would hold ≈ 80 bytes a record (1.7 GB at 20 M records) through
    every later stage (measured at 100 k: RSS 309 -> 139 MiB after the release)."""
    import pyarrow as pa

    pa.default_memory_pool().release_unused()


def _print_summary(m: dict[str, Any]) -> None:
    c = m["counts"]
    rej = sum(n for per_file in c["rejected"].values() for n in per_file.values())
    console.print(
        f"[bold]prepared[/] {c['rows']} rows (unique structures) x {m['n_features']} features; "
        f"{c['classification_tasks']} classification + {c['regression_tasks']} regression tasks "
        f"({c['dropped_tasks']} dropped); {c['t1_rows_used']}/{c['t1_rows']} activity records used, "
        f"{rej} input rows rejected; fold sizes {m['fold_sizes']}",
        highlight=False,
    )
    if c["classification_tasks"] + c["regression_tasks"] == 0:
        console.print("[bold yellow]warning:[/] no task passed its quorum, so there is nothing to train on; "
                      "see dropped_tasks in manifest.json and rejected.parquet", highlight=False)


@dataclass
class _Rows:
    """Unique standardized structures in first-appearance order, and which compounds map to each."""

    smiles: list[str]
    mols: list[MolRecord]
    folds: np.ndarray
    compound_row: dict[str, int]
    compound_ids: list[list[str]]
    t2_rows: list[list[int]]
    failed: dict[str, str]


def _merge_structures(compounds: pd.DataFrame, mols: list[MolRecord], key: bytes, n_folds: int, method: str,
                      rejects: Rejects, t2_name: str) -> _Rows:
    row_of: dict[str, int] = {}
    smiles: list[str] = []
    row_mols: list[MolRecord] = []
    compound_row: dict[str, int] = {}
    ids: list[list[str]] = []
    t2_rows: list[list[int]] = []
    failed_rows, failed_ids, failed_reasons = [], [], []
    for cid, t2_row, mol in zip(compounds["input_compound_id"], compounds["t2_row"], mols, strict=True):
        if not mol.ok:
            failed_rows.append(t2_row)
            failed_ids.append(cid)
            failed_reasons.append(mol.error)
            continue
        row = row_of.get(mol.smiles)
        if row is None:
            row = row_of[mol.smiles] = len(smiles)
            smiles.append(mol.smiles)
            row_mols.append(mol)
            ids.append([])
            t2_rows.append([])
        compound_row[cid] = row
        ids[row].append(cid)
        t2_rows[row].append(int(t2_row))
    rejects.add(t2_name, failed_rows, failed_ids, "structure", failed_reasons)
    folds = np.fromiter((assign_fold(key, m.fold_scaffold(method), m.smiles, n_folds) for m in row_mols),
                        dtype=np.int8, count=len(row_mols))
    failed = dict(zip(failed_ids, failed_reasons, strict=True))
    return _Rows(smiles, row_mols, folds, compound_row, ids, t2_rows, failed)


def _attach_rows(records: pd.DataFrame, rows: _Rows, rejects: Rejects, t1_name: str) -> pd.DataFrame:
    """Give each activity record its matrix row; records of compounds that failed standardization go.

    The compound ids are a Categorical (validate_t1): the lookup runs once per compound, then by code."""
    ids = records["input_compound_id"]
    if isinstance(ids.dtype, pd.CategoricalDtype):
        per_compound = np.array([rows.compound_row.get(c, -1) for c in ids.cat.categories], dtype=np.int64)
        row = pd.Series(per_compound[ids.cat.codes.to_numpy()] if len(per_compound) else
                        np.zeros(0, np.int64), index=records.index)
        row = row.where(row >= 0)
    else:
        row = ids.map(rows.compound_row)
    failed = row.isna().to_numpy()
    if failed.any():
        sub = records[failed]
        reasons = [f"structure of compound {c} rejected: {rows.failed.get(c, 'not standardized')}"
                   for c in sub["input_compound_id"]]
        rejects.add(t1_name, sub["t1_row"], sub["input_compound_id"], "structure", reasons)
    records = records[~failed].reset_index(drop=True)
    records["row"] = row[~failed].astype(index_dtype(len(rows.smiles))).to_numpy()
    return records


def _account_for_unused(tasks: TaskSet, groups: pd.DataFrame, records: pd.DataFrame, assays: pd.DataFrame,
                        rows: _Rows, rejects: Rejects, t0_name: str, t1_name: str, t2_name: str,
                        losses: AssayLosses) -> np.ndarray:
    """Reject what no kept task uses (records, assays, compounds); return the matrix rows to keep.

    Records of assays without any kept task are counted in `losses` under the quorum settings that
    dropped their tasks."""
    used_group = np.zeros(len(groups), dtype=bool)
    for gid, _ in tasks.class_labels:
        used_group[gid] = True
    for gid in tasks.regr_values:
        used_group[gid] = True
    group = records["group"].to_numpy()
    records["used"] = (group >= 0) & used_group[np.maximum(group, 0)]
    kept_assays = {r["input_assay_id"] for r in tasks.class_rows + tasks.regr_rows}
    unused = (group >= 0) & ~records["used"].to_numpy()
    if unused.any():
        sub = records[unused]
        quorum = ~sub["input_assay_id"].isin(kept_assays).to_numpy()
        reasons = np.where(
            ~quorum,
            "censored value gives no label at the task thresholds and the assay has no regression task",
            "no task of this assay passed its quorum (see manifest dropped_tasks)",
        )
        rejects.add(t1_name, sub["t1_row"], sub["input_compound_id"], "tasks", reasons)
        settings = _quorum_settings(tasks.dropped)
        lost = pd.Series(sub["input_assay_id"].to_numpy(dtype=object)[quorum])
        for setting, ids in lost.groupby(lost.map(lambda a: settings.get(a, "tasks quorums"))):
            losses.add(setting, "quorum", ids)
    dropped_assays = assays[assays["rejected"].isna() & ~assays.index.isin(kept_assays)]
    rejects.add(t0_name, dropped_assays["t0_row"], dropped_assays.index, "tasks",
                "no task of this assay passed its quorum (see manifest dropped_tasks), or it has no records")
    labelled = np.zeros(len(rows.smiles), dtype=bool)
    labelled[groups["row"].to_numpy()[used_group]] = True
    idle = np.flatnonzero(~labelled)
    if len(idle):
        t2_rows = [r for i in idle for r in rows.t2_rows[i]]
        ids = [c for i in idle for c in rows.compound_ids[i]]
        rejects.add(t2_name, t2_rows, ids, "tasks", "compound has no activity in any kept task")
    return labelled


def _quorum_settings(dropped: list[dict]) -> dict[str, str]:
    """Per assay, the plan keys of the quorums its dropped tasks missed (named in the data-loss warning)."""
    keys: dict[str, set[str]] = {}
    for task in dropped:
        if task["kind"] == "regression":
            names = {"tasks.min_regression_values", "tasks.min_regression_uncensored"}
        else:
            names = {"tasks.min_train_actives", "tasks.min_train_inactives"}
            if task["reason"].startswith("no automatic threshold"):
                names.add("tasks.auto_thresholds")
        keys.setdefault(str(task["input_assay_id"]), set()).update(names)
    return {a: " / ".join(sorted(n)) for a, n in keys.items()}


def _assemble(config: PrepConfig, key: bytes, tasks: TaskSet, groups: pd.DataFrame, rows: _Rows,
              keep: np.ndarray, rejects: Rejects) -> tuple[PreparedData, dict[str, int]]:
    new_row = np.full(len(keep), -1, dtype=np.int64)
    new_row[keep] = np.arange(int(keep.sum()))
    kept = np.flatnonzero(keep)
    n = len(kept)
    group_row = new_row[groups["row"].to_numpy()]
    x = keyed_csr([rows.mols[i].indices() for i in kept], [rows.mols[i].counts() for i in kept],
                  config.fingerprint, key)
    y_class = _label_matrix([(group_row[g], v.astype(np.float32)) for g, v in tasks.class_labels], n)
    values = groups["value"].to_numpy(dtype=np.float32)
    censor = groups["censor"].to_numpy(dtype=np.int8)
    y_regr = _label_matrix([(group_row[g], values[g]) for g in tasks.regr_values], n)
    y_censor = _label_matrix([(group_row[g], censor[g]) for g in tasks.regr_values], n, np.int8,
                             pattern=y_regr)
    table = task_table(tasks)
    folds = rows.folds[kept]
    compounds = pd.DataFrame({
        "row": np.arange(n, dtype=np.int64),
        "input_compound_ids": [rows.compound_ids[i] for i in kept],
        "smiles": [rows.smiles[i] for i in kept],
        "scaffold": [rows.mols[i].scaffold for i in kept],
        "fold_scaffold": [rows.mols[i].fold_scaffold(config.folds.method) for i in kept],
        "fold": folds,
    })
    data = PreparedData(x=x, folds=folds, y_class=y_class, y_regr=y_regr, y_censor=y_censor, tasks=table,
                        compounds=compounds)
    counts = {
        "rows": n,
        "rows_merged_compounds": int(sum(len(rows.compound_ids[i]) > 1 for i in kept)),
        "acyclic_rows": int(sum(rows.mols[i].scaffold == "" for i in kept)),
        "classification_tasks": len(tasks.class_rows),
        "regression_tasks": len(tasks.regr_rows),
        "dropped_tasks": len(tasks.dropped),
        "class_labels": int(y_class.nnz),
        "regression_values": int(y_regr.nnz),
    }
    return data, counts


def _label_matrix(columns: list[tuple[np.ndarray, np.ndarray]], n_rows: int, dtype=np.float32,
                  pattern: sp.csr_matrix | None = None) -> sp.csr_matrix:
    """CSR from per-column (rows, values); explicit zeros (censor '=') are kept when `pattern` says so."""
    if columns:
        r = np.concatenate([c[0] for c in columns])
        v = np.concatenate([c[1] for c in columns]).astype(dtype)
        c = np.concatenate([np.full(len(col[0]), j, dtype=np.int64) for j, col in enumerate(columns)])
    else:
        r = c = np.zeros(0, dtype=np.int64)
        v = np.zeros(0, dtype=dtype)
    order = np.lexsort((c, r))
    r, c, v = r[order], c[order], v[order]
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(r, minlength=n_rows), out=indptr[1:])
    # Built from index arrays directly: scipy's COO->CSR conversion would drop the explicit zeros that
    # y_censor needs ('=' values) to share y_regr's pattern.
    matrix = sp.csr_matrix((v, c.astype(np.int32), indptr.astype(np.int32)), shape=(n_rows, len(columns)))
    if pattern is not None and not (
        np.array_equal(matrix.indptr, pattern.indptr) and np.array_equal(matrix.indices, pattern.indices)
    ):
        raise RuntimeError("y_censor pattern differs from y_regr")
    return matrix


def _reject_counts(rejected: pd.DataFrame) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {s: {} for s in STAGES}
    for (stage, file), n in rejected.groupby(["stage", "file"]).size().items():
        out.setdefault(stage, {})[file] = int(n)
    return out


def _jsonable(items: list[dict]) -> list[dict]:
    def clean(v: Any) -> Any:
        if isinstance(v, float) and not np.isfinite(v):
            return None
        if isinstance(v, np.generic):
            return v.item()
        return v

    return [{k: clean(v) for k, v in item.items()} for item in items]
