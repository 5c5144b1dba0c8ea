"""Row-level checks of the input tables: what is unusable goes to `rejected.parquet` with a reason.

T0 (the assay table) is short and hand-written, and each of its rows decides how every record of an assay
is read, so a malformed T0 value stops the run (InputError naming the row) — except an unknown
`assay_type`, whose assay is rejected with its records, as MELLODDY-TUNER does. T1 and T2 rows that cannot
be used are rejected one by one and the run goes on; a T1/T2 column in which *no* value is usable is a
file-level error (most likely the wrong column or file).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from data_prep.config import ASSAY_TYPES, TaskRules
from data_prep.errors import InputError
from data_prep.io import InputTable
from data_prep.losses import AssayLosses
from data_prep.prepared import REJECT_COLUMNS

#: standard_qualifier spellings -> censor flag (-1 '<', 0 '=', +1 '>'), SparseChem's convention.
QUALIFIERS = {
    "": 0, "=": 0, "==": 0, "~": 0,
    "<": -1, "<=": -1, "≤": -1,
    ">": 1, ">=": 1, "≥": 1,
}
TRUE = {"true", "t", "yes", "y", "1", "1.0"}
FALSE = {"false", "f", "no", "n", "0", "0.0"}
DIRECTIONS = ("high", "low")
STAGES = ("input", "structure", "aggregate", "tasks")


@dataclass
class Rejects:
    """Collects rejected input rows: file, row (data row from 1), id, stage, reason."""

    parts: list[pd.DataFrame] = field(default_factory=list)

    def add(self, file: str, rows: ArrayLike, ids: ArrayLike, stage: str, reasons: str | ArrayLike) -> None:
        """Reject `rows` (data row numbers from 1) of `file`; one reason for all, or one per row."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) == 0:
            return
        reasons = [reasons] * len(rows) if isinstance(reasons, str) else list(reasons)
        self.parts.append(pd.DataFrame({
            "file": file, "row": rows, "id": np.asarray(ids, dtype=object).astype(str),
            "stage": stage, "reason": reasons,
        }))

    def frame(self) -> pd.DataFrame:
        if not self.parts:
            return pd.DataFrame({c: pd.Series(dtype="int64" if c == "row" else "object") for c in REJECT_COLUMNS})
        out = pd.concat(self.parts, ignore_index=True)
        return out.sort_values(["file", "row"], kind="stable").reset_index(drop=True)

    def count(self, file: str | None = None) -> int:
        return sum(len(p) if file is None else int((p["file"] == file).sum()) for p in self.parts)


def normalize_ids(values: pd.Series) -> pd.Series:
    """Ids as text; '17.0' (an integer id that went through a float column) reads as '17'."""
    values = values.astype(str).str.strip()
    floaty = values.str.fullmatch(r"-?\d+\.0+")
    if floaty.any():
        values = values.where(~floaty, values.str.replace(r"\.0+$", "", regex=True))
    return values


