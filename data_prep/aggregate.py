"""Merging replicate measurements: one value per (assay, structure row).

Rules (see docs/data_prep.md):
- binary assays: majority of the +1/-1 labels; a tie cannot be merged and all its records are rejected;
- dose-response assays: when any '=' value exists the merged value is the median of the '=' values; a
  censored replicate that agrees with it ('<v' with median <= v, '>v' with median >= v) is merged, one that
  contradicts it is rejected. Without '=' values, only-'<' merges to '<' min (the tightest bound),
  only-'>' to '>' max; a mix of '<' and '>' cannot be merged into one value and is rejected.

Replicates never span assays, so the records are merged in blocks of whole assays (`AGGREGATE_BLOCK_RECORDS`
records at most, unless one assay is larger): every per-record temporary (group keys, masks, medians,
reasons) is bounded by the block, not by T1, which is what keeps a 20 M-record partner's aggregation small.
Only compact per-record arrays (the group number) and per-group arrays outlive a block.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from data_prep.validate import Rejects

STAGE = "aggregate"

#: Records merged per block of whole assays (as many as validate_t1 checks per slice): bounds the merge
#: temporaries (≈ 130 bytes a record, 65 MB a block) whatever T1's size.
AGGREGATE_BLOCK_RECORDS = 500_000


@dataclass
class _Block:
    """One block's merged groups (in first-appearance order inside the block) and its rejected records."""

    first: np.ndarray  # record index of each group's first record
    value: np.ndarray
    censor: np.ndarray
    kept: np.ndarray
    bad: np.ndarray  # record indices rejected here
    reasons: np.ndarray  # one per `bad`


def aggregate(records: pd.DataFrame, binary_assays: set[str], rejects: Rejects, t1_name: str,
              block_records: int | None = None) -> pd.DataFrame:
    """Aggregate records (t1_row, input_compound_id, input_assay_id, row, censor, value).

    Returns one row per (input_assay_id, row) with the merged `value` and `censor` and `n_records`, numbered
    in order of first appearance; `records` gains that number as a `group` column (-1 for records rejected here).
    """
    block_records = max(int(block_records or AGGREGATE_BLOCK_RECORDS), 1)
    assay = records["input_assay_id"]
    if isinstance(assay.dtype, pd.CategoricalDtype):
        codes, names = assay.cat.codes.to_numpy(), assay.cat.categories
    else:
        codes, names = pd.factorize(assay, sort=False)
    if len(codes) and codes.min() < 0:  # validation never lets a record without an assay through
        raise ValueError("aggregate: a record has no input_assay_id")
    is_binary = np.asarray(pd.Index(names).isin(binary_assays), dtype=bool)
    row = records["row"].to_numpy()
    value = records["value"].to_numpy()
    censor = records["censor"].to_numpy()
    n = len(records)
    row_span = int(row.max()) + 1 if n else 1
    index = index_dtype(n)  # record and group numbers: 4 bytes each, not 8
    group = np.full(n, -1, dtype=index)
    blocks: list[_Block] = []
    n_groups = 0
    for lo, hi in _assay_blocks(np.bincount(codes, minlength=len(names)) if n else np.zeros(0, np.int64),
                                block_records):
        idx = np.flatnonzero((codes >= lo) & (codes < hi)) if (lo, hi) != (0, len(names)) else np.arange(n)
        a = codes[idx].astype(np.int64)
        local = pd.factorize((a - lo) * row_span + row[idx].astype(np.int64), sort=False)[0]
        block = _merge(local, value[idx], censor[idx], is_binary[a])
        group[idx] = local + n_groups
        n_groups += len(block.first)
        block.first, block.bad = idx[block.first].astype(index), idx[block.bad]
        blocks.append(block)
    if not blocks:
        blocks.append(_Block(*(np.zeros(0, dtype=t) for t in (index, float, np.int8, np.int32, np.int64, object))))

    # Blocks go assay by assay; renumber the groups in order of their first record, as one pass over T1 would.
    # Per-group arrays are nearly as many as the records (few replicates): each is gathered, permuted and its
    # block parts dropped in turn, and the frame is built without copies, so no column exists twice for long.
    first = _gather(blocks, "first")
    order = np.argsort(first, kind="stable")
    renumber = np.empty(n_groups, dtype=index)
    renumber[order] = np.arange(n_groups, dtype=index)
    for start in range(0, n, block_records):  # in slices: no second full-length temporary
        group[start:start + block_records] = renumber[group[start:start + block_records]]
    del renumber
    bad = _gather(blocks, "bad")
    if len(bad):
        by_record = np.argsort(bad, kind="stable")
        bad = bad[by_record]
        reasons = _gather(blocks, "reasons")[by_record]
        rejects.add(t1_name, records["t1_row"].to_numpy()[bad], records["input_compound_id"].iloc[bad], STAGE,
                    reasons)
        group[bad] = -1
    records["group"] = group
    first = first[order]
    kept = _gather(blocks, "kept", order)
    value = _gather(blocks, "value", order)
    value[kept == 0] = np.nan  # group ids stay stable (records point at them); an all-rejected group has no value
    return pd.DataFrame({
        "input_assay_id": assay.array.take(first),  # stays a Categorical (codes) when the records' is
        "row": row[first],
        "value": value,
        "censor": _gather(blocks, "censor", order),
        "n_records": kept,
    }, copy=False)


