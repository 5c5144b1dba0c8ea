"""The comparison report: single vs federated vs pooled, with intervals, as one self-contained HTML file.

`write_report(run_dir, out)` (used by `consortium report` and `consortium simulate`) and
`write_comparison_report(comparison, out)` (used by `partner-kit compare`) write `out` (HTML: inline CSS,
figures as base64 PNG, no script, no network) and the JSON beside it (report.html -> report.json) holding
every number the HTML shows.
Everything is recomputed from the model directories' test predictions; see `consortium.stats` for the methods.
"""

from __future__ import annotations

import datetime as dt
import html
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from consortium import stats
from consortium.comparison import Comparison, load_comparison
from data_prep.atomic import write_text_atomic
from data_prep.errors import InputError
from data_prep.jsonsafe import json_safe

REPORT_JSON = "report.json"
STAT_LABELS = {"mean_delta": "mean Δ", "median_delta": "median Δ", "share_improved": "tasks improved",
               "relative_improvement": "rel. improvement"}
PAIR_LABELS = {"federated-single": "federated − single", "pooled-single": "pooled − single",
               "federated-pooled": "federated − pooled"}


# ---- numbers ---------------------------------------------------------------------------------------------
def _per_task(scores: stats.PanelScores, delong: dict[str, pd.DataFrame]) -> list[dict[str, Any]]:
    """One record per evaluable task: seed-mean metric per variant, DeLong p (raw and BY-adjusted) per pair."""
    panel = scores.panel
    records = panel.tasks.to_dict(orient="records")
    for t, rec in enumerate(records):
        metrics = stats.CLASS_METRICS if rec["kind"] == "classification" else stats.REGR_METRICS
        for v in panel.variants:
            for m in metrics:
                rec[f"{v}_{m}"] = float(np.mean(scores.point[v][m][:, t]))
        for pair, frame in delong.items():
            hit = frame[(frame["task_index"] == rec["task_index"]) & (frame["test_fold"] == rec.get("test_fold", 0))]
            if len(hit):
                rec[f"delong_p_{pair}"] = float(hit["p"].iat[0])
                rec[f"delong_p_by_{pair}"] = float(hit["p_by"].iat[0])
    return records


def _histories(comparison: Comparison) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for run in sorted(comparison.runs, key=lambda r: (r.partner, stats.VARIANTS.index(r.variant), r.seed)):
        axis = "round" if any("round" in h for h in run.history) else "epoch"
        points = [[h.get(axis), h.get("valid_score")] for h in run.history if h.get(axis) is not None]
        out.setdefault(run.partner, []).append({
            "variant": run.variant, "seed": run.seed, "axis": axis, "points": points, "selected": run.selected,
            "selection_metric": run.metrics.get("selection_metric")})
    return out


