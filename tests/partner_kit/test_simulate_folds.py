"""`consortium simulate --test-folds N`: every variant is trained and scored once per rotated test fold."""

from __future__ import annotations

import json

from fed_helpers import make_federation

from consortium.comparison import load_comparison
from consortium.simulate import simulate


def test_rotated_test_folds_train_every_variant_per_fold_and_never_select_on_the_test_fold(tmp_path):
    fed = make_federation(tmp_path, rounds=1, local_steps=2, rows=(150, 180))
    out = tmp_path / "run"
    result = simulate(fed.plan_path, list(fed.prepared.values()), out, pooled=True, test_folds=2, progress=False)
    assert sorted({(r["test_fold"], r["partner"]) for r in result.rows}) == sorted(
        (f, n) for f in (0, 1) for n in fed.prepared)
    doc = json.loads((out / "comparison.json").read_text())
    assert doc["test_fold"] == [0, 1] and doc["valid_fold"] == [1, 2]
    for m in doc["models"]:
        metrics = json.loads((out / m["dir"] / "metrics.json").read_text())
        assert metrics["test_fold"] == m["test_fold"]
        assert metrics["valid_fold"] == m["test_fold"] + 1  # the fold beside it selects; the test fold never does
        assert m["dir"].startswith(f"folds/{m['test_fold']}/")
    comparison = load_comparison(out)
    for panel in comparison.panels.values():
        folds = set(panel.tasks["test_fold"]) | set(panel.excluded.get("test_fold", []))
        assert folds == {0, 1}


def test_rotate_tests_seed_i_on_fold_i_and_the_report_merges_them(tmp_path):
    from consortium.report import write_report

    fed = make_federation(tmp_path, rounds=1, local_steps=2, rows=(150, 180))
    out = tmp_path / "run"
    result = simulate(fed.plan_path, list(fed.prepared.values()), out, seeds=2, rotate=True, progress=False)
    assert sorted({(r["seed"], r["test_fold"]) for r in result.rows}) == [(7, 0), (8, 1)]  # plan seed 7
    doc = json.loads((out / "comparison.json").read_text())
    assert doc["seed_per_fold"] is True and doc["test_fold"] == [0, 1]
    assert all(m["dir"].startswith(f"folds/{m['test_fold']}/partners/") for m in doc["models"])
    write_report(out, out / "report.html", n_boot=100)
    data = json.loads((out / "report.json").read_text())
    assert data["seed_per_fold"] and "tested on the i-th test fold" in (out / "report.html").read_text()
