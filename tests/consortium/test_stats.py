"""consortium.stats against known answers: scikit-learn's metrics, a hand-worked DeLong case, brute force, scipy's
Benjamini–Yekutieli, and bootstrap intervals that cover a known mean."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps
from sklearn.metrics import average_precision_score, r2_score, roc_auc_score

from consortium import stats
from partner_kit.metrics import calibrated_average_precision


# ---- metrics equal scikit-learn's ----------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(n=st.integers(4, 120), decimals=st.sampled_from([1, 2, 6]), seed=st.integers(0, 10_000))
def test_weighted_ranking_metrics_equal_scikit_learn_including_ties_and_zero_weights(n, decimals, seed):
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.35
    y[:2] = [True, False]
    score = np.round(rng.random(n), decimals)  # coarse rounding makes many ties
    weights = rng.integers(0, 4, size=(4, n)).astype(float)
    weights[:, :2] = 1.0  # both classes present in every replicate
    got = stats.ranking_metrics(y, score, weights)
    for b in range(4):
        assert got["auc_pr"][b] == pytest.approx(average_precision_score(y, score, sample_weight=weights[b]), abs=1e-5)
        assert got["auc_roc"][b] == pytest.approx(roc_auc_score(y, score, sample_weight=weights[b]), abs=1e-5)
    plain = stats.ranking_metrics(y, score)
    assert plain["auc_pr"][0] == pytest.approx(average_precision_score(y, score), abs=1e-12)
    assert plain["auc_roc"][0] == pytest.approx(roc_auc_score(y, score), abs=1e-12)
    assert plain["auc_pr_cal"][0] == pytest.approx(calibrated_average_precision(y, score), abs=1e-12)


def test_calibrated_average_precision_with_counts_equals_the_same_rows_repeated():
    rng = np.random.default_rng(3)
    y, score = rng.random(80) < 0.3, rng.random(80)
    counts = rng.integers(0, 3, 80)
    repeated = np.repeat(np.arange(80), counts)
    got = stats.ranking_metrics(y, score, counts[None, :].astype(float))["auc_pr_cal"][0]
    assert got == pytest.approx(calibrated_average_precision(y[repeated], score[repeated]), abs=1e-6)


def test_fractional_weights_take_the_float_path_and_still_equal_scikit_learn():
    rng = np.random.default_rng(4)
    y, score = rng.random(60) < 0.4, np.round(rng.random(60), 2)
    w = rng.random((3, 60)) * 2
    got = stats.ranking_metrics(y, score, w)
    for b in range(3):
        assert got["auc_pr"][b] == pytest.approx(average_precision_score(y, score, sample_weight=w[b]), abs=1e-5)
        assert got["auc_roc"][b] == pytest.approx(roc_auc_score(y, score, sample_weight=w[b]), abs=1e-5)


def test_a_replicate_without_both_classes_is_nan_not_a_number_that_means_something():
    y = np.array([1, 1, 0, 0], bool)
    w = np.array([[1, 1, 0, 0], [1, 1, 1, 1]], float)
    got = stats.ranking_metrics(y, np.array([0.9, 0.2, 0.5, 0.1]), w)
    assert math.isnan(got["auc_roc"][0]) and math.isnan(got["auc_pr"][0])
    assert got["auc_roc"][1] == pytest.approx(0.75)


def test_weighted_r2_equals_scikit_learn():
    rng = np.random.default_rng(0)
    y = rng.normal(size=50)
    pred = y + rng.normal(scale=0.7, size=50)
    w = rng.integers(0, 4, size=(3, 50)).astype(float)
    got = stats.r2_score(y, pred, w)
    for b in range(3):
        assert got[b] == pytest.approx(r2_score(y, pred, sample_weight=w[b]), abs=1e-10)
    assert stats.r2_score(y, pred)[0] == pytest.approx(r2_score(y, pred), abs=1e-12)
    assert math.isnan(stats.r2_score(np.ones(5), np.arange(5.0))[0])


def test_weighted_pearson_equals_scipy_on_the_repeated_rows():
    rng = np.random.default_rng(1)
    y = rng.normal(6, 1, 70)
    pred = 0.5 * y + rng.normal(scale=0.6, size=70)
    w = rng.integers(0, 4, size=(3, 70))
    got = stats.pearson_r(y, pred, w)
    for b in range(3):
        rep = np.repeat(np.arange(70), w[b])
        assert got[b] == pytest.approx(sps.pearsonr(y[rep], pred[rep])[0], abs=1e-10)
    assert stats.pearson_r(y, pred)[0] == pytest.approx(sps.pearsonr(y, pred)[0], abs=1e-12)
    assert math.isnan(stats.pearson_r(y, np.full(70, 2.0))[0])
    only_two = np.zeros((1, 70))
    only_two[0, [3, 3]] = 2  # a draw of a single compound: no spread
    assert math.isnan(stats.pearson_r(y, pred, only_two)[0])


# ---- DeLong --------------------------------------------------------------------------------------------
def test_delong_matches_the_hand_worked_example():
    # positives a: .9 .8 .3, negatives .7 .2 .1 -> V10 = (1, 1, 2/3), V01 = (2/3, 1, 1), AUC 8/9
    # positives b: .9 .4 .35, negatives .6 .5 .1 -> V10 = (1, 1/3, 1/3), V01 = (1/3, 1/3, 1), AUC 5/9
    # S10 = S01 = [[1/27, 1/27], [1/27, 4/27]]; Var = S10/3 + S01/3 = [[2/81, 2/81], [2/81, 8/81]]
    # Var(a - b) = 2/81 + 8/81 - 4/81 = 2/27; z = (1/3) / sqrt(2/27) = sqrt(3/2)
    y = np.array([1, 1, 1, 0, 0, 0], bool)
    a = np.array([0.9, 0.8, 0.3, 0.7, 0.2, 0.1])
    b = np.array([0.9, 0.4, 0.35, 0.6, 0.5, 0.1])
    res = stats.delong_test(y, a, b)
    assert (res.auc_a, res.auc_b) == (pytest.approx(8 / 9), pytest.approx(5 / 9))
    assert (res.var_a, res.var_b, res.cov) == (pytest.approx(2 / 81), pytest.approx(8 / 81), pytest.approx(2 / 81))
    assert res.z == pytest.approx(math.sqrt(1.5))
    assert res.p == pytest.approx(2 * sps.norm.sf(math.sqrt(1.5)))
    assert res.p == pytest.approx(0.2207, abs=1e-4)


def _delong_brute_force(y, a, b):
    """DeLong's covariance straight from the definition, O(m n), psi(x, y) = 1 / 0.5 / 0."""
    comps = []
    for s in (a, b):
        x, z = s[y][:, None], s[~y][None, :]
        psi = (x > z) + 0.5 * (x == z)
        comps.append((psi.mean(axis=1), psi.mean(axis=0), psi.mean()))
    m, n = y.sum(), (~y).sum()
    s10 = np.cov(np.vstack([c[0] for c in comps]))
    s01 = np.cov(np.vstack([c[1] for c in comps]))
    cov = s10 / m + s01 / n
    return comps[0][2], comps[1][2], cov


