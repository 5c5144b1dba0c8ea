"""The comparison report: numbers recomputed from the parquet files, a self-contained HTML page, CLI errors."""

from __future__ import annotations

import base64
import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest
from scipy.stats import pearsonr
from sklearn.metrics import average_precision_score, r2_score, roc_auc_score
from synthetic_run import write_run
from typer.testing import CliRunner

from consortium.cli import app
from consortium.comparison import load_comparison
from consortium.report import write_report

N_BOOT = 200


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run_dir = write_run(tmp_path_factory.mktemp("run") / "run")
    out = run_dir / "report.html"
    write_report(run_dir, out, n_boot=N_BOOT)
    return run_dir, out, json.loads((run_dir / "report.json").read_text())


def _direct(run_dir, metric_fn, kind):
    """{partner: {variant: {task: seed-mean metric}}} straight from the parquet files with scikit-learn."""
    doc = json.loads((run_dir / "comparison.json").read_text())
    acc: dict = {}
    for m in doc["models"]:
        f = pd.read_parquet(run_dir / m["dir"] / "test_predictions.parquet")
        f = f[(f["kind"] == kind) & (f["censor"] == 0)]
        for t, g in f.groupby("task_index"):
            if kind == "classification" and min((g["y"] == 1).sum(), (g["y"] == 0).sum()) < 10:
                continue
            if kind == "regression" and (len(g) < 10 or g["y"].std(ddof=0) < 0.5):
                continue
            acc.setdefault(m["partner"], {}).setdefault(m["variant"], {}).setdefault(int(t), []).append(
                metric_fn(g["y"], g["pred"]))
    return {p: {v: {t: float(np.mean(x)) for t, x in tv.items()} for v, tv in pv.items()} for p, pv in acc.items()}


@pytest.mark.parametrize(("metric", "fn", "kind"), [("auc_pr", average_precision_score, "classification"),
                                                    ("auc_roc", roc_auc_score, "classification"),
                                                    ("r2", r2_score, "regression"),
                                                    ("pearson_r", lambda y, p: pearsonr(y, p)[0], "regression")])
def test_every_table_number_is_recomputable_from_the_parquet_files(run, metric, fn, kind):
    run_dir, _, data = run
    direct = _direct(run_dir, fn, kind)
    deltas_all = []
    for partner, by_variant in direct.items():
        rows = {r["task_index"]: r for r in data["partners"][partner]["per_task"]}
        for variant, by_task in by_variant.items():
            for t, value in by_task.items():
                assert rows[t][f"{variant}_{metric}"] == pytest.approx(value, abs=1e-9)
        # mean Δ = mean over seeds of the per-seed mean over tasks; with one task set it is the mean of seed means
        d = [by_variant["federated"][t] - by_variant["single"][t] for t in by_variant["single"]]
        deltas_all += d
        got = data["partners"][partner]["pairs"]["federated-single"][metric]
        assert got["n_tasks"] == len(d)
        assert got["mean_delta"]["estimate"] == pytest.approx(np.mean(d), abs=1e-9)
        assert got["mean_delta"]["low"] <= got["mean_delta"]["estimate"] <= got["mean_delta"]["high"]
        mean_single = data["partners"][partner]["variants"]["single"][metric]["estimate"]
        assert mean_single == pytest.approx(np.mean(list(by_variant["single"].values())), abs=1e-9)
    cons = data["consortium"]["pairs"]["federated-single"][metric]
    assert cons["mean_delta"]["estimate"] == pytest.approx(np.mean(deltas_all), abs=1e-9)
    assert cons["n_tasks"] == len(deltas_all)


def test_the_synthetic_uplift_is_found_and_the_pooled_share_reported(run):
    _, _, data = run
    cons = data["consortium"]
    fed = cons["pairs"]["federated-single"]["auc_pr"]["mean_delta"]
    pooled = cons["pairs"]["pooled-single"]["auc_pr"]["mean_delta"]
    assert fed["low"] > 0 and fed["high"] < pooled["low"]  # more signal in pooled > federated > single
    share = cons["pooled_uplift_share"]
    assert share["reported"] and 0 < share["low"] <= share["estimate"] <= share["high"] < 1
    assert share["estimate"] == pytest.approx(fed["estimate"] / pooled["estimate"], abs=1e-9)
    delong = cons["pairs"]["federated-single"]["delong_auc_roc"]
    per_task = [r for p in data["partners"].values() for r in p["per_task"] if r["kind"] == "classification"]
    assert delong["n_tasks"] == len(per_task)
    assert delong["better"] + delong["worse"] <= len(per_task)
    # partner-level counts follow the partner's BY-adjusted p-values
    for p in data["partners"].values():
        sig = [r for r in p["per_task"] if r["kind"] == "classification"
               and r["delong_p_by_federated-single"] < 0.05 and r["federated_auc_roc"] > r["single_auc_roc"]]
        assert p["pairs"]["federated-single"]["delong_auc_roc"]["better"] == len(sig)