def validate_t0(table: InputTable, rules: TaskRules, rejects: Rejects) -> pd.DataFrame:
    """Assays indexed by input_assay_id: assay_type, is_binary, use_in_regression, thresholds, direction, row."""
    f = table.frame
    name = table.label
    ids = normalize_ids(f["input_assay_id"])
    _fail_if(table, ids == "", "input_assay_id", "is empty; every assay needs an id")
    dup = ids.duplicated(keep=False)
    if dup.any():
        first = ids[dup].iloc[0]
        rows = (np.flatnonzero(ids == first) + 1).tolist()
        raise InputError(
            f"{name}: input_assay_id {first!r} appears in rows {rows}; each assay needs one unique id"
        )
    is_binary = _booleans(table, "is_binary", empty=None)
    use_regr = _booleans(table, "use_in_regression", empty=False)
    both = is_binary & use_regr
    _fail_if(table, both, "use_in_regression", "is true for a binary assay (is_binary=true); binary assays "
             "cannot be regression tasks — set one of them to false")
    direction = f["direction"].str.lower() if "direction" in f else pd.Series("high", index=f.index)
    direction = direction.replace("", "high")
    _fail_if(table, ~direction.isin(DIRECTIONS), "direction", "must be 'high' (actives have high values) or "
             "'low' (actives have low values)")
    thresholds = []
    threshold_cols = [c for c in f.columns if c.startswith("expert_threshold_")]
    values = pd.DataFrame(index=f.index)
    for col in sorted(threshold_cols):
        num = pd.to_numeric(f[col].replace("", np.nan), errors="coerce")
        bad = (f[col] != "") & ~np.isfinite(num)
        _fail_if(table, bad, col, "is not a finite number; leave it empty or give a threshold value")
        values[col] = num
    for i in range(len(f)):
        row = values.iloc[i].dropna().tolist() if threshold_cols else []
        thresholds.append(sorted(dict.fromkeys(float(t) for t in row)) if not is_binary.iat[i] else [])
    assay_type = f["assay_type"].str.upper()
    unknown = ~assay_type.isin(ASSAY_TYPES)
    rejects.add(name, np.flatnonzero(unknown) + 1, ids[unknown], "input",
                [f"unknown assay_type {t!r}; use one of {', '.join(ASSAY_TYPES)}" for t in f["assay_type"][unknown]])
    assays = pd.DataFrame({
        "assay_type": assay_type.to_numpy(), "is_binary": is_binary.to_numpy(dtype=bool),
        "use_in_regression": use_regr.to_numpy(dtype=bool), "thresholds": thresholds,
        "direction": direction.to_numpy(), "t0_row": np.arange(1, len(f) + 1),
        "rejected": np.where(unknown, "assay rejected in T0: unknown assay_type", None),
    }, index=pd.Index(ids.to_numpy(), name="input_assay_id"))
    lo_hi = [rules.credible_range(t) for t in assay_type]
    assays["credible_min"] = [lo for lo, _ in lo_hi]
    assays["credible_max"] = [hi for _, hi in lo_hi]
    return assays


def validate_t2(table: InputTable, rejects: Rejects) -> tuple[pd.DataFrame, dict[str, str]]:
    """Usable structures (input_compound_id, smiles, t2_row) and, per rejected compound id, the reason."""
    f = table.frame
    name = table.label
    ids = normalize_ids(f["input_compound_id"])
    rows = np.arange(1, len(f) + 1)
    reason = pd.Series(None, index=f.index, dtype=object)
    reason[ids == ""] = "empty input_compound_id"
    reason[reason.isna() & (f["smiles"] == "")] = "empty smiles"
    # Duplicated ids: harmless if every copy has the same SMILES (keep the first), ambiguous otherwise.
    dup = ids.duplicated(keep=False) & (ids != "")
    if dup.any():
        groups = pd.DataFrame({"id": ids[dup], "smiles": f["smiles"][dup]})
        n_smiles = groups.groupby("id")["smiles"].transform("nunique")
        ambiguous = n_smiles > 1
        reason[ambiguous[ambiguous].index] = "input_compound_id appears in several rows with different smiles"
        same = groups[~ambiguous]
        extra = same.index[same.duplicated("id", keep="first")]
        reason[extra] = "duplicate row of an input_compound_id already read (same smiles)"
    if reason.notna().all():
        raise InputError(f"{name}: no usable row (every row has an empty id or smiles; "
                         f"{table.example('smiles')})")
    bad = reason.notna()
    rejects.add(name, rows[bad], ids[bad], "input", reason[bad])
    ambiguous_ids = set(ids[reason == "input_compound_id appears in several rows with different smiles"])
    keep = ~bad
    out = pd.DataFrame({"input_compound_id": ids[keep], "smiles": f["smiles"][keep], "t2_row": rows[keep]})
    rejected_ids = {
        i: f"compound rejected in T2: {r}" for i, r in zip(ids[bad], reason[bad], strict=True)
        if i in ambiguous_ids or r == "empty smiles"
    }
    return out.reset_index(drop=True), rejected_ids