def index_dtype(n: int) -> type[np.signedinteger]:
    """int32 for record, row and group numbers below 2**31 (every real partner): 4 bytes a number less than int64
    at 20 M records."""
    return np.int32 if n < 2**31 else np.int64


def _gather(blocks: list[_Block], name: str, order: np.ndarray | None = None) -> np.ndarray:
    """One per-group (or per-reject) field of every block, concatenated (and permuted by `order`); the
    blocks' parts are dropped as soon as they are copied."""
    out = np.concatenate([getattr(b, name) for b in blocks])
    for b in blocks:
        setattr(b, name, np.zeros(0, out.dtype))  # not a view of `out`, which would keep it alive
    return out if order is None else out[order]


def _assay_blocks(per_assay: np.ndarray, block_records: int) -> list[tuple[int, int]]:
    """Contiguous assay-code ranges [lo, hi) holding about `block_records` records each (one assay at least)."""
    blocks, lo, total = [], 0, 0
    for code, count in enumerate(per_assay.tolist()):
        if total and total + count > block_records:
            blocks.append((lo, code))
            lo, total = code, 0
        total += count
    if total:
        blocks.append((lo, len(per_assay)))
    return blocks


def _merge(group: np.ndarray, value: np.ndarray, censor: np.ndarray, binary: np.ndarray) -> _Block:
    """Merge one block's records; `group` numbers their (assay, row) pairs 0..k-1 in order of first appearance.

    Returned positions (`first`, `bad`) index the block's records."""
    n_groups = int(group.max()) + 1 if len(group) else 0
    reason = np.full(len(group), None, dtype=object)

    # Binary: majority of labels.
    vote = np.bincount(group[binary], weights=value[binary], minlength=n_groups)
    merged_value = np.where(vote > 0, 1.0, np.where(vote < 0, -1.0, np.nan))
    merged_censor = np.zeros(n_groups, dtype=np.int8)
    tie = binary & (vote[group] == 0)
    if tie.any():
        reason[tie] = _tie_reasons(group[tie], group[binary], value[binary])

    # Dose-response: median of '=' values, else tightest bound of one-sided censored values.
    dr = ~binary
    eq = dr & (censor == 0)
    median = pd.DataFrame({"g": group[eq], "v": value[eq]}).groupby("g")["v"].median()
    eq_median = np.full(n_groups, np.nan)
    eq_median[median.index.to_numpy()] = median.to_numpy()
    lt = dr & (censor < 0)
    gt = dr & (censor > 0)
    lt_min = _group_reduce(group[lt], value[lt], n_groups, np.minimum, np.inf)
    gt_max = _group_reduce(group[gt], value[gt], n_groups, np.maximum, -np.inf)
    has_eq = ~np.isnan(eq_median)
    dr_groups = np.zeros(n_groups, dtype=bool)
    dr_groups[group[dr]] = True
    merged_value = np.where(dr_groups & has_eq, eq_median, merged_value)
    only_lt = dr_groups & ~has_eq & np.isfinite(lt_min) & ~np.isfinite(gt_max)
    only_gt = dr_groups & ~has_eq & np.isfinite(gt_max) & ~np.isfinite(lt_min)
    mixed = dr_groups & ~has_eq & np.isfinite(lt_min) & np.isfinite(gt_max)
    merged_value = np.where(only_lt, lt_min, merged_value)
    merged_value = np.where(only_gt, gt_max, merged_value)
    merged_value = np.where(mixed, np.nan, merged_value)
    merged_censor[only_lt] = -1
    merged_censor[only_gt] = 1
    reason[dr & mixed[group]] = "replicates mix '<' and '>' values without any '=' value; they cannot be merged"
    m = eq_median[group]
    contradicts = (lt & has_eq[group] & (value < m)) | (gt & has_eq[group] & (value > m))
    if contradicts.any():
        sign = np.where(censor[contradicts] < 0, "<", ">")
        reason[contradicts] = [
            f"censored replicate '{s}{v:g}' contradicts the merged value {mv:g} (median of '=' replicates)"
            for s, v, mv in zip(sign, value[contradicts], m[contradicts], strict=True)
        ]

    bad = np.flatnonzero(tie | (dr & mixed[group]) | contradicts)
    kept = np.bincount(np.delete(group, bad), minlength=n_groups).astype(np.int32)  # a count per group
    # First-appearance numbering: a group's first record is where its number exceeds every earlier one.
    seen = np.maximum.accumulate(group) if len(group) else group
    first = np.flatnonzero(group > np.concatenate(([-1], seen[:-1])))
    return _Block(first, merged_value, merged_censor, kept, bad, reason[bad])


def _group_reduce(group: np.ndarray, value: np.ndarray, n: int, ufunc: np.ufunc, fill: float) -> np.ndarray:
    out = np.full(n, fill)
    ufunc.at(out, group, value)
    return out


def _tie_reasons(tied_groups: np.ndarray, bin_groups: np.ndarray, bin_values: np.ndarray) -> list[str]:
    actives = np.bincount(bin_groups, weights=(bin_values > 0).astype(float))
    return [f"conflicting replicates: {int(actives[g])} active and {int(actives[g])} inactive; "
            "a tie cannot be merged" for g in tied_groups]
