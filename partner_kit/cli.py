"""`partner-kit` command line: local training, evaluation, federated join, prediction."""

from __future__ import annotations

import json
import math
from pathlib import Path

import typer
from rich.table import Table

from data_prep.atomic import write_text_atomic
from data_prep.console import console, friendly_errors
from partner_kit.device import DEVICE_HELP

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)


@app.callback()
def main() -> None:
    """Train, evaluate, join a federation and predict with a partner's private model."""


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch  # here, not at the top: `partner-kit --help` must not wait for torch

        torch.set_num_threads(threads)


def _metric_table(title: str, columns: dict[str, dict]) -> Table:
    table = Table(title=title)
    table.add_column("metric")
    for name in columns:
        table.add_column(name, justify="right")
    keys = [k for k in next(iter(columns.values())) if not k.startswith("n_")]
    for key in keys:
        cells = []
        for agg in columns.values():
            v = agg.get(key)
            cells.append("n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}")
        table.add_row(key, *cells)
    first = next(iter(columns.values()))
    table.caption = (f"evaluable tasks: {first.get('n_class_evaluable', 0)}/{first.get('n_class_tasks', 0)} "
                     f"classification, {first.get('n_regr_evaluable', 0)}/{first.get('n_regr_tasks', 0)} regression")
    table.min_width = len(table.caption)  # rich wraps a caption to the table's width ("12/12 / classification")
    return table


@app.command()
@friendly_errors
def train(
    plan_path: Path = typer.Option(..., "--plan", help="Consortium plan (plan.toml)"),
    prepared: Path = typer.Option(..., "--prepared", help="Prepared directory from `data-prep prepare`"),
    out: Path = typer.Option(..., "--out", help="Model directory to write"),
    valid_fold: int = typer.Option(1, "--valid-fold", help="Fold used for early stopping"),
    test_fold: int = typer.Option(0, "--test-fold", help="Fold held out for the final test metrics"),
    seed: int | None = typer.Option(None, "--seed", help="Random seed (default: the plan's training.seed)"),
    init_trunk: Path | None = typer.Option(None, "--init-trunk", help="Start from this trunk.safetensors"),
    freeze_trunk: bool = typer.Option(False, "--freeze-trunk", help="Train the heads only (needs --init-trunk)"),
    max_epochs: int | None = typer.Option(None, "--max-epochs", help="Override the plan's training.max_epochs"),
    threads: int | None = typer.Option(None, "--threads", help="torch CPU threads (default: torch's choice)"),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar"),
) -> None:
    """Train the single-partner model with early stopping on validation AUC-PR; write model/ files."""
    from consortium.plan import Plan
    from data_prep.errors import InputError
    from data_prep.prepared import PreparedData
    from partner_kit.device import resolve_device
    from partner_kit.training import fit
    from partner_kit.weights import read_trunk

    _set_threads(threads)
    resolve_device(device)  # `--device cuda` without a GPU: one clear error before any data is read
    plan = Plan.load(plan_path)
    if freeze_trunk and init_trunk is None:
        raise InputError("--freeze-trunk needs --init-trunk: a frozen random trunk would learn nothing")
    data = PreparedData.load(prepared)
    trunk = read_trunk(init_trunk, plan) if init_trunk is not None else None
    metrics = fit(plan, data, out, valid_fold=valid_fold, test_fold=test_fold, seed=seed, init_trunk=trunk,
                  freeze_trunk=freeze_trunk, progress=not quiet, max_epochs=max_epochs, source=str(prepared),
                  device=device)
    console.print(_metric_table(f"best epoch {metrics['best_epoch']} of {metrics['epochs_run']}",
                                {f"valid (fold {valid_fold})": metrics["valid"],
                                 f"test (fold {test_fold})": metrics["test"]}))
    console.print(f"wrote {out}/ (trunk.safetensors, heads.safetensors, model.json, metrics.json)")


@app.command()
@friendly_errors
def evaluate(
    model_dir: Path = typer.Option(..., "--model", help="Model directory from `partner-kit train`"),
    prepared: Path = typer.Option(..., "--prepared", help="The partner's prepared directory"),
    fold: int = typer.Option(0, "--fold", help="Fold to evaluate"),
    plan_path: Path | None = typer.Option(None, "--plan", help="Check the model against this plan"),
    out: Path | None = typer.Option(None, "--out", help="Write aggregate + per-task metrics as JSON"),
    per_task: Path | None = typer.Option(None, "--per-task", help="Write the per-task table as CSV"),
    threads: int | None = typer.Option(None, "--threads", help="torch CPU threads"),
) -> None:
    """Per-task and aggregation-weighted metrics of a saved model on one fold."""
    import numpy as np

    from consortium.plan import Plan
    from data_prep.errors import InputError
    from data_prep.prepared import PreparedData
    from partner_kit.batching import CsrBatcher
    from partner_kit.training import evaluate_rows
    from partner_kit.weights import check_model_matches_data, load_model

    _set_threads(threads)
    plan = Plan.load(plan_path) if plan_path is not None else None
    model, info = load_model(model_dir, plan)
    data = PreparedData.load(prepared)
    check_model_matches_data(info, data, source=str(prepared))
    rows = np.flatnonzero(np.asarray(data.folds) == fold)
    if rows.size == 0:
        raise InputError(f"{prepared} has no rows in fold {fold}; folds present: {sorted(set(data.folds.tolist()))}")
    ev = evaluate_rows(model, CsrBatcher(data), data, rows)
    console.print(_metric_table(f"{model_dir} on {prepared}", {f"fold {fold}": ev.aggregate}))
    if out is not None:
        write_text_atomic(out, json.dumps({"fold": fold, **ev.to_dict()}, indent=2) + "\n")
        console.print(f"wrote {out}")
    if per_task is not None:
        write_text_atomic(per_task, ev.per_task.to_csv(index=False))
        console.print(f"wrote {per_task}")


# ---- further commands (federated join, prediction) are registered below by their modules ------------------
from partner_kit.join import join_command, keygen_command  # noqa: E402

app.command("join")(friendly_errors(join_command))
app.command("keygen")(friendly_errors(keygen_command))

from partner_kit.predict_commands import predict, serve  # noqa: E402

app.command("predict")(predict)
app.command("serve")(serve)

from partner_kit.compare import compare_command  # noqa: E402

app.command("compare")(friendly_errors(compare_command))


if __name__ == "__main__":
    app()
