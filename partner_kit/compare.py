"""`partner-kit compare`: one partner's single vs federated (vs pooled) report from its own model directories.

For a partner that took part in a deployed run, where no `consortium simulate` run directory exists: the same
statistics and HTML as `consortium report` (`consortium.report`), over one partner's tasks. Everything stays at
the partner: the report reads the model directories' test predictions, which name the partner's rows.
"""

from __future__ import annotations

from pathlib import Path

import typer

from data_prep.console import console
from data_prep.errors import InputError

TEST_PREDICTIONS = "test_predictions.parquet"


def ensure_predictions(model_dir: Path, prepared: Path | None) -> bool:
    """Write `model_dir`'s valid/test fold predictions from `prepared` if the directory lacks them.

    Models written before predictions were saved can still be compared; returns True when it wrote them.
    """
    if (model_dir / TEST_PREDICTIONS).is_file():
        return False
    if prepared is None:
        raise InputError(f"{model_dir / TEST_PREDICTIONS} not found; pass --prepared (the partner's prepared "
                         "directory) to compute the model's test-fold predictions first")
    import numpy as np

    from data_prep.prepared import PreparedData
    from partner_kit.batching import CsrBatcher
    from partner_kit.model_outputs import write_model_outputs
    from partner_kit.weights import check_model_matches_data, load_model

    model, info = load_model(model_dir)
    data = PreparedData.load(prepared)
    check_model_matches_data(info, data, source=str(prepared))
    valid_fold, test_fold = _folds(model_dir, info)
    folds = np.asarray(data.folds)
    write_model_outputs(model_dir, model, CsrBatcher(data), data, np.flatnonzero(folds == valid_fold),
                        np.flatnonzero(folds == test_fold))
    return True


def _folds(model_dir: Path, info: dict) -> tuple[int, int]:
    """(validation fold, test fold) the model was trained with: metrics.json, else model.json, else 1 / 0."""
    import json

    metrics_path = model_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    pick = [metrics.get(k, info.get(k)) for k in ("valid_fold", "test_fold")]
    return int(1 if pick[0] is None else pick[0]), int(0 if pick[1] is None else pick[1])


def compare_command(
    single: Path = typer.Option(..., "--single", help="Single-partner model directory (`partner-kit train`)"),
    federated: Path = typer.Option(..., "--federated", help="Federated model directory (`partner-kit join --model`)"),
    pooled: Path | None = typer.Option(None, "--pooled", help="Pooled model directory, if the consortium made one"),
    out: Path = typer.Option(..., "--out", help="HTML report to write; its numbers go to a .json beside it"),
    prepared: Path | None = typer.Option(None, "--prepared", help="The partner's prepared directory: needed only "
                                         "for models saved without their test predictions"),
    partner: str = typer.Option("partner", "--name", help="How the report names this partner"),
    replicates: int = typer.Option(1000, "--replicates", help="Bootstrap replicates for the 95 % intervals"),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap draws"),
) -> None:
    """Report single vs federated (vs pooled) on this partner's test fold, with intervals and DeLong tests."""
    from consortium.comparison import comparison_from_models
    from consortium.report import json_path, write_comparison_report

    models = {"single": single, "federated": federated, **({"pooled": pooled} if pooled is not None else {})}
    for variant, model_dir in models.items():
        if not (model_dir / "model.json").is_file():
            raise InputError(f"--{variant} {model_dir} is not a model directory (no model.json); give the --out "
                             "directory of `partner-kit train` / `join`")
        if ensure_predictions(model_dir, prepared):
            console.print(f"wrote {model_dir / TEST_PREDICTIONS} (test-fold predictions from {prepared})")
    comparison = comparison_from_models(models, partner=partner)
    write_comparison_report(comparison, out, n_boot=replicates, seed=seed)
    console.print(f"wrote {out} and {json_path(out)}", highlight=False)