@pytest.mark.parametrize("seed", range(5))
def test_delong_equals_the_brute_force_definition_with_ties(seed):
    rng = np.random.default_rng(seed)
    y = rng.random(90) < 0.3
    a = np.round(rng.random(90) + 0.4 * y, 1)
    b = np.round(a + rng.normal(scale=0.3, size=90), 1)
    auc_a, auc_b, cov = _delong_brute_force(y, a, b)
    res = stats.delong_test(y, a, b)
    assert res.auc_a == pytest.approx(roc_auc_score(y, a)) == pytest.approx(auc_a)
    assert res.auc_b == pytest.approx(auc_b)
    assert (res.var_a, res.var_b, res.cov) == (pytest.approx(cov[0, 0]), pytest.approx(cov[1, 1]),
                                               pytest.approx(cov[0, 1]))
    assert res.z == pytest.approx((auc_a - auc_b) / math.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]))


def test_delong_holds_its_size_under_the_null():
    """Two predictors of equal quality: about 5 % of tests reject at 0.05 (binomial band for 400 trials)."""
    rng = np.random.default_rng(11)
    rejections = 0
    for _ in range(400):
        y = rng.random(150) < 0.3
        a = y + rng.normal(scale=1.0, size=150)
        b = y + rng.normal(scale=1.0, size=150)
        rejections += stats.delong_test(y, a, b).p < 0.05
    assert 8 <= rejections <= 34  # 2 % .. 8.5 %