#: T1 records validated per slice: bounds the per-record temporaries (masks, maps, reasons) whatever the file size.
T1_CHUNK_ROWS = 500_000


def assay_record_counts(table: InputTable, chunk_rows: int | None = None) -> dict[str, int]:
    """T1 records per (normalized) input_assay_id, counted slice by slice (the data-loss warnings' totals)."""
    chunk_rows = max(int(chunk_rows or T1_CHUNK_ROWS), 1)
    counts: Counter[str] = Counter()
    column = table.frame["input_assay_id"]
    for start in range(0, len(column), chunk_rows):
        counts.update(normalize_ids(column.iloc[start:start + chunk_rows]).value_counts().to_dict())
    return dict(counts)


def validate_t1(
    table: InputTable,
    assays: pd.DataFrame,
    compounds: pd.DataFrame,
    rejected_compounds: dict[str, str],
    rejects: Rejects,
    losses: AssayLosses | None = None,
    chunk_rows: int | None = None,
) -> pd.DataFrame:
    """Usable activity records: t1_row, input_compound_id, input_assay_id, censor (-1/0/+1), value.

    Validated in slices of `chunk_rows` records, so the temporaries stay bounded whatever T1's size, and the
    two id columns come back as pandas Categoricals over T0's assay ids and T2's usable compound ids: a 4-byte
    code per record instead of a Python string (≈ 60 bytes each, twice per record at 20 M records).
    `losses`, when given, counts the records each credibility range drops, per assay."""
    f = table.frame
    n = len(f)
    chunk_rows = max(int(chunk_rows or T1_CHUNK_ROWS), 1)
    assay_index = pd.Index(assays.index, dtype=object)
    compound_index = pd.Index(pd.unique(compounds["input_compound_id"].to_numpy(dtype=object)), dtype=object)
    parts: list[tuple[np.ndarray, ...]] = []
    incredible_ids: list[np.ndarray] = []
    any_finite = False
    for start in range(0, n, chunk_rows):
        part, incredible, finite = _validate_t1_slice(table, f.iloc[start:start + chunk_rows], start, assays,
                                                      assay_index, compound_index, rejected_compounds, rejects)
        parts.append(part)
        incredible_ids.append(incredible)
        any_finite = any_finite or finite
    if not any_finite:
        raise InputError(
            f"{table.label}: column standard_value holds no finite number ({table.example('standard_value')}); "
            "is it the right column?"
        )
    if losses is not None:
        lost = pd.Series(np.concatenate(incredible_ids), dtype=object)
        for assay_type, ids in lost.groupby(lost.map(assays["assay_type"])):
            losses.add(f"tasks.credibility.{assay_type}", "credibility", ids)
    t1_row, cid, aid, censor, value = (np.concatenate(c) for c in zip(*parts, strict=True))
    return pd.DataFrame({
        "t1_row": t1_row,
        "input_compound_id": pd.Categorical.from_codes(cid, categories=compound_index),
        "input_assay_id": pd.Categorical.from_codes(aid, categories=assay_index),
        "censor": censor,
        "value": value,
    })


