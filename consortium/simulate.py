"""`consortium simulate`: the whole consortium embedded in one process, plus each partner's baseline.

The server side is the deployed ServerApp logic (`run_server`) on an in-process grid; the partners are the
deployed ClientApp. Playing the partners means doing partner work here (preparing their inputs, training their
single-partner baselines), so this module — and only this one in `consortium` — imports partner code, lazily.

Run directory layout:
  plan.toml, ledger.jsonl, status.json, checkpoints/round-NNN.safetensors    (the consortium's view)
  partners/<name>/prepared/   prepared on the fly from input dirs (cached; a given prepared dir is used in place)
  partners/<name>/model/      the partner's federated model (+ federated/ private round state, selection)
  partners/<name>/baseline/   the single-partner baseline model
  summary.json, summary.csv   the per-partner table (test fold: single-partner vs federated)
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from consortium.plan import Plan
from consortium.server_app import RunSettings
from data_prep.atomic import write_text_atomic
from data_prep.console import console
from data_prep.errors import InputError
from data_prep.jsonsafe import json_safe

SUMMARY_COLUMNS = ("seed", "test_fold", "partner", "tasks", "class_tasks", "regr_tasks", "n_train",
                   "single_auc_pr", "federated_auc_pr", "pooled_auc_pr", "delta_auc_pr",
                   "single_auc_roc", "federated_auc_roc", "pooled_auc_roc", "delta_auc_roc",
                   "single_r2", "federated_r2", "pooled_r2", "delta_r2", "best_round", "selection_metric")


@dataclass(frozen=True)
class SimulationResult:
    run_dir: Path
    rows: list[dict[str, Any]]
    status: dict[str, Any]
    seconds: dict[str, float]
    bytes_to_partner: dict[str, int]
    bytes_from_partner: dict[str, int]
    partner_seconds: dict[str, float]


def partner_names(dirs: list[Path]) -> list[str]:
    names: list[str] = []
    for d in dirs:
        base = Path(d).resolve().name
        if base == "prepared":  # .../P1/prepared -> P1
            base = Path(d).resolve().parent.name
        name, i = base, 2
        while name in names:
            name, i = f"{base}-{i}", i + 1
        names.append(name)
    return names


def seed_values(plan: Plan, seeds: int) -> list[int]:
    """The seeds of a repeat study: the plan's training seed, then the next ones (same key, same folds)."""
    if seeds < 1:
        raise InputError(f"--seeds must be >= 1, got {seeds}")
    return [int(plan.training.seed) + i for i in range(seeds)]


def seed_dir(out: Path, seed: int, n_seeds: int, test_fold: int = 0, n_test_folds: int = 1) -> Path:
    """Where one replicate's federation, baselines and pooled models go: the run dir itself for one seed and one
    test fold, else `seeds/<seed>/`, under `folds/<test fold>/` when the test fold rotates."""
    base = out if n_test_folds == 1 else out / "folds" / str(test_fold)
    return base if n_seeds == 1 else base / "seeds" / str(seed)


def fold_pairs(plan: Plan, test_folds: int) -> list[tuple[int, int]]:
    """(test fold, validation fold) of each rotation: fold r is tested, fold r + 1 (cyclic) selects the model."""
    n = plan.data.folds.n_folds
    if not 1 <= test_folds <= n:
        raise InputError(f"--test-folds must be 1..{n} (the plan's folds.n_folds), got {test_folds}")
    return [(r, (r + 1) % n) for r in range(test_folds)]


