"""Aggregation in blocks of whole assays (issue #11) against a plain-Python statement of the merge rules.

Random records (binary and dose-response assays, replicates, '<' / '=' / '>' mixes, ties) are merged with
blocks of 1 record up to one block for everything; every block size must give the reference's groups, numbering
(first appearance over the records) and rejected rows with their reasons.
"""

from __future__ import annotations

import statistics

import numpy as np
import pandas as pd
import pytest

from data_prep.aggregate import aggregate
from data_prep.validate import Rejects


def _records(seed: int, categorical: bool) -> tuple[pd.DataFrame, set[str]]:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 300))
    n_assays = int(rng.integers(1, 9))
    assays = [f"A{i}" for i in range(n_assays)]
    binary = {a for a in assays if rng.random() < 0.35}
    aid = rng.integers(0, n_assays, n)
    censor = rng.choice([-1, 0, 0, 1], n).astype(np.int8)
    value = np.round(rng.normal(6.0, 1.0, n), 1)
    is_bin = np.array([assays[a] in binary for a in aid], dtype=bool)
    censor[is_bin] = 0
    value[is_bin] = rng.choice([-1.0, 1.0], int(is_bin.sum()))
    ids = (pd.Categorical.from_codes(aid, categories=pd.Index(assays, dtype=object)) if categorical
           else pd.Series([assays[a] for a in aid], dtype=object))
    return pd.DataFrame({
        "t1_row": np.arange(1, n + 1),
        "input_compound_id": [f"C{i}" for i in rng.integers(0, 40, n)],
        "input_assay_id": ids,
        "row": rng.integers(0, int(rng.integers(1, 25)), n).astype(np.int64),
        "censor": censor,
        "value": value,
    }), binary


def _reference(records: pd.DataFrame, binary: set[str]) -> tuple[list[tuple], list[int], dict[int, str]]:
    """The rules of data_prep.aggregate, one group at a time: (assay, row, value, censor, n_kept) per group in
    first-appearance order, each record's group (-1 when rejected), and reason per rejected t1_row."""
    members: dict[tuple, list[int]] = {}
    for i, key in enumerate(zip(records["input_assay_id"].astype(str), records["row"], strict=True)):
        members.setdefault(key, []).append(i)
    number = {key: g for g, key in enumerate(members)}
    groups, group, reasons = [], [number[(str(a), r)] for a, r in zip(records["input_assay_id"], records["row"],
                                                                      strict=True)], {}
    value, censor, t1_row = records["value"].to_numpy(), records["censor"].to_numpy(), records["t1_row"].to_numpy()

    def reject(i: int, why: str) -> None:
        reasons[int(t1_row[i])] = why
        group[i] = -1

    for (assay, row), idx in members.items():
        merged, flag = float("nan"), 0
        if assay in binary:
            vote = sum(value[i] for i in idx)
            if vote == 0:
                actives = sum(value[i] > 0 for i in idx)
                for i in idx:
                    reject(i, f"conflicting replicates: {actives} active and {actives} inactive; "
                              "a tie cannot be merged")
            else:
                merged = 1.0 if vote > 0 else -1.0
        else:
            eq = [value[i] for i in idx if censor[i] == 0]
            lt = [value[i] for i in idx if censor[i] < 0]
            gt = [value[i] for i in idx if censor[i] > 0]
            if eq:
                merged = statistics.median(eq)
                for i in idx:
                    if (censor[i] < 0 and value[i] < merged) or (censor[i] > 0 and value[i] > merged):
                        sign = "<" if censor[i] < 0 else ">"
                        reject(i, f"censored replicate '{sign}{value[i]:g}' contradicts the merged value "
                                  f"{merged:g} (median of '=' replicates)")
            elif lt and gt:
                for i in idx:
                    reject(i, "replicates mix '<' and '>' values without any '=' value; they cannot be merged")
            elif lt:
                merged, flag = min(lt), -1
            else:
                merged, flag = max(gt), 1
        kept = sum(group[i] >= 0 for i in idx)
        groups.append((assay, int(row), merged if kept else float("nan"), flag, kept))
    return groups, group, reasons


@pytest.mark.parametrize("seed", range(40))
def test_every_block_size_merges_like_the_reference(seed):
    records, binary = _records(seed, categorical=seed % 2 == 0)
    expected_groups, expected_group, expected_reasons = _reference(records, binary)
    for block in (1, 2, 7, 50, None):
        frame = records.copy()
        rejects = Rejects()
        groups = aggregate(frame, binary, rejects, "T1.csv", block_records=block)
        got = list(zip(groups["input_assay_id"].astype(str), groups["row"].astype(int), groups["value"],
                       groups["censor"].astype(int), groups["n_records"].astype(int), strict=True))
        assert len(got) == len(expected_groups)
        for g, e in zip(got, expected_groups, strict=True):
            assert g[:2] == e[:2] and g[3:] == e[3:], (block, g, e)
            assert (np.isnan(g[2]) and np.isnan(e[2])) or g[2] == e[2], (block, g, e)
        assert frame["group"].tolist() == expected_group, block
        rejected = rejects.frame()
        assert dict(zip(rejected["row"], rejected["reason"], strict=True)) == expected_reasons, block
        assert rejected["row"].is_monotonic_increasing and (rejected["stage"] == "aggregate").all()


def test_blocks_hold_whole_assays_and_the_group_column_is_compact():
    records, binary = _records(3, categorical=True)
    whole = records.copy()
    aggregate(whole, binary, Rejects(), "T1.csv")
    assert whole["group"].dtype == np.int32  # 4 bytes a record at 20 M records
    tiny = records.copy()
    aggregate(tiny, binary, Rejects(), "T1.csv", block_records=1)  # one assay per block, however small
    assert np.array_equal(tiny["group"].to_numpy(), whole["group"].to_numpy())


def test_empty_records_give_no_groups():
    records, binary = _records(0, categorical=True)
    records = records.iloc[:0].copy()
    groups = aggregate(records, binary, Rejects(), "T1.csv")
    assert groups.empty and list(groups.columns) == ["input_assay_id", "row", "value", "censor", "n_records"]
    assert len(records["group"]) == 0
