"""Thresholds, labels and quorums: which tasks an assay yields and which are dropped."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from dp_helpers import small_rules

from data_prep.config import TaskRules
from data_prep.tasks import build_tasks, task_table, threshold_labels


def test_threshold_labels_handle_equal_and_censored_values():
    value = np.array([7.0, 5.0, 6.0, 7.0, 5.0, 5.0, 7.0])
    censor = np.array([0, 0, 0, 1, 1, -1, -1], dtype=np.int8)
    # '=7' active, '=5' inactive, '=6' active at 6 (>=), '>7' active, '>5' unknown, '<5' inactive, '<7' unknown
    assert threshold_labels(value, censor, 6.0, "high").tolist() == [1, -1, 1, 1, 0, -1, 0]
    # direction low: active when value <= threshold
    assert threshold_labels(value, censor, 6.0, "low").tolist() == [-1, 1, 1, -1, 0, 1, 0]


def assay_table(rows: list[dict]) -> pd.DataFrame:
    base = {"assay_type": "OTHER", "is_binary": False, "use_in_regression": False, "thresholds": [],
            "direction": "high", "rejected": None}
    frame = pd.DataFrame([{**base, **r} for r in rows]).set_index("input_assay_id")
    return frame


def groups_for(assay: str, values, censor=None, start_row: int = 0) -> pd.DataFrame:
    n = len(values)
    return pd.DataFrame({"input_assay_id": assay, "row": np.arange(start_row, start_row + n),
                         "value": np.asarray(values, dtype=float),
                         "censor": np.zeros(n, np.int8) if censor is None else np.asarray(censor, np.int8),
                         "n_records": 1})


def test_auto_threshold_takes_the_first_value_of_the_list_meeting_the_quorum():
    # 30 compounds at 8.5, 30 at 6.5, 30 at 4.0: 8.0 gives 30 actives / 60 inactives -> chosen first.
    values = [8.5] * 30 + [6.5] * 30 + [4.0] * 30
    groups = groups_for("A", values)
    folds = np.arange(90) % 5
    tasks = build_tasks(groups, assay_table([{"input_assay_id": "A"}]), folds, TaskRules(), 5)
    assert [r["threshold"] for r in tasks.class_rows] == [8.0]
    assert tasks.class_rows[0]["threshold_method"] == "auto"
    # with only 20 above 8, the next threshold (7.0) is taken
    groups = groups_for("A", [8.5] * 20 + [7.5] * 30 + [4.0] * 40)
    tasks = build_tasks(groups, assay_table([{"input_assay_id": "A"}]), folds, TaskRules(), 5)
    assert [r["threshold"] for r in tasks.class_rows] == [7.0]


def test_auto_threshold_for_direction_low_starts_from_the_lowest_value():
    groups = groups_for("A", [4.2] * 30 + [6.5] * 60)
    tasks = build_tasks(groups, assay_table([{"input_assay_id": "A", "direction": "low"}]),
                        np.arange(90) % 5, TaskRules(), 5)
    assert [r["threshold"] for r in tasks.class_rows] == [4.4]
    assert tasks.class_rows[0]["actives"] == 30


def test_expert_thresholds_each_give_a_task_and_regression_is_added():
    groups = groups_for("A", [4.0, 5.0, 6.0, 7.0, 8.0, 9.0] * 3)
    assays = assay_table([{"input_assay_id": "A", "thresholds": [5.5, 7.5], "use_in_regression": True}])
    tasks = build_tasks(groups, assays, np.arange(18) % 3, small_rules(), 3)
    assert [r["threshold"] for r in tasks.class_rows] == [5.5, 7.5]
    assert [r["threshold_method"] for r in tasks.class_rows] == ["expert", "expert"]
    assert len(tasks.regr_rows) == 1
    table = task_table(tasks)
    assert table["kind"].tolist() == ["classification", "classification", "regression"]
    assert table["task_index"].tolist() == [0, 1, 2]
    assert math.isnan(table["threshold"].iloc[2])
    assert table["actives"].tolist()[:2] == [12, 6]


def test_quorum_failure_drops_the_task_with_a_reason():
    groups = pd.concat([groups_for("B", [1.0] * 24 + [-1.0] * 100),
                        groups_for("C", [1.0] * 25 + [-1.0] * 25, start_row=124)], ignore_index=True)
    assays = assay_table([{"input_assay_id": "B", "is_binary": True}, {"input_assay_id": "C", "is_binary": True}])
    tasks = build_tasks(groups, assays, np.arange(174) % 5, TaskRules(), 5)
    assert [r["input_assay_id"] for r in tasks.class_rows] == ["C"]
    assert len(tasks.dropped) == 1
    assert tasks.dropped[0]["input_assay_id"] == "B"
    assert tasks.dropped[0]["reason"] == "training quorum not met: 24 actives, 100 inactives (needs 25 and 25)"


def test_no_automatic_threshold_is_reported_as_dropped():
    groups = groups_for("A", [5.5] * 90)  # all identical: no threshold splits them
    tasks = build_tasks(groups, assay_table([{"input_assay_id": "A"}]), np.arange(90) % 5, TaskRules(), 5)
    assert tasks.class_rows == []
    assert "no automatic threshold" in tasks.dropped[0]["reason"]


def test_aggregation_weight_needs_the_evaluation_quorum_in_every_fold():
    values = [1.0] * 60 + [-1.0] * 60
    assays = assay_table([{"input_assay_id": "B", "is_binary": True}])
    spread = np.arange(120) % 5
    tasks = build_tasks(groups_for("B", values), assays, spread, TaskRules(), 5)
    assert tasks.class_rows[0]["aggregation_weight"] == 1.0
    assert [tasks.class_rows[0][f"actives_fold{k}"] for k in range(5)] == [12] * 5
    skewed = np.where(np.arange(120) < 60, np.arange(120) % 4, 4)  # every active outside fold 4
    tasks = build_tasks(groups_for("B", values), assays, skewed, TaskRules(), 5)
    assert tasks.class_rows[0]["training_weight"] == 1.0
    assert tasks.class_rows[0]["aggregation_weight"] == 0.0


def test_regression_quorum_counts_values_and_uncensored_values():
    assays = assay_table([{"input_assay_id": "R", "use_in_regression": True, "thresholds": [6.0]}])
    folds = np.arange(60) % 5
    few_uncensored = groups_for("R", [5.0] * 60, censor=[0] * 24 + [-1] * 36)
    tasks = build_tasks(few_uncensored, assays, folds, TaskRules(), 5)
    assert tasks.regr_rows == []
    assert any("regression quorum not met: 60 values, 24 uncensored" in d["reason"] for d in tasks.dropped)
    enough = groups_for("R", [5.0] * 60, censor=[0] * 30 + [-1] * 30)
    tasks = build_tasks(enough, assays, folds, TaskRules(), 5)
    assert tasks.regr_rows[0]["uncensored"] == 30 and tasks.regr_rows[0]["censored"] == 30
    assert tasks.regr_rows[0]["censored_weight"] == TaskRules().censored_weight