def _validate_t1_slice(table: InputTable, f: pd.DataFrame, start: int, assays: pd.DataFrame,
                       assay_index: pd.Index, compound_index: pd.Index, rejected_compounds: dict[str, str],
                       rejects: Rejects) -> tuple[tuple[np.ndarray, ...], np.ndarray, bool]:
    """One slice of T1 (rows start+1 ...): its kept records as arrays (id codes), the assay ids of records a
    credibility range dropped, and whether any standard_value in it is a finite number."""
    name = table.label
    rows = np.arange(start + 1, start + len(f) + 1)
    cid = normalize_ids(f["input_compound_id"])
    aid = normalize_ids(f["input_assay_id"])
    qual_text = f["standard_qualifier"]
    value_text = f["standard_value"]
    value = pd.to_numeric(value_text, errors="coerce").astype(float)
    finite = bool(np.isfinite(value.to_numpy()).any())
    censor = qual_text.map(QUALIFIERS)
    reason = pd.Series(None, index=f.index, dtype=object)

    def flag(mask, text) -> np.ndarray:
        """Give unflagged rows in `mask` a reason: a string, or a function of the mask (built lazily)."""
        mask = np.asarray(mask, dtype=bool) & reason.isna().to_numpy()
        if mask.any():
            reason[mask] = text if isinstance(text, str) else np.asarray(text(mask), dtype=object)
        return mask

    # One hash lookup per record gives both membership and the code (isin / map would hash the ids again each).
    acode = assay_index.get_indexer(aid)
    ccode = compound_index.get_indexer(cid)
    known_assay = acode >= 0
    safe = np.maximum(acode, 0)

    def per_assay(column: str, missing: object) -> pd.Series:
        values = assays[column].to_numpy()[safe]
        return pd.Series(np.where(known_assay, values, missing), index=f.index)

    flag(cid == "", "empty input_compound_id")
    flag(aid == "", "empty input_assay_id")
    flag(~known_assay, lambda m: "input_assay_id " + aid[m] + " is not in T0")
    assay_reject = per_assay("rejected", None)
    flag(assay_reject.notna(), lambda m: assay_reject[m])
    compound_reject = cid.map(rejected_compounds) if rejected_compounds else pd.Series(np.nan, index=f.index)
    flag(compound_reject.notna(), lambda m: compound_reject[m])
    flag(ccode < 0, lambda m: "input_compound_id " + cid[m] + " is not in T2")
    flag(censor.isna(), lambda m: "unknown standard_qualifier " + qual_text[m].map(repr)
         + " (use one of < <= = ~ >= >)")
    flag(value_text == "", "empty standard_value")
    flag(value.isna(), lambda m: "standard_value " + value_text[m].map(repr) + " is not a number")
    flag(~np.isfinite(value.fillna(0.0)), lambda m: "standard_value " + value_text[m].map(repr) + " is not finite")
    binary = per_assay("is_binary", False).eq(True)  # unknown assays are not binary
    flag(binary & (censor.fillna(0) != 0),
         lambda m: "binary assays take '=' only, not " + qual_text[m].map(repr))
    flag(binary & ~value.isin([1.0, -1.0, 0.0]),
         lambda m: "binary assay value " + value_text[m] + " must be +1 (active) or -1 / 0 (inactive)")
    lo = per_assay("credible_min", np.nan).astype(float)
    hi = per_assay("credible_max", np.nan).astype(float)
    incredible = ~binary & ((value < lo) | (value > hi))
    incredible = flag(incredible, lambda m: "standard_value " + value_text[m] + " outside the credible range ["
                      + lo[m].map(_num) + ", " + hi[m].map(_num) + "] of assay_type "
                      + aid[m].map(assays["assay_type"]))
    bad = reason.notna().to_numpy()
    rejects.add(name, rows[bad], cid[bad], "input", reason[bad])
    keep = ~bad
    value = value.where(~binary, np.where(value > 0, 1.0, -1.0))
    kept = (rows[keep], ccode[keep].astype(np.int32), acode[keep].astype(np.int32),
            censor[keep].astype(np.int8).to_numpy(),
            value[keep].to_numpy(dtype=np.float64))
    return kept, aid[incredible].to_numpy(dtype=object), finite


def _num(x: float) -> str:
    return f"{x:g}" if math.isfinite(x) else str(x)


def _booleans(table: InputTable, column: str, empty: bool | None) -> pd.Series:
    text = table.frame[column].str.lower()
    known = text.isin(TRUE | FALSE) | ((text == "") & (empty is not None))
    _fail_if(table, ~known, column, "must be true or false")
    return text.isin(TRUE) | ((text == "") & bool(empty))


def _fail_if(table: InputTable, mask: pd.Series, column: str, problem: str) -> None:
    mask = pd.Series(np.asarray(mask, dtype=bool), index=table.frame.index)
    if mask.any():
        raise InputError(f"{table.label}: column {column} {problem} ({table.example(column, mask)})")