def test_delong_of_identical_predictions_is_no_difference():
    y = np.array([1, 0, 1, 0, 1, 0], bool)
    s = np.array([0.3, 0.1, 0.8, 0.4, 0.6, 0.2])
    res = stats.delong_test(y, s, s.copy())
    assert res.z == 0.0 and res.p == 1.0


# ---- Benjamini–Yekutieli -------------------------------------------------------------------------------
def test_by_adjustment_equals_scipy_and_the_formula():
    rng = np.random.default_rng(0)
    p = rng.random(40) ** 3
    assert np.allclose(stats.by_adjust(p), sps.false_discovery_control(p, method="by"))
    # by hand: m = 4, c(m) = 25/12; adjusted p_(i) = min_{j >= i} m c(m) p_(j) / j, capped at 1
    hand = np.minimum.accumulate(4 * (25 / 12) * np.array([0.04, 0.03, 0.02, 0.01]) / np.array([4, 3, 2, 1]))
    assert np.allclose(stats.by_adjust([0.01, 0.02, 0.03, 0.04]), hand[::-1])
    assert np.allclose(hand, 25 / 12 * 0.04)
    got = stats.by_adjust([0.01, math.nan, 0.5])
    assert math.isnan(got[1]) and np.allclose(got[[0, 2]], sps.false_discovery_control([0.01, 0.5], method="by"))


# ---- bootstrap --------------------------------------------------------------------------------------------
def _pooled_from_task_values(single: np.ndarray, fed: np.ndarray, n_boot: int) -> stats.ScoreSet:
    """Per-task metric values without compound-level noise (every compound draw gives the same value)."""
    def arrays(v):
        point = {m: np.full((1, v.size), np.nan) for m in stats.METRICS}
        point["auc_pr"] = v[None, :]
        boot = {m: np.broadcast_to(point[m][:, None, :], (1, n_boot, v.size)).copy() for m in stats.METRICS}
        return point, boot

    ps, bs = arrays(single)
    pf, bf = arrays(fed)
    return stats.ScoreSet(point={"single": ps, "federated": pf}, boot={"single": bs, "federated": bf},
                        kinds=np.array(["classification"] * single.size, dtype=object),
                        variants=["single", "federated"], n_seeds=1, n_boot=n_boot)


def test_bootstrap_interval_of_a_mean_of_normal_data_covers_it_about_95_percent_of_the_time():
    rng = np.random.default_rng(5)
    mu, sd, n_tasks, covered, widths = 0.02, 0.05, 60, 0, []
    trials = 150
    for i in range(trials):
        single = rng.uniform(0.2, 0.6, n_tasks)
        fed = single + rng.normal(mu, sd, n_tasks)
        r = stats.summarize(_pooled_from_task_values(single, fed, 400), np.random.default_rng(i))
        est = r["pairs"]["federated-single"]["auc_pr"]["mean_delta"]
        assert est["estimate"] == pytest.approx(float(np.mean(fed - single)))
        covered += est["low"] <= mu <= est["high"]
        widths.append(est["high"] - est["low"])
    assert 0.88 * trials <= covered <= trials
    # width close to 2 * 1.96 sd / sqrt(n): the interval is about the task panel, neither too wide nor too narrow
    assert np.mean(widths) == pytest.approx(2 * 1.96 * sd / math.sqrt(n_tasks), rel=0.12)


