"""A credibility range or quorum that drops more than 5 % of an assay's records is a console warning naming
the plan setting (it used to be visible only in rejected.parquet)."""

from __future__ import annotations

import json

from dp_helpers import KEY, small_config, t0_row, write_inputs

from data_prep.losses import AssayLosses
from data_prep.prepare import prepare

MOLS = [(f"C{n:02d}", "C" * n + "O") for n in range(1, 21)] + [(f"R{n}", "c1ccccc1" + "C" * n + "O")
                                                                 for n in range(1, 21)]


def prepared(tmp_path, t0, t1, capsys, **rules) -> tuple[dict, str]:
    write_inputs(tmp_path / "in", t0, t1, MOLS)
    prepare(small_config(**rules), KEY, tmp_path / "in", tmp_path / "out", cache_dir=False, n_jobs=1,
            progress=False)
    return json.loads((tmp_path / "out" / "manifest.json").read_text()), capsys.readouterr().err


def test_credibility_range_dropping_over_5_percent_warns_with_the_setting(tmp_path, capsys):
    t0 = [t0_row("D1", binary=False, regression=True, thresholds=(6.0,)),
          t0_row("D2", binary=False, regression=True, thresholds=(6.0,)),
          t0_row("D3", binary=False, regression=True, thresholds=(6.0,), assay_type="ADME")]
    ids = [cid for cid, _ in MOLS[:20]]
    values = [4.0, 8.0] * 10
    t1 = [(c, "D1", "=", 13.5 if i < 3 else v) for i, (c, v) in enumerate(zip(ids, values, strict=True))]  # 15 %
    t1 += [(c, "D2", "=", 12.5 if i < 1 else v) for i, (c, v) in enumerate(zip(ids, values, strict=True))]  # 5 %
    t1 += [(c, "D3", "=", v) for c, v in zip(ids, values, strict=True)]
    manifest, err = prepared(tmp_path, t0, t1, capsys)
    assert manifest["warnings"] == [
        "tasks.credibility.OTHER dropped more than 5% of the records of 1 assay(s) (up to 15%; 3 records); the "
        "values lie outside the plan's range: widen it if they are real, or check their unit"]
    assert "warning:" in err and "tasks.credibility.OTHER" in " ".join(err.split())
    # The same data under a range that fits: no warning.
    manifest, err = prepared(tmp_path, t0, t1, capsys, credibility={"OTHER": [3.0, 14.0]})
    assert manifest["warnings"] == [] and "warning" not in err


def test_quorum_dropping_an_assay_warns_with_the_quorum_settings(tmp_path, capsys):
    t0 = [t0_row("B1", binary=True), t0_row("B2", binary=True)]
    t1 = [(c, "B1", "=", 1 if i % 2 else -1) for i, (c, _) in enumerate(MOLS)]
    t1 += [(c, "B2", "=", 1 if i == 0 else -1) for i, (c, _) in enumerate(MOLS[:5])]  # 1 active: below 2
    manifest, err = prepared(tmp_path, t0, t1, capsys)
    assert len(manifest["warnings"]) == 1
    line = manifest["warnings"][0]
    assert line.startswith("tasks.min_train_actives / tasks.min_train_inactives dropped more than 5% of the "
                           "records of 1 assay(s) (up to 100%; 5 records)")
    assert "tasks.min_train_actives" in " ".join(err.split())


def test_assay_losses_counts_shares_per_assay_not_over_all_records():
    losses = AssayLosses({"big": 1000, "small": 10})
    losses.add("tasks.credibility.OTHER", "credibility", ["big"] * 40 + ["small"] * 1)
    # 'big' lost 4 % (no warning), 'small' 10 %: one assay named, with its own share and count.
    assert losses.warnings() == [
        "tasks.credibility.OTHER dropped more than 5% of the records of 1 assay(s) (up to 10%; 1 records); the "
        "values lie outside the plan's range: widen it if they are real, or check their unit"]
