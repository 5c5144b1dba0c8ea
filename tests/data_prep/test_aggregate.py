"""Replicate merging per (assay, structure row), with qualifiers normalized by validation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from data_prep.aggregate import aggregate
from data_prep.validate import QUALIFIERS, Rejects


def run(rows: list[tuple], binary: set[str] = frozenset()) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """rows: (assay, row, qualifier, value); returns (groups, records, rejected)."""
    records = pd.DataFrame({
        "t1_row": np.arange(1, len(rows) + 1),
        "input_compound_id": [f"C{r[1]}" for r in rows],
        "input_assay_id": [r[0] for r in rows],
        "row": [r[1] for r in rows],
        "censor": np.array([QUALIFIERS[r[2]] for r in rows], dtype=np.int8),
        "value": [float(r[3]) for r in rows],
    })
    rejects = Rejects()
    groups = aggregate(records, set(binary), rejects, "T1.csv")
    return groups, records, rejects.frame()


def merged(groups: pd.DataFrame, assay: str, row: int) -> tuple[float, int]:
    g = groups[(groups.input_assay_id == assay) & (groups.row == row)].iloc[0]
    return g.value, int(g.censor)


@pytest.mark.parametrize("text, flag", [("<", -1), ("<=", -1), ("=", 0), ("~", 0), ("", 0), (">=", 1), (">", 1)])
def test_qualifiers_normalize_to_censor_flags(text, flag):
    assert QUALIFIERS[text] == flag


def test_binary_replicates_take_the_majority():
    groups, _, rejected = run([("B", 0, "=", 1), ("B", 0, "=", 1), ("B", 0, "=", -1), ("B", 1, "=", -1)], {"B"})
    assert merged(groups, "B", 0) == (1.0, 0)
    assert merged(groups, "B", 1) == (-1.0, 0)
    assert rejected.empty


def test_binary_tie_is_rejected_with_a_reason():
    groups, records, rejected = run([("B", 0, "=", 1), ("B", 0, "=", -1), ("B", 1, "=", 1)], {"B"})
    assert list(rejected["row"]) == [1, 2]
    assert rejected["reason"].str.contains("conflicting replicates: 1 active and 1 inactive").all()
    assert (records["group"].iloc[:2] == -1).all()
    assert np.isnan(merged(groups, "B", 0)[0])


def test_dose_response_merges_to_the_median_of_equal_values():
    groups, _, rejected = run([("D", 0, "=", 5.0), ("D", 0, "=", 6.0), ("D", 0, "=", 9.0), ("D", 1, "=", 7.0),
                               ("D", 1, "~", 8.0)])
    assert merged(groups, "D", 0) == (6.0, 0)
    assert merged(groups, "D", 1) == (7.5, 0)
    assert rejected.empty


def test_censored_replicates_agreeing_with_the_median_merge_and_contradicting_ones_are_rejected():
    groups, records, rejected = run([
        ("D", 0, "=", 6.0), ("D", 0, "<", 7.0), ("D", 0, ">=", 5.0),  # both agree with 6
        ("D", 1, "=", 6.0), ("D", 1, "<", 5.0), ("D", 1, ">", 7.0),   # both contradict 6
    ])
    assert merged(groups, "D", 0) == (6.0, 0) and merged(groups, "D", 1) == (6.0, 0)
    assert list(rejected["row"]) == [5, 6]
    assert rejected["reason"].iloc[0].startswith("censored replicate '<5' contradicts the merged value 6")
    assert records.set_index("t1_row").loc[[1, 2, 3, 4], "group"].ge(0).all()


def test_one_sided_censored_values_merge_to_the_tightest_bound():
    groups, _, rejected = run([("D", 0, "<", 5.0), ("D", 0, "<=", 4.0), ("D", 1, ">", 5.0), ("D", 1, ">", 6.5)])
    assert merged(groups, "D", 0) == (4.0, -1)
    assert merged(groups, "D", 1) == (6.5, 1)
    assert rejected.empty


def test_mixed_lower_and_upper_bounds_without_a_value_are_rejected():
    _, _, rejected = run([("D", 0, "<", 5.0), ("D", 0, ">", 4.0), ("D", 1, "=", 5.0)])
    assert list(rejected["row"]) == [1, 2]
    assert rejected["reason"].str.contains("mix '<' and '>'").all()
    assert (rejected["stage"] == "aggregate").all()


def test_assays_and_rows_are_merged_independently():
    groups, _, _ = run([("D", 0, "=", 5.0), ("E", 0, "=", 7.0), ("D", 1, "=", 9.0)])
    assert len(groups) == 3
    assert merged(groups, "E", 0) == (7.0, 0)