def analyse(comparison: Comparison, n_boot: int = stats.DEFAULT_REPLICATES, seed: int = 0) -> dict[str, Any]:
    """Every number of the report (the content of report.json)."""
    if n_boot < 100:
        raise InputError(f"--replicates {n_boot} is too few for a 95 % interval; use at least 100 (default 1000)")
    seq = np.random.SeedSequence(seed)
    partner_names = sorted(comparison.panels)
    seeds_by_partner = {p: comparison.panels[p].seeds for p in partner_names}
    if len({tuple(s) for s in seeds_by_partner.values()}) > 1:
        raise InputError(f"{comparison.source}: partners were run with different seeds {seeds_by_partner}; "
                         "a consortium comparison needs the same seeds for every partner")
    empty = [p for p in partner_names if comparison.panels[p].tasks.empty]
    if len(empty) == len(partner_names):
        raise InputError(f"{comparison.source}: no task meets the evaluation quorum on the test fold "
                         "(see the plan's tasks.min_eval_* settings); there is nothing to compare")
    rngs = [np.random.default_rng(s) for s in seq.spawn(2 * len(partner_names) + 1)]
    partners: dict[str, Any] = {}
    all_scores, delong_all = [], {}
    for i, partner in enumerate(partner_names):
        panel = comparison.panels[partner]
        excluded = json_safe(panel.excluded.to_dict(orient="records"))
        if panel.tasks.empty:
            partners[partner] = {"n_evaluable": 0, "excluded": excluded, "per_task": [],
                                 "note": "no task meets the evaluation quorum on the test fold"}
            continue
        scores = stats.score_panel(panel, n_boot, rngs[2 * i])
        all_scores.append(scores)
        summary = stats.summarize(stats.score_set(scores), rngs[2 * i + 1])
        delong = {}
        for a, b in stats.PAIRS:
            if a in panel.variants and b in panel.variants:
                frame = stats.delong_tasks(panel, a, b)
                summary["pairs"][f"{a}-{b}"]["delong_auc_roc"] = stats.delong_counts(frame)
                delong[f"{a}-{b}"] = frame
                delong_all.setdefault(f"{a}-{b}", []).append(frame)
        partners[partner] = {**summary, "n_evaluable": len(panel.tasks), "excluded": excluded,
                             "per_task": _per_task(scores, delong)}
    consortium_summary = stats.summarize(stats.combine(all_scores), rngs[-1])
    for pair, frames in delong_all.items():
        if pair in consortium_summary["pairs"]:
            merged = pd.concat(frames, ignore_index=True)
            consortium_summary["pairs"][pair]["delong_auc_roc"] = stats.delong_counts(merged)
    meta = comparison.meta
    return json_safe({
        "generated": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "source": comparison.source,
        "plan_name": meta.get("plan_name"), "plan_hash": meta.get("plan_hash"),
        "test_fold": meta.get("test_fold"), "valid_fold": meta.get("valid_fold"),
        "seed_per_fold": bool(meta.get("seed_per_fold")),
        "selection": meta.get("selection"), "seeds": comparison.seeds, "variants": comparison.variants,
        "federation": {k: meta[k] for k in ("rounds", "schedule", "local_steps", "trunk_optimizer",
                                                       "server_optimizer", "server_lr", "batches") if k in meta},
        "bootstrap": {"replicates": n_boot, "seed": seed, "level": 0.95, "method": (
            "percentile interval; each replicate redraws every partner's test compounds (one draw for all "
            "variants and seeds), the tasks, and the seeds; statistics over tasks are computed per seed and "
            "averaged over the drawn seeds")},
        "delong": {"alpha": stats.ALPHA, "correction": "Benjamini-Yekutieli, across the tasks of the partner "
                   "(consortium: of all partners)", "predictions": "averaged over seeds"},
        "quorum": {p: vars(stats.Quorum.from_plan(next(r.info.get("plan") or {} for r in comparison.runs
                                                       if r.partner == p))) for p in partner_names},
        "consortium": consortium_summary,
        "partners": partners,
        "histories": _histories(comparison),
    })