def test_quorum_exclusions_and_what_was_compared_are_stated(run):
    _, out, data = run
    for p in data["partners"].values():
        reasons = {r["input_assay_id"]: r["reason"] for r in p["excluded"]}
        assert "actives" in reasons["900"] and "standard deviation" in reasons["901"]
    assert data["seeds"] == [0, 1, 2] and data["test_fold"] == 0 and data["valid_fold"] == 1
    text = out.read_text()
    for needle in ("What was compared with what", "validation fold", "Benjamini", "excluded", "ffffffffffffffff",
                   "Convergence on the validation fold", "by assay type"):
        assert needle in text


def test_html_is_self_contained_with_embedded_png_figures(run):
    _, out, _ = run
    text = out.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", text)
    assert "<script" not in text and "@import" not in text
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(images) >= 6  # scatter, CDF, assay type for AUC-PR and R², convergence
    assert all(base64.b64decode(img)[:8] == b"\x89PNG\r\n\x1a\n" for img in images)


def test_same_seed_same_numbers_other_seed_other_intervals(run, tmp_path):
    run_dir, _, data = run
    write_report(run_dir, tmp_path / "again.html", n_boot=N_BOOT)
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["consortium"] == data["consortium"]
    write_report(run_dir, tmp_path / "other.html", n_boot=N_BOOT, seed=1)
    other = json.loads((tmp_path / "other.json").read_text())
    a = data["consortium"]["pairs"]["federated-single"]["auc_pr"]["mean_delta"]
    b = other["consortium"]["pairs"]["federated-single"]["auc_pr"]["mean_delta"]
    assert a["estimate"] == b["estimate"] and a["low"] != b["low"]


def test_no_pooled_uplift_no_share(tmp_path):
    run_dir = write_run(tmp_path / "run", partners=("A", "B"), seeds=(0, 1), n_class=6, n_regr=0,
                        signal={"single": 1.0, "federated": 1.2, "pooled": 1.0})
    write_report(run_dir, tmp_path / "r.html", n_boot=N_BOOT)
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["consortium"]["pooled_uplift_share"]["reported"] is False
    assert "includes 0" in data["consortium"]["pooled_uplift_share"]["why"]
    assert "r2" not in data["consortium"]["pairs"]["federated-single"]


def test_cli_report_writes_html_and_json(run, tmp_path):
    run_dir, _, _ = run
    res = CliRunner().invoke(app, ["report", str(run_dir), "--out", str(tmp_path / "x.html"),
                                   "--replicates", str(N_BOOT)])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "x.html").is_file() and (tmp_path / "x.json").is_file()
    data = json.loads((tmp_path / "x.json").read_text())
    est = data["consortium"]["pairs"]["federated-single"]["auc_pr"]["mean_delta"]
    printed = f"{est['estimate']:+.3f} [{est['low']:+.3f}, {est['high']:+.3f}]"
    assert printed in res.output and "of the pooled uplift" in res.output


def _invoke_error(args):
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    return res.output


def test_cli_errors_name_the_file_and_what_to_do(run, tmp_path):
    run_dir, _, _ = run
    out = _invoke_error(["report", str(tmp_path)])
    assert "comparison.json" in out and "consortium simulate" in out
    broken = tmp_path / "broken"
    shutil.copytree(run_dir, broken)
    victim = broken / "seeds" / "1" / "partners" / "B" / "model" / "test_predictions.parquet"
    victim.unlink()
    out = _invoke_error(["report", str(broken), "--replicates", str(N_BOOT)])
    assert "test_predictions.parquet" in out and "retrain" in out
    victim.write_text("not parquet")
    out = _invoke_error(["report", str(broken), "--replicates", str(N_BOOT)])
    assert "not a readable Parquet file" in out
    frame = pd.read_parquet(run_dir / "seeds" / "1" / "partners" / "B" / "model" / "test_predictions.parquet")
    frame.loc[7, "pred"] = np.nan
    frame.to_parquet(victim, index=False)
    out = _invoke_error(["report", str(broken), "--replicates", str(N_BOOT)])
    assert "row 7" in out and "not a finite number" in out
    (broken / "comparison.json").write_text("{")
    assert "not valid JSON" in _invoke_error(["report", str(broken)])


def test_variants_scored_on_different_rows_are_refused(run, tmp_path):
    run_dir, _, _ = run
    other = tmp_path / "other"
    shutil.copytree(run_dir, other)
    path = other / "seeds" / "0" / "partners" / "A" / "pooled" / "test_predictions.parquet"
    pd.read_parquet(path).iloc[1:].to_parquet(path, index=False)
    with pytest.raises(Exception, match="partner A: pooled .* other test rows"):
        load_comparison(other)