def simulate(plan_path: Path, partners: list[Path], out: Path, *, key: Path | None = None, rounds: int | None = None,
             resume: bool = False, baseline: bool = True, pooled: bool = False, seeds: int = 1,
             keep_checkpoints: int = 0, progress: bool = True, verbose: bool = False,
             test_folds: int = 1, rotate: bool = False) -> SimulationResult:
    """Prepare (cached); per test fold and seed: federate embedded, train baselines (and the pooled bound); write
    the tables. `test_folds` > 1 rotates the test fold (cross-validation: more test compounds, tighter intervals)
    for every seed; `rotate` pairs them instead: seed i is tested on fold i, N seeds and N test folds in N runs."""
    from consortium.embedded import run_embedded
    from partner_kit.client_app import app as client_app
    from partner_kit.federated import PartnerConfig, release_partners
    from partner_kit.simulation import prepared_dir_for, read_metrics, train_baseline, train_pooled_cached

    if len(partners) < 1:
        raise InputError("give at least one partner directory with --partners")
    plan = Plan.load(plan_path)
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    total_rounds = int(rounds or plan.federation.rounds)
    if plan.federation.min_partners > len(partners):
        raise InputError(f"the plan needs at least {plan.federation.min_partners} partners "
                         f"(federation.min_partners), {len(partners)} given")
    if plan.federation.secure_aggregation and len(partners) < 2:
        raise InputError("secure aggregation needs at least 2 partners")
    if pooled and not baseline:
        raise InputError("--pooled is compared with the single-partner baselines; drop --no-baseline")
    seed_list = seed_values(plan, seeds)
    if rotate and test_folds > 1:
        raise InputError("--rotate tests seed i on fold i (as many test folds as seeds); drop --test-folds")
    folds = fold_pairs(plan, len(seed_list) if rotate else test_folds)
    if rotate:
        replicates = [(test, valid, seed) for (test, valid), seed in zip(folds, seed_list, strict=True)]
    else:
        replicates = [(test, valid, seed) for test, valid in folds for seed in seed_list]
    per_fold = 1 if rotate else len(seed_list)
    variant_dirs = ([("single", "baseline")] if baseline else []) + [("federated", "model")] + (
        [("pooled", "pooled")] if pooled else [])
    if not verbose:
        logging.getLogger("flwr").setLevel(logging.WARNING)
    seconds: dict[str, float] = {"prepare": 0.0, "federation": 0.0, "baselines": 0.0, "pooled": 0.0}
    names = partner_names(partners)
    t0 = time.perf_counter()
    prepared: dict[str, Path] = {}
    for name, src in zip(names, partners, strict=True):
        pdir, made = prepared_dir_for(Path(src).resolve(), plan, Path(plan_path), key,
                                      out / "partners" / name / "prepared", progress=progress)
        if progress:
            console.print(f"{name}: {'prepared' if made else 'using prepared'} {pdir}")
        prepared[name] = pdir
    seconds["prepare"] = time.perf_counter() - t0

    rows: list[dict[str, Any]] = []
    models: list[dict[str, Any]] = []
    status: dict[str, Any] = {}
    bytes_in: dict[str, int] = dict.fromkeys(names, 0)
    bytes_out: dict[str, int] = dict.fromkeys(names, 0)
    partner_seconds: dict[str, float] = dict.fromkeys(names, 0.0)
    for i, (test_fold, valid_fold, seed) in enumerate(replicates):
        sdir = seed_dir(out, seed, per_fold, test_fold, len(folds))
        label = " ".join(([f"test fold {test_fold}"] if len(folds) > 1 else []) + (
            [f"seed {seed}"] if len(seed_list) > 1 else []))
        label = f"{label} ({i + 1}/{len(replicates)})" if len(replicates) > 1 else ""
        configs = {name: PartnerConfig(plan=Path(plan_path).resolve(), prepared=prepared[name],
                                       model=sdir / "partners" / name / "model", name=name, seed=seed,
                                       valid_fold=valid_fold, test_fold=test_fold, write_behind=True)
                   for name in names}
        t0 = time.perf_counter()
        columns = [TextColumn(f"[bold]federation {label}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[info]}"), TimeElapsedColumn()]
        with Progress(*columns, console=console, disable=not progress) as bar:
            task = bar.add_task("rounds", total=total_rounds, info="")

            def on_status(st: dict[str, Any], bar: Progress = bar, task: Any = task) -> None:
                loss = st.get("last_loss")
                bar.update(task, completed=st.get("round", 0),
                           info=f"{st.get('state', '')}" + (f"  loss {loss:.4f}" if loss is not None else ""))

            settings = RunSettings(plan=plan, run_dir=sdir, rounds=total_rounds, resume=resume, mode="embedded",
                                   on_status=on_status, seed=seed, keep_checkpoints=keep_checkpoints)
            node_configs = {n: c.to_node_config() for n, c in configs.items()}
            try:
                status, grid = run_embedded(settings, client_app, node_configs)
            finally:  # the configs as the ClientApp rebuilt them from the node config
                release_partners(PartnerConfig.from_node_config({**c, "name": n}) for n, c in node_configs.items())
        seconds["federation"] += time.perf_counter() - t0
        node_ids = status.get("partners", {})
        for n in names:
            bytes_in[n] += int(grid.bytes_in[node_ids[n]])
            bytes_out[n] += int(grid.bytes_out[node_ids[n]])
            partner_seconds[n] += round(float(grid.seconds[node_ids[n]]), 3)

        t0 = time.perf_counter()
        baselines: dict[str, dict[str, Any]] = {}
        if baseline:
            for name in names:
                if progress:
                    console.print(f"{name}: single-partner baseline {label}")
                baselines[name] = train_baseline(plan, prepared[name], sdir / "partners" / name / "baseline",
                                                 seed=seed, progress=progress, valid_fold=valid_fold,
                                                 test_fold=test_fold)
        seconds["baselines"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        pooled_metrics: dict[str, dict[str, Any]] = {}
        if pooled:
            if progress:
                console.print(f"pooled model over {', '.join(names)} {label}")
            pooled_metrics = train_pooled_cached(plan, prepared, {n: sdir / "partners" / n / "pooled" for n in names},
                                                 seed=seed, progress=progress, valid_fold=valid_fold,
                                                 test_fold=test_fold)
        seconds["pooled"] += time.perf_counter() - t0

        for name, cfg in configs.items():
            fed = read_metrics(cfg.model)
            info = json.loads((cfg.model / "model.json").read_text())
            row = summary_row(name, info, fed, baselines.get(name), pooled_metrics.get(name))
            rows.append({"seed": seed, "test_fold": test_fold, **row})
            for variant, d in variant_dirs:
                models.append({"seed": seed, "test_fold": test_fold, "partner": name, "variant": variant,
                               "dir": str((sdir / "partners" / name / d).relative_to(out))})
        # After every seed, so a long study stopped part-way still has its tables for the seeds it finished.
        result = SimulationResult(run_dir=out, rows=rows, status=status, seconds=seconds, bytes_to_partner=bytes_in,
                                  bytes_from_partner=bytes_out, partner_seconds=partner_seconds)
        write_summary(result, plan, total_rounds)
        write_comparison(out, plan, prepared, sorted({r[2] for r in replicates[:i + 1]}), models,
                         folds=folds[:1 + i // per_fold], rotate=rotate)
    return result


def write_comparison(out: Path, plan: Plan, prepared: dict[str, Path], seeds: list[int],
                     models: list[dict[str, Any]], folds: list[tuple[int, int]] | None = None,
                     rotate: bool = False) -> Path:
    """`comparison.json`: which model directories the report compares, and how they were chosen."""
    import pandas as pd

    partners = {}
    for name, pdir in prepared.items():
        tasks = pd.read_parquet(Path(pdir) / "tasks.parquet")
        types = tasks["assay_type"] if "assay_type" in tasks.columns else pd.Series([None] * len(tasks))
        partners[name] = {"prepared": str(pdir),
                          "assay_types": {str(a): (None if t is None else str(t))
                                          for a, t in zip(tasks["input_assay_id"], types, strict=True)}}
    folds = folds or [(0, 1)]
    pairs = ", ".join(f"fold {v} selects for test fold {t}" for t, v in folds)
    doc = {
        "plan_hash": plan.hash, "plan_name": plan.name, "test_fold": folds[0][0] if len(folds) == 1 else
        [t for t, _ in folds], "valid_fold": folds[0][1] if len(folds) == 1 else [v for _, v in folds],
        "seeds": seeds,
        "rounds": plan.federation.rounds, "schedule": plan.federation.schedule,
        "local_steps": plan.federation.local_steps, "trunk_optimizer": plan.federation.trunk_optimizer,
        "server_optimizer": plan.federation.server_optimizer, "server_lr": plan.federation.server_lr,
        "batches": plan.federation.batches, "seed_per_fold": rotate,
        "selection": (f"each model chosen on its validation fold only ({pairs}), never on the test fold: "
                      "single-partner and pooled models by early stopping over epochs, federated models by the "
                      "partner's own choice of round; score = task-count-weighted mean of the aggregated AUC-PR "
                      "(classification) and R² (regression) of every task evaluable there, else the validation loss"),
        "partners": partners, "models": models,
    }
    return write_text_atomic(out / "comparison.json", json.dumps(doc, indent=2) + "\n")


def _metric(m: dict[str, Any] | None, key: str) -> float:
    if not m:
        return math.nan
    v = m.get("test", {}).get(key)
    return math.nan if v is None else float(v)


def summary_row(name: str, info: dict[str, Any], fed: dict[str, Any], single: dict[str, Any] | None,
                pooled: dict[str, Any] | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "partner": name, "tasks": int(info["n_class_tasks"]) + int(info["n_regr_tasks"]),
        "class_tasks": int(info["n_class_tasks"]), "regr_tasks": int(info["n_regr_tasks"]),
        "n_train": info.get("n_train"), "best_round": fed.get("best_round"),
        "selection_metric": fed.get("selection_metric"),
    }
    for key in ("auc_pr", "auc_roc", "r2"):
        s, f, p = _metric(single, key), _metric(fed, key), _metric(pooled, key)
        row[f"single_{key}"], row[f"federated_{key}"], row[f"delta_{key}"] = s, f, f - s
        row[f"pooled_{key}"] = p
    return row


def _fmt(v: Any, signed: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, float):
        return f"{v:+.3f}" if signed else f"{v:.3f}"
    return str(v)


def any_evaluable(rows: list[dict[str, Any]]) -> bool:
    """Whether any partner has a task scored on its test fold (else a table of deltas would be all n/a)."""
    return any(not math.isnan(float(r.get(f"{v}_{m}", math.nan)))
               for r in rows for v in ("single", "federated") for m in ("auc_pr", "r2"))


def _mean_sd(values: list[float], signed: bool = False) -> str:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return "n/a"
    text = _fmt(float(statistics.fmean(vals)), signed)
    return text + (f" ±{statistics.stdev(vals):.3f}" if len(vals) > 1 else "")


def summary_table(rows: list[dict[str, Any]], title: str) -> Table:
    """Per partner, means over seeds (± the seeds' standard deviation when there are several)."""
    seeds = sorted({r.get("seed") for r in rows}, key=str)
    folds = sorted({r.get("test_fold", 0) for r in rows})
    pairs = {(r.get("seed"), r.get("test_fold", 0)) for r in rows}
    what = (f"{len(seeds)} seeds, seed i tested on fold i" if len(folds) > 1 and len(pairs) == len(seeds) else
            f"{len(seeds)} seed(s) × {len(folds)} test folds" if len(folds) > 1 else f"{len(seeds)} seeds")
    caption = ("test fold" + ("s " + ", ".join(map(str, folds)) if len(folds) > 1 else "") +
               ", aggregation-weighted over evaluable tasks; " + (
        f"mean ± SD over {what}; " if len(pairs) > 1 else "one seed; ") +
        "best = round(s) each partner kept (on its validation fold). Intervals: report.html")
    table = Table(title=title, caption=caption)
    show_r2 = any(r["regr_tasks"] for r in rows)
    show_pooled = any(not math.isnan(r.get("pooled_auc_pr", math.nan)) or not math.isnan(r.get("pooled_r2", math.nan))
                      for r in rows)
    metrics = [("auc_pr", "PR"), ("auc_roc", "ROC")] + ([("r2", "R²")] if show_r2 else [])
    table.add_column("partner", justify="left", no_wrap=True)
    table.add_column("tasks", justify="right", no_wrap=True)
    for _, short in metrics:
        table.add_column(f"{short} single", justify="right")
        table.add_column(f"{short} fed", justify="right")
        if show_pooled:
            table.add_column(f"{short} pooled", justify="right")
        table.add_column(f"Δ {short}", justify="right")
    table.add_column("best", justify="right", no_wrap=True)
    names = list(dict.fromkeys(r["partner"] for r in rows))
    for name in names:
        mine = [r for r in rows if r["partner"] == name]
        r0 = mine[0]
        cells = [name, f"{r0['class_tasks']}+{r0['regr_tasks']}" if r0["regr_tasks"] else str(r0["tasks"])]
        for key, _ in metrics:
            cells += [_mean_sd([r[f"single_{key}"] for r in mine]), _mean_sd([r[f"federated_{key}"] for r in mine])]
            if show_pooled:
                cells.append(_mean_sd([r.get(f"pooled_{key}", math.nan) for r in mine]))
            cells.append(_mean_sd([r[f"delta_{key}"] for r in mine], signed=True))
        best = sorted(int(r["best_round"]) for r in mine if r.get("best_round") is not None)
        cells.append("n/a" if not best else str(best[0]) if best[0] == best[-1] else f"{best[0]}–{best[-1]}")
        table.add_row(*cells)
    return table


def write_summary(result: SimulationResult, plan: Plan, rounds: int) -> None:
    summary = {
        "plan_hash": plan.hash, "rounds": rounds, "schedule": plan.federation.schedule,
        "secure_aggregation": plan.federation.secure_aggregation,
        "partners": [{k: json_safe(v) for k, v in r.items()} for r in result.rows],
        "seconds": {k: round(v, 3) for k, v in result.seconds.items()},
        "round_seconds": result.status.get("round_seconds", []),
        "partner_seconds": result.partner_seconds,
        "bytes_to_partner": result.bytes_to_partner, "bytes_from_partner": result.bytes_from_partner,
        "test_fold": "aggregated test-fold metrics; per-task metrics stay in each partner's model/metrics.json",
    }
    write_text_atomic(result.run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(SUMMARY_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for r in result.rows:
        writer.writerow({k: ("" if json_safe(r.get(k)) is None else r.get(k)) for k in SUMMARY_COLUMNS})
    write_text_atomic(result.run_dir / "summary.csv", buf.getvalue())