# ---- HTML ------------------------------------------------------------------------------------------------
CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;margin:0;color:#1d2430;
background:#f6f7f9;line-height:1.45}
main{max-width:1240px;margin:0 auto;padding:24px 32px 60px;background:#fff}
h1{font-size:1.6em;margin:.2em 0 .1em}h2{font-size:1.25em;margin-top:2em;border-bottom:2px solid #e3e6ea;
padding-bottom:.2em}h3{font-size:1.05em;margin-top:1.4em}
.sub{color:#5b6573;margin:0 0 1em}.caption{color:#4a5360;font-size:.9em;max-width:70em}
table{border-collapse:collapse;margin:.6em 0 1em;font-size:.88em}
th,td{border-bottom:1px solid #e3e6ea;padding:3px 8px;text-align:right;white-space:nowrap}
td small{color:#5b6573;font-weight:400}th{white-space:normal;vertical-align:bottom}
th{background:#f0f2f5;font-weight:600}td.l,th.l{text-align:left}
tr.group td{background:#fafbfc;font-weight:600;text-align:left;border-top:2px solid #d5d9df}
.pos{color:#0b6b2f;font-weight:600}.neg{color:#a3231b;font-weight:600}.ns{color:#1d2430}
.headline{display:flex;gap:14px;flex-wrap:wrap;margin:1em 0}
.card{border:1px solid #dde1e6;border-radius:8px;padding:10px 14px;min-width:200px;background:#fbfcfd}
.card .v{font-size:1.35em;font-weight:650}.card .k{color:#5b6573;font-size:.85em}
img{max-width:100%;border:1px solid #eceff2;border-radius:4px}
dl.meta{display:grid;grid-template-columns:max-content auto;gap:3px 18px;font-size:.92em}
dl.meta dt{color:#5b6573}dl.meta dd{margin:0}
details{margin:.5em 0}summary{cursor:pointer;color:#1f6fb4}
code{background:#f0f2f5;padding:0 3px;border-radius:3px}
"""


def _e(x: Any) -> str:
    return html.escape(str(x))


def _num(x: float | None, signed: bool = False, pct: bool = False) -> str:
    if x is None:
        return "n/a"
    if pct:
        return f"{100 * x:+.0f} %" if signed else f"{100 * x:.0f} %"
    return f"{x:+.3f}" if signed else f"{x:.3f}"


def _ci(est: dict[str, Any] | None, signed: bool = True, pct: bool = False, null: float | None = 0.0,
        inline: bool = False) -> str:
    """'estimate [low, high]', coloured when the interval excludes `null`."""
    if not est or est.get("estimate") is None:
        return "n/a"
    text = (f"{_num(est['estimate'], signed, pct)} <small>[{_num(est['low'], signed, pct)}, "
            f"{_num(est['high'], signed, pct)}]</small>")
    if not inline:
        text = text.replace(" <small>", "<br><small>")
    lo, hi = est.get("low"), est.get("high")
    cls = "ns"
    if null is not None and lo is not None and hi is not None:
        cls = "pos" if lo > null else "neg" if hi < null else "ns"
    return f'<span class="{cls}">{text}</span>'


def _stats_table(groups: list[tuple[str, dict[str, Any]]], variants: list[str]) -> str:
    head = ("<tr><th class=l>comparison</th><th class=l>metric</th><th>tasks</th><th>mean Δ [95 % CI]</th>"
            "<th>median Δ [95 % CI]</th><th>tasks improved [95 % CI]</th><th>rel. improvement to perfect "
            "[95 % CI]</th><th>mean Δ per seed</th><th>DeLong AUC-ROC: better / worse</th></tr>")
    body = []
    for name, summary in groups:
        body.append(f'<tr class=group><td colspan=9>{_e(name)}</td></tr>')
        for pair, by_metric in summary.get("pairs", {}).items():
            for m in stats.METRICS:
                r = by_metric.get(m)
                if not r:
                    continue
                dl = by_metric.get("delong_auc_roc") if m == "auc_roc" else None
                dl_text = (f"{dl['better']} / {dl['worse']} <small>of {dl['n_tasks']}</small>" if dl else "")
                body.append(
                    f"<tr><td class=l>{_e(PAIR_LABELS.get(pair, pair))}</td><td class=l>"
                    f"{_e(_metric_label(m))}</td><td>{r['n_tasks']}</td><td>{_ci(r['mean_delta'])}</td>"
                    f"<td>{_ci(r['median_delta'])}</td><td>{_ci(r['share_improved'], False, True, 0.5)}</td>"
                    f"<td>{_ci(r['relative_improvement'], True, True)}</td>"
                    f"<td><small>{', '.join(_num(x, True) for x in r.get('mean_delta_per_seed', []))}</small></td>"
                    f"<td>{dl_text}</td></tr>")
    return f"<table>{head}{''.join(body)}</table>"


def _variants_table(groups: list[tuple[str, dict[str, Any]]], variants: list[str]) -> str:
    head = "<tr><th class=l>partner</th><th class=l>metric</th>" + "".join(
        f"<th>{_e(v)} [95 % CI]</th>" for v in variants) + "</tr>"
    body = []
    for name, summary in groups:
        for m in stats.METRICS:
            cells = [summary.get("variants", {}).get(v, {}).get(m) for v in variants]
            if not any(cells):
                continue
            body.append(f"<tr><td class=l>{_e(name)}</td><td class=l>{_e(_metric_label(m))}</td>" + "".join(
                f"<td>{_ci(c, signed=False, null=None, inline=True)}</td>" for c in cells) + "</tr>")
    return f"<table>{head}{''.join(body)}</table>"


def _metric_label(m: str) -> str:
    from consortium.report_plots import METRIC_LABELS

    return METRIC_LABELS.get(m, m)


def _figure(png: str | None, caption: str, alt: str) -> str:
    if png is None:
        return ""
    return (f'<figure><img alt="{_e(alt)}" src="data:image/png;base64,{png}">'
            f'<figcaption class=caption>{caption}</figcaption></figure>')


def _headline(data: dict[str, Any]) -> str:
    cons = data["consortium"]
    cards = []
    fed = cons["pairs"].get("federated-single", {})
    for m in ("auc_pr", "r2"):
        if m in fed:
            cards.append((f"consortium mean Δ {_metric_label(m)}, federated − single",
                          _ci(fed[m]["mean_delta"], inline=True), f"{fed[m]['n_tasks']} tasks"))
    pooled = cons["pairs"].get("pooled-single", {})
    share = cons.get("pooled_uplift_share", {})
    metric = share.get("metric") or "auc_pr"
    label = _metric_label(metric)
    if metric in pooled:
        cards.append((f"consortium mean Δ {label}, pooled − single", _ci(pooled[metric]["mean_delta"], inline=True),
                      "what pooling all data would give"))
    if share.get("reported"):
        cards.append(("share of the pooled uplift the federation captured", _ci(share, True, True, None, inline=True),
                      f"mean {label}, (fed − single) / (pooled − single)"))
    elif metric in pooled:
        cards.append(("share of the pooled uplift captured", "not reported", _e(share.get("why", ""))))
    for partner, p in data["partners"].items():
        pair = p.get("pairs", {}).get("federated-single", {})
        m = "auc_pr" if "auc_pr" in pair else "r2"
        if pair.get(m):
            cards.append((f"partner {partner}: mean Δ {_metric_label(m)} (fed − single)",
                          _ci(pair[m]["mean_delta"], inline=True), f"{pair[m]['n_tasks']} tasks"))
    return "<div class=headline>" + "".join(
        f"<div class=card><div class=k>{_e(k)}</div><div class=v>{v}</div><div class=k>{note}</div></div>"
        for k, v, note in cards) + "</div>"


def _meta_section(data: dict[str, Any]) -> str:
    rows = [
        ("plan", f"{_e(data.get('plan_name'))} (hash <code>{_e(str(data.get('plan_hash'))[:16])}…</code>)"),
        ("test fold / validation fold", f"{_e(data.get('test_fold'))} / {_e(data.get('valid_fold'))}: every "
         "number here is on the test fold; models were selected on the validation fold only" + (
             " (the test fold rotates: each listed test fold was held out in turn, with the validation fold "
             "beside it in the same position; a task tested on several folds counts once per fold, and the "
             "bootstrap redraws the compounds of all of them)" if isinstance(data.get("test_fold"), list) else "")),
        ("model selection", _e(data.get("selection") or "n/a")),
        ("seeds", f"{_e(', '.join(map(str, data.get('seeds', []))))} (same key and folds for every seed" + (
            "; seed i was tested on the i-th test fold, so a task-and-fold redraw also redraws its seed)"
            if data.get("seed_per_fold") else ")")),
        ("variants", _e(", ".join(data.get("variants", [])))),
        *([("federation", _e(", ".join(f"{k.replace('_', ' ')} {v}" for k, v in data["federation"].items())))]
          if data.get("federation") else []),
        ("bootstrap", f"{data['bootstrap']['replicates']} replicates (seed {data['bootstrap']['seed']}): "
         f"{_e(data['bootstrap']['method'])}"),
        ("per-task test", "DeLong's test for correlated AUC-ROCs on seed-averaged predictions, "
         f"{_e(data['delong']['correction'])}, significant at adjusted p &lt; {data['delong']['alpha']}"),
        ("metrics", "AUC-PR = average precision (scikit-learn); calibrated AUC-PR = precision rescaled to a 10 % "
         "positive rate; R² on uncensored values only. Each task counts once (unweighted); Δ = other − single; "
         "rel. improvement = median over tasks of Δ / (1 − single)."),
    ]
    for partner, q in data.get("quorum", {}).items():
        p = data["partners"][partner]
        rows.append((f"tasks of partner {partner}",
                     f"{p['n_evaluable']} evaluable, {len(p['excluded'])} excluded (quorum: ≥ {q['min_actives']} "
                     f"actives and ≥ {q['min_inactives']} inactives; regression ≥ {q['min_regression_values']} "
                     f"uncensored values with standard deviation ≥ {q['min_regression_std']})"))
    return "<dl class=meta>" + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows) + "</dl>"


def _folds(data: dict[str, Any]) -> str:
    folds = data.get("test_fold")
    return ", ".join(map(str, folds)) + " (rotated)" if isinstance(folds, list) else str(folds)


def _task_label(r: dict[str, Any], multi_fold: bool) -> str:
    """Task index, with its test fold when the test fold rotated (a task then has one row per fold)."""
    return f"{r['task_index']}" + (f" (fold {r.get('test_fold')})" if multi_fold else "")


def _task_tables(data: dict[str, Any]) -> str:
    out = []
    variants = data.get("variants", [])
    multi = isinstance(data.get("test_fold"), list)
    for partner, p in data["partners"].items():
        rows = p.get("per_task", [])
        cols = [c for m in stats.METRICS for v in variants for c in [f"{v}_{m}"] if any(c in r for r in rows)]
        head = ("<tr><th>task</th><th class=l>assay</th><th class=l>type</th><th class=l>kind</th><th>n</th>"
                + "".join(f"<th>{_e(c.replace('_', ' ', 1))}</th>" for c in cols)
                + "<th>DeLong p (BY), fed vs single</th></tr>")
        body = "".join(
            f"<tr><td>{_task_label(r, multi)}</td><td class=l>{_e(r['input_assay_id'])}</td><td class=l>"
            f"{_e(r['assay_type'])}</td><td class=l>{_e(r['kind'])}</td><td>{r['n']}</td>"
            + "".join(f"<td>{_num(r.get(c))}</td>" for c in cols)
            + f"<td>{_num(r.get('delong_p_by_federated-single'))}</td></tr>" for r in rows)
        excl = "".join(f"<tr><td>{_task_label(r, multi)}</td><td class=l>{_e(r['input_assay_id'])}</td><td class=l>"
                       f"{_e(r['kind'])}</td><td class=l>{_e(r['reason'])}</td></tr>" for r in p["excluded"])
        out.append(f"<details><summary>partner {_e(partner)}: {len(rows)} evaluable tasks, "
                   f"{len(p['excluded'])} excluded</summary><table>{head}{body}</table>"
                   + (f"<p class=caption>Excluded by the evaluation quorum:</p><table><tr><th>task</th>"
                      f"<th class=l>assay</th><th class=l>kind</th><th class=l>why</th></tr>{excl}</table>"
                      if excl else "") + "</details>")
    return "".join(out)


def render_html(data: dict[str, Any]) -> str:
    """The report page from `analyse`'s numbers (figures drawn here)."""
    from consortium import report_plots as plots

    variants = data.get("variants", [])
    per_task = {p: v.get("per_task", []) for p, v in data["partners"].items() if v.get("per_task")}
    groups = [("consortium (all partners' tasks)", data["consortium"])] + [
        (f"partner {p}", v) for p, v in data["partners"].items() if v.get("pairs")]
    figs = []
    kinds = {m: any(f"single_{m}" in r for rows in per_task.values() for r in rows) for m in ("auc_pr", "r2")}
    for m in [m for m, present in kinds.items() if present]:
        label = _metric_label(m)
        figs.append(f"<h3>Per task: single-partner vs federated{' and pooled' if 'pooled' in variants else ''} "
                    f"({label})</h3>")
        figs.append(_figure(plots.scatter_vs_single(per_task, m, variants),
                            f"Each point is one evaluable test task of the partner, {label} averaged over seeds. "
                            "Points above the dashed diagonal improved over the partner's single-partner model. "
                            "Blue circles: federated model; orange triangles: pooled model (all partners' data "
                            "in one place, each partner's own heads: the privacy-free upper bound).",
                            f"scatter of {label} per task"))
        figs.append(f"<h3>Distribution of per-task Δ {label}</h3>")
        figs.append(_figure(plots.cdf_deltas(per_task, m, variants),
                            f"Empirical cumulative distribution of per-task Δ {label} against the single-partner "
                            "model (solid: federated, dashed: pooled; thin lines per partner, thick lines all "
                            "partners). A curve to the right of 0 is a gain; the height where it crosses 0 is the "
                            "share of tasks that did not improve.", f"cumulative distribution of Δ {label}"))
        figs.append(f"<h3>Δ {label} by assay type</h3>")
        figs.append(_figure(plots.delta_by_assay_type(per_task, m),
                            f"Per-task Δ {label} (federated − single) grouped by the assay type of T0, all "
                            "partners together; box = quartiles, whiskers 1.5 IQR, every dot one task.",
                            f"Δ {label} by assay type"))
    figs.append("<h3>Convergence on the validation fold</h3>")
    figs.append(_figure(plots.convergence(data.get("histories", {})),
                        "Validation score used for model selection, per epoch (single-partner and pooled models) "
                        "or per federated round, every seed one line; the ring marks the epoch or round that was "
                        "kept. The score is the selection metric named on the y axis (validation fold only).",
                        "validation score per epoch and round"))
    title = f"Federated vs single-partner{' vs pooled' if 'pooled' in variants else ''}: {data.get('plan_name')}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title><style>{CSS}</style></head><body><main>
<h1>{_e(title)}</h1>
<p class=sub>Test fold {_e(_folds(data))}, {len(data.get('seeds', []))} seed(s),
{data['bootstrap']['replicates']} bootstrap replicates. Generated {_e(data.get('generated'))} from
<code>{_e(data.get('source'))}</code>. Every number is in
<code>{_e(data.get('json_name', REPORT_JSON))}</code> beside this file.</p>
{_headline(data)}
<h2>What was compared with what</h2>
{_meta_section(data)}
<h2>Uplift over the single-partner model</h2>
<p class=caption>Per-task differences on the test fold, then summarised over tasks (each task once). Brackets: 95 %
bootstrap interval over test compounds, tasks and seeds. Green: the interval lies above 0 (above 50 % for
"tasks improved"); red: below. DeLong counts tasks whose AUC-ROC differs at Benjamini–Yekutieli-adjusted
p &lt; 0.05 (better / worse). "Mean Δ per seed" is each seed on its own: the seed-to-seed spread.</p>
{_stats_table(groups, variants)}
<h3>Mean test metric per model</h3>
<p class=caption>Mean over each partner's evaluable tasks, averaged over seeds, with its 95 % bootstrap interval.</p>
{_variants_table(groups, variants)}
<h2>Figures</h2>
{''.join(figs)}
<h2>Per-task numbers</h2>
{_task_tables(data)}
</main></body></html>
"""


def json_path(out_path: str | Path) -> Path:
    """report.html -> report.json (same stem, same folder), so two reports in one folder keep their numbers apart."""
    out_path = Path(out_path)
    return out_path.with_name(out_path.stem + ".json")


def interval_table(data: dict[str, Any], metric: str = "auc_pr") -> Any:
    """A terminal (rich) table of mean Δ per partner and for the consortium, with intervals and DeLong counts."""
    from rich.table import Table

    pairs = [p for p in ("federated-single", "pooled-single", "federated-pooled")
             if p in data["consortium"].get("pairs", {})]
    table = Table(title=f"test fold {_folds(data)}: mean Δ {_metric_label(metric)} [95 % bootstrap CI], "
                        f"{len(data.get('seeds', []))} seed(s)")
    table.add_column("partner")
    table.add_column("tasks", justify="right")
    for v in data.get("variants", []):
        table.add_column(v, justify="right")
    for p in pairs:
        table.add_column(PAIR_LABELS[p], justify="right")
    ranking = metric in stats.CLASS_METRICS
    if ranking:
        table.add_column("DeLong AUC-ROC better/worse", justify="right")
    groups = [(f"partner {p}", v) for p, v in data["partners"].items() if v.get("pairs")]
    groups.append(("consortium", data["consortium"]))
    for name, summary in groups:
        first = summary["pairs"].get(pairs[0], {}).get(metric) if pairs else None
        if not first:
            continue
        cells = [name, str(first["n_tasks"])]
        for v in data.get("variants", []):
            est = summary.get("variants", {}).get(v, {}).get(metric)
            cells.append("n/a" if not est else _num(est["estimate"]))
        for p in pairs:
            r = summary["pairs"][p].get(metric, {}).get("mean_delta")
            cells.append("n/a" if not r or r.get("estimate") is None else
                         f"{_num(r['estimate'], True)} [{_num(r['low'], True)}, {_num(r['high'], True)}]")
        if ranking:
            dl = summary["pairs"].get("federated-single", {}).get("delong_auc_roc")
            cells.append(f"{dl['better']}/{dl['worse']}" if dl else "")
        table.add_row(*cells, style="bold" if name == "consortium" else None)
    share = data["consortium"].get("pooled_uplift_share", {})
    if metric != share.get("metric"):
        return table
    if share.get("reported"):
        table.caption = (f"federation captured {_num(share['estimate'], True, True)} "
                         f"[{_num(share['low'], True, True)}, {_num(share['high'], True, True)}] of the pooled uplift")
    elif "pooled" in data.get("variants", []):
        table.caption = f"share of the pooled uplift not reported: {share.get('why', '')}"
    return table


def write_comparison_report(comparison: Comparison, out_path: str | Path, n_boot: int = stats.DEFAULT_REPLICATES,
                            seed: int = 0) -> Path:
    """Analyse `comparison`, write the HTML report to `out_path` and report.json beside it."""
    out_path = Path(out_path)
    data = analyse(comparison, n_boot=n_boot, seed=seed)
    data["json_name"] = json_path(out_path).name
    out_path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(json_path(out_path), json.dumps(data, indent=2) + "\n")
    write_text_atomic(out_path, render_html(data))
    return out_path


def write_report(run_dir: str | Path, out_path: str | Path, n_boot: int = stats.DEFAULT_REPLICATES,
                 seed: int = 0) -> Path:
    """Report of a `consortium simulate` run directory (reads its comparison.json)."""
    return write_comparison_report(load_comparison(run_dir), out_path, n_boot=n_boot, seed=seed)