def test_partner_kit_compare_reports_one_partner_from_model_dirs(run, tmp_path):
    from partner_kit.cli import app as pk_app

    run_dir, _, data = run
    base = run_dir / "seeds" / "0" / "partners" / "A"
    res = CliRunner().invoke(pk_app, ["compare", "--single", str(base / "baseline"), "--federated",
                                      str(base / "model"), "--out", str(tmp_path / "cmp.html"), "--name", "A",
                                      "--replicates", str(N_BOOT)])
    assert res.exit_code == 0, res.output
    got = json.loads((tmp_path / "cmp.json").read_text())
    assert got["variants"] == ["single", "federated"] and list(got["partners"]) == ["A"]
    f = {v: pd.read_parquet(base / d / "test_predictions.parquet") for v, d in
         (("single", "baseline"), ("federated", "model"))}
    rows = got["partners"]["A"]["per_task"]
    for r in rows:
        if r["kind"] == "classification":
            for v, frame in f.items():
                g = frame[frame["task_index"] == r["task_index"]]
                assert r[f"{v}_auc_pr"] == pytest.approx(average_precision_score(g["y"], g["pred"]), abs=1e-9)
    res = CliRunner().invoke(pk_app, ["compare", "--single", str(run_dir), "--federated", str(base / "model"),
                                      "--out", str(tmp_path / "bad.html")])
    assert res.exit_code == 2 and "not a model directory" in res.output


def test_the_report_needs_no_model_code(run, tmp_path):
    """consortium reads files only: no torch, RDKit, Flower or partner_kit import on the report's path."""
    import subprocess
    import sys

    run_dir, _, _ = run
    code = ("import sys; from pathlib import Path; from consortium.report import write_report; "
            f"write_report(Path({str(run_dir)!r}), Path({str(tmp_path / 'r.html')!r}), n_boot=100); "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'rdkit', 'flwr', 'partner_kit')); "
            "print(bad); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_a_regression_only_consortium_reports_r2_and_its_pooled_share(tmp_path):
    run_dir = write_run(tmp_path / "run", partners=("A", "B"), seeds=(0,), n_class=0, n_regr=5)
    write_report(run_dir, tmp_path / "r.html", n_boot=N_BOOT)
    data = json.loads((tmp_path / "r.json").read_text())
    assert set(data["consortium"]["pairs"]["federated-single"]) == {"r2", "pearson_r", "delong_auc_roc"}
    assert data["consortium"]["pairs"]["federated-single"]["delong_auc_roc"]["n_tasks"] == 0
    share = data["consortium"]["pooled_uplift_share"]
    assert share["metric"] == "r2" and share["reported"]
    html_text = (tmp_path / "r.html").read_text()
    assert "mean Δ R², pooled − single" in html_text and "AUC-PR (fed − single)" not in html_text


def test_a_rotated_test_fold_counts_each_task_once_per_fold_and_redraws_all_folds_compounds(tmp_path):
    """`simulate --test-folds 2`: the partner's row holds its tasks of both test folds, the numbers are the
    direct means over (task, fold) pairs, and the interval narrows against one fold's."""
    run_dir = write_run(tmp_path / "run", folds=(0, 1), seeds=(0, 1))
    write_report(run_dir, run_dir / "report.html", n_boot=N_BOOT)
    data = json.loads((run_dir / "report.json").read_text())
    doc = json.loads((run_dir / "comparison.json").read_text())
    acc: dict = {}
    for m in doc["models"]:
        f = pd.read_parquet(run_dir / m["dir"] / "test_predictions.parquet")
        f = f[f["kind"] == "classification"]
        for t, g in f.groupby("task_index"):
            if min((g["y"] == 1).sum(), (g["y"] == 0).sum()) < 10:
                continue
            acc.setdefault((m["partner"], m["variant"], m["test_fold"], int(t)), []).append(
                average_precision_score(g["y"], g["pred"]))
    for partner in ("A", "B", "C"):
        keys = sorted({(f, t) for (p, v, f, t) in acc if p == partner and v == "single"})
        assert {f for f, _ in keys} == {0, 1}
        d = [np.mean(acc[(partner, "federated", f, t)]) - np.mean(acc[(partner, "single", f, t)]) for f, t in keys]
        got = data["partners"][partner]["pairs"]["federated-single"]["auc_pr"]
        assert got["n_tasks"] == len(keys)
        assert got["mean_delta"]["estimate"] == pytest.approx(np.mean(d), abs=1e-9)
        per_task = data["partners"][partner]["per_task"]
        assert sorted({r["test_fold"] for r in per_task}) == [0, 1]
    one = write_run(tmp_path / "one", folds=(0,), seeds=(0, 1))
    write_report(one, one / "report.html", n_boot=N_BOOT)
    one_data = json.loads((one / "report.json").read_text())
    width = {name: d["consortium"]["pairs"]["federated-single"]["auc_pr"]["mean_delta"] for name, d in
             (("two", data), ("one", one_data))}
    assert width["two"]["high"] - width["two"]["low"] < width["one"]["high"] - width["one"]["low"]
    assert "(rotated)" in (run_dir / "report.html").read_text()
