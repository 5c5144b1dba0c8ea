"""Merging replicate measurements: one value per (assay, structure row).

Rules (see docs/data_prep.md):
- binary assays: majority of the +1/-1 labels; a tie cannot be merged and all its records are rejected;
- dose-response assays: when any '=' value exists the merged value is the median of the '=' values; a
  censored replicate that agrees with it ('<v' with median <= v, '>v' with median >= v) is merged, one that
  contradicts it is rejected. Without '=' values, only-'<' merges to '<' min (the tightest bound),
  only-'>' to '>' max; a mix of '<' and '>' cannot be merged into one value and is rejected.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from data_prep.validate import Rejects

STAGE = "aggregate"


def aggregate(records: pd.DataFrame, binary_assays: set[str], rejects: Rejects, t1_name: str) -> pd.DataFrame:
    """Aggregate records (t1_row, input_compound_id, input_assay_id, row, censor, value).

    Returns one row per (input_assay_id, row) with the merged `value` and `censor` and `n_records`;
    `records` gains a `group` column (-1 for records rejected here).
    """
    records["group"] = _group_ids(records["input_assay_id"], records["row"].to_numpy())
    n_groups = int(records["group"].max()) + 1 if len(records) else 0
    group = records["group"].to_numpy()
    value = records["value"].to_numpy()
    censor = records["censor"].to_numpy()
    binary = records["input_assay_id"].isin(binary_assays).to_numpy()
    reason = np.full(len(records), None, dtype=object)

    merged_value = np.full(n_groups, np.nan)
    merged_censor = np.zeros(n_groups, dtype=np.int8)

    # Binary: majority of labels.
    vote = np.bincount(group[binary], weights=value[binary], minlength=n_groups)
    merged_value = np.where(vote > 0, 1.0, np.where(vote < 0, -1.0, np.nan))
    tie = binary & (vote[group] == 0)
    if tie.any():
        reason[tie] = _tie_reasons(group[tie], group[binary], value[binary])

    # Dose-response: median of '=' values, else tightest bound of one-sided censored values.
    dr = ~binary
    eq = dr & (censor == 0)
    frame = pd.DataFrame({"g": group[eq], "v": value[eq]})
    median = frame.groupby("g")["v"].median()
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
    bad_mix = dr & mixed[group]
    reason[bad_mix] = "replicates mix '<' and '>' values without any '=' value; they cannot be merged"
    m = eq_median[group]
    contradicts = (lt & has_eq[group] & (value < m)) | (gt & has_eq[group] & (value > m))
    if contradicts.any():
        sign = np.where(censor[contradicts] < 0, "<", ">")
        reason[contradicts] = [
            f"censored replicate '{s}{v:g}' contradicts the merged value {mv:g} (median of '=' replicates)"
            for s, v, mv in zip(sign, value[contradicts], m[contradicts], strict=True)
        ]

    first_pos = np.unique(group, return_index=True)[1]  # each group's first record; groups are 0..n-1
    first = records[["input_assay_id", "row"]].iloc[first_pos]  # two columns, not a copy of every record
    bad = np.array([r is not None for r in reason], dtype=bool)
    if bad.any():
        sub = records[bad]
        rejects.add(t1_name, sub["t1_row"], sub["input_compound_id"], STAGE, reason[bad])
        records.loc[bad, "group"] = -1
    kept = np.bincount(group[~bad], minlength=n_groups)
    # Group ids stay stable (records point at them); a group whose records were all rejected has no value.
    return pd.DataFrame({
        "input_assay_id": first["input_assay_id"].array,  # stays a Categorical (codes) when the records' is
        "row": first["row"].to_numpy(),
        "value": np.where(kept > 0, merged_value, np.nan),
        "censor": merged_censor,
        "n_records": kept,
    })


def _group_ids(assay: pd.Series, row: np.ndarray) -> np.ndarray:
    """Group number of each record's (assay, row) pair, numbered in order of first appearance.

    That is `groupby([...], sort=False).ngroup()`, computed on integer codes: hashing one int64 per record
    instead of a Python string per record is what keeps aggregation memory low at millions of records.
    """
    codes = (assay.cat.codes.to_numpy() if isinstance(assay.dtype, pd.CategoricalDtype)
             else pd.factorize(assay, sort=False)[0]).astype(np.int64)
    key = codes * (int(row.max()) + 1 if len(row) else 1) + row.astype(np.int64)
    return pd.factorize(key, sort=False)[0].astype(np.int64)


def _group_reduce(group: np.ndarray, value: np.ndarray, n: int, ufunc: np.ufunc, fill: float) -> np.ndarray:
    out = np.full(n, fill)
    ufunc.at(out, group, value)
    return out


def _tie_reasons(tied_groups: np.ndarray, bin_groups: np.ndarray, bin_values: np.ndarray) -> list[str]:
    actives = np.bincount(bin_groups, weights=(bin_values > 0).astype(float))
    return [f"conflicting replicates: {int(actives[g])} active and {int(actives[g])} inactive; "
            "a tie cannot be merged" for g in tied_groups]