def _panel(n_rows=300, n_tasks=4, seeds=(0, 1), same=False, rng=None) -> stats.TaskPanel:
    rng = rng or np.random.default_rng(0)
    frames = {}
    labels = []
    for t in range(n_tasks):
        rows = np.sort(rng.choice(n_rows, n_rows // 2, replace=False))
        labels.append(pd.DataFrame({"row": rows, "task_index": t, "kind": "classification",
                                    "y": (rng.random(rows.size) < 0.3).astype(float), "censor": 0}))
    labels = pd.concat(labels, ignore_index=True)
    for s in seeds:
        base = labels["y"] + rng.normal(scale=1.2, size=len(labels))
        for v in ("single", "federated"):
            f = labels.copy()
            f["pred"] = base if (same or v == "single") else labels["y"] * 1.5 + rng.normal(scale=1.2, size=len(f))
            frames[(v, s)] = f
    tasks = pd.DataFrame({"task_index": range(n_tasks), "kind": "classification",
                          "input_assay_id": [str(i) for i in range(n_tasks)], "aggregation_weight": 1.0})
    return stats.build_panel("A", tasks, frames, stats.Quorum())


def test_identical_models_give_a_zero_width_interval_because_the_resampling_is_paired():
    scores = stats.score_panel(_panel(same=True), 200, np.random.default_rng(0))
    r = stats.summarize(stats.score_set(scores))
    d = r["pairs"]["federated-single"]["auc_pr"]["mean_delta"]
    assert d == {"estimate": 0.0, "low": 0.0, "high": 0.0}


def test_compound_bootstrap_spread_of_one_auc_matches_delongs_standard_error():
    rng = np.random.default_rng(2)
    panel = _panel(n_rows=1200, n_tasks=1, seeds=(0,), rng=rng)
    scores = stats.score_panel(panel, 1000, np.random.default_rng(1))
    boot_sd = np.nanstd(scores.boot["federated"]["auc_roc"][0, :, 0])
    res = stats.delong_test(panel.y[0] > 0, panel.pred["federated"][0][0], panel.pred["single"][0][0])
    assert boot_sd == pytest.approx(math.sqrt(res.var_a), rel=0.15)
    assert scores.point["federated"]["auc_roc"][0, 0] == pytest.approx(res.auc_a)


def test_point_estimates_are_seed_averages_of_the_direct_computation():
    panel = _panel(seeds=(0, 1, 2))
    scores = stats.score_panel(panel, 100, np.random.default_rng(0))
    r = stats.summarize(stats.score_set(scores))
    per_seed = []
    for s in range(3):
        d = [average_precision_score(panel.y[t], panel.pred["federated"][t][s])
             - average_precision_score(panel.y[t], panel.pred["single"][t][s]) for t in range(4)]
        per_seed.append((np.mean(d), np.median(d), np.mean(np.array(d) > 0)))
    got = r["pairs"]["federated-single"]["auc_pr"]
    assert got["mean_delta"]["estimate"] == pytest.approx(np.mean([p[0] for p in per_seed]))
    assert got["median_delta"]["estimate"] == pytest.approx(np.mean([p[1] for p in per_seed]))
    assert got["share_improved"]["estimate"] == pytest.approx(np.mean([p[2] for p in per_seed]))
    assert got["mean_delta"]["low"] <= got["mean_delta"]["estimate"] <= got["mean_delta"]["high"]


def test_scoring_forty_tasks_three_variants_three_seeds_is_vectorised():
    """A smoke bound, not a benchmark: 40 tasks x 3 variants x 3 seeds x 1000 replicates in well under a minute
    (about 2 s on a quiet core; a per-replicate Python loop would take minutes)."""
    import time

    rng = np.random.default_rng(0)
    labels = pd.concat([pd.DataFrame({"row": np.arange(400), "task_index": t, "kind": "classification",
                                      "y": (rng.random(400) < 0.25).astype(float), "censor": 0}) for t in range(40)])
    frames = {}
    for v in ("single", "federated", "pooled"):
        for s in range(3):
            f = labels.copy()
            f["pred"] = rng.random(len(f))
            frames[(v, s)] = f
    tasks = pd.DataFrame({"task_index": range(40), "kind": "classification",
                          "input_assay_id": list(map(str, range(40)))})
    panel = stats.build_panel("A", tasks, frames, stats.Quorum())
    t0 = time.perf_counter()
    stats.score_panel(panel, 1000, np.random.default_rng(0))
    assert time.perf_counter() - t0 < 60.0


# ---- panel building: quorum, censoring, alignment ---------------------------------------------------------------
def test_panel_applies_the_evaluation_quorum_and_drops_censored_values():
    rng = np.random.default_rng(0)
    rows = np.arange(40)
    parts = [
        pd.DataFrame({"row": rows, "task_index": 0, "kind": "classification",
                      "y": (rows % 3 == 0).astype(float), "censor": 0}),           # 14 actives: counts
        pd.DataFrame({"row": rows, "task_index": 1, "kind": "classification",
                      "y": (rows < 5).astype(float), "censor": 0}),                # 5 actives: excluded
        pd.DataFrame({"row": rows, "task_index": 2, "kind": "regression",
                      "y": rng.normal(6, 1, 40), "censor": np.where(rows < 25, 0, 1)}),   # 25 exact values
        pd.DataFrame({"row": rows, "task_index": 3, "kind": "regression",
                      "y": 11.9 + 0.01 * rng.random(40), "censor": 0}),            # std < 0.5: excluded
    ]
    labels = pd.concat(parts, ignore_index=True)
    frames = {(v, 0): labels.assign(pred=rng.random(len(labels))) for v in ("single", "federated")}
    tasks = pd.DataFrame({"task_index": range(5), "kind": ["classification"] * 2 + ["regression"] * 3,
                          "input_assay_id": ["a", "b", "c", "d", "e"], "aggregation_weight": 1.0})
    panel = stats.build_panel("A", tasks, frames, stats.Quorum(), {"a": "ADME"})
    assert panel.tasks["task_index"].tolist() == [0, 2]
    assert panel.tasks["assay_type"].tolist() == ["ADME", "unknown"]
    assert panel.y[1].size == 25  # censored values are bounds, not measurements
    reasons = dict(zip(panel.excluded["task_index"], panel.excluded["reason"], strict=True))
    assert set(reasons) == {1, 3, 4}
    assert "5 actives" in reasons[1] and "standard deviation" in reasons[3] and "no uncensored label" in reasons[4]


def test_panel_refuses_variants_scored_on_different_rows():
    labels = pd.DataFrame({"row": np.arange(30), "task_index": 0, "kind": "classification",
                           "y": (np.arange(30) % 2).astype(float), "censor": 0, "pred": 0.5})
    tasks = pd.DataFrame({"task_index": [0], "kind": ["classification"], "input_assay_id": ["a"]})
    with pytest.raises(ValueError, match="other test rows"):
        stats.build_panel("A", tasks, {("single", 0): labels, ("federated", 0): labels.iloc[1:]}, stats.Quorum())
    with pytest.raises(ValueError, match="lacks seed"):
        stats.build_panel("A", tasks, {("single", 0): labels, ("single", 1): labels, ("federated", 0): labels},
                          stats.Quorum())


def test_quorum_reads_the_plan_and_defaults_the_regression_rule():
    q = stats.Quorum.from_plan({"tasks": {"min_eval_actives_per_fold": 3, "min_eval_inactives_per_fold": 4}})
    assert (q.min_actives, q.min_inactives, q.min_regression_values, q.min_regression_std) == (3, 4, 10, 0.5)
