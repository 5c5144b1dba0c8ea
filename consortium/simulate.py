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

SUMMARY_COLUMNS = ("partner", "tasks", "class_tasks", "regr_tasks", "n_train",
                   "single_auc_pr", "federated_auc_pr", "delta_auc_pr",
                   "single_auc_roc", "federated_auc_roc", "delta_auc_roc",
                   "single_r2", "federated_r2", "delta_r2", "best_round")


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


def simulate(plan_path: Path, partners: list[Path], out: Path, *, key: Path | None = None, rounds: int | None = None,
             resume: bool = False, baseline: bool = True, progress: bool = True,
             verbose: bool = False) -> SimulationResult:
    """Prepare (cached), federate embedded, train baselines, write and return the per-partner table."""
    from consortium.embedded import run_embedded
    from partner_kit.client_app import app as client_app
    from partner_kit.federated import PartnerConfig
    from partner_kit.simulation import prepared_dir_for, read_metrics, train_baseline

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
    if not verbose:
        logging.getLogger("flwr").setLevel(logging.WARNING)
    seconds: dict[str, float] = {}
    names = partner_names(partners)
    t0 = time.perf_counter()
    configs: dict[str, PartnerConfig] = {}
    for name, src in zip(names, partners, strict=True):
        pdir = out / "partners" / name
        prepared, made = prepared_dir_for(Path(src).resolve(), plan, Path(plan_path), key, pdir / "prepared",
                                          progress=progress)
        if progress:
            console.print(f"{name}: {'prepared' if made else 'using prepared'} {prepared}")
        configs[name] = PartnerConfig(plan=Path(plan_path).resolve(), prepared=prepared, model=pdir / "model",
                                      name=name)
    seconds["prepare"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    columns = [TextColumn("[bold]federation"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
               TimeElapsedColumn()]
    with Progress(*columns, console=console, disable=not progress) as bar:
        task = bar.add_task("rounds", total=total_rounds, info="")

        def on_status(status: dict[str, Any]) -> None:
            loss = status.get("last_loss")
            bar.update(task, completed=status.get("round", 0),
                       info=f"{status.get('state', '')}" + (f"  loss {loss:.4f}" if loss is not None else ""))

        settings = RunSettings(plan=plan, run_dir=out, rounds=total_rounds, resume=resume, mode="embedded",
                               on_status=on_status)
        status, grid = run_embedded(settings, client_app, {n: c.to_node_config() for n, c in configs.items()})
    seconds["federation"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    baselines: dict[str, dict[str, Any]] = {}
    if baseline:
        for name, cfg in configs.items():
            if progress:
                console.print(f"{name}: single-partner baseline")
            baselines[name] = train_baseline(plan, cfg.prepared, out / "partners" / name / "baseline",
                                             progress=progress)
    seconds["baselines"] = time.perf_counter() - t0

    rows = []
    for name, cfg in configs.items():
        fed = read_metrics(cfg.model)
        info = json.loads((cfg.model / "model.json").read_text())
        rows.append(summary_row(name, info, fed, baselines.get(name)))
    node_ids = status.get("partners", {})
    result = SimulationResult(
        run_dir=out, rows=rows, status=status, seconds=seconds,
        bytes_to_partner={n: int(grid.bytes_in[node_ids[n]]) for n in names},
        bytes_from_partner={n: int(grid.bytes_out[node_ids[n]]) for n in names},
        partner_seconds={n: round(float(grid.seconds[node_ids[n]]), 3) for n in names},
    )
    write_summary(result, plan, total_rounds)
    return result


def _metric(m: dict[str, Any] | None, key: str) -> float:
    if not m:
        return math.nan
    v = m.get("test", {}).get(key)
    return math.nan if v is None else float(v)


def summary_row(name: str, info: dict[str, Any], fed: dict[str, Any], single: dict[str, Any] | None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "partner": name, "tasks": int(info["n_class_tasks"]) + int(info["n_regr_tasks"]),
        "class_tasks": int(info["n_class_tasks"]), "regr_tasks": int(info["n_regr_tasks"]),
        "n_train": info.get("n_train"), "best_round": fed.get("best_round"),
    }
    for key in ("auc_pr", "auc_roc", "r2"):
        s, f = _metric(single, key), _metric(fed, key)
        row[f"single_{key}"], row[f"federated_{key}"], row[f"delta_{key}"] = s, f, f - s
    return row


def _fmt(v: Any, signed: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, float):
        return f"{v:+.3f}" if signed else f"{v:.3f}"
    return str(v)


def summary_table(rows: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title, caption="AUC-PR / AUC-ROC (R²): aggregated over tasks; best = round each partner kept")
    show_r2 = any(r["regr_tasks"] for r in rows)
    heads = ["partner", "tasks", "PR single", "PR fed", "Δ PR", "ROC single", "ROC fed", "Δ ROC"] + (
        ["R² single", "R² fed", "Δ R²"] if show_r2 else []) + ["best"]
    for h in heads:
        if h == "partner":
            table.add_column(h, justify="left", no_wrap=True, min_width=min(max(len(r["partner"]) for r in rows), 12))
        else:
            table.add_column(h, justify="right")
    for r in rows:
        cells = [r["partner"], f"{r['class_tasks']}+{r['regr_tasks']}" if r["regr_tasks"] else str(r["tasks"]),
                 _fmt(r["single_auc_pr"]), _fmt(r["federated_auc_pr"]), _fmt(r["delta_auc_pr"], True),
                 _fmt(r["single_auc_roc"]), _fmt(r["federated_auc_roc"]), _fmt(r["delta_auc_roc"], True)]
        if show_r2:
            cells += [_fmt(r["single_r2"]), _fmt(r["federated_r2"]), _fmt(r["delta_r2"], True)]
        table.add_row(*cells, _fmt(r["best_round"]))
    return table


def _json_safe(v: Any) -> Any:
    return None if isinstance(v, float) and math.isnan(v) else v


def write_summary(result: SimulationResult, plan: Plan, rounds: int) -> None:
    summary = {
        "plan_hash": plan.hash, "rounds": rounds, "schedule": plan.federation.schedule,
        "secure_aggregation": plan.federation.secure_aggregation,
        "partners": [{k: _json_safe(v) for k, v in r.items()} for r in result.rows],
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
        writer.writerow({k: ("" if _json_safe(r.get(k)) is None else r.get(k)) for k in SUMMARY_COLUMNS})
    write_text_atomic(result.run_dir / "summary.csv", buf.getvalue())
