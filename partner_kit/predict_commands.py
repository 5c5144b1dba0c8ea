"""`partner-kit predict` and `partner-kit serve`: the scientist-facing commands."""

from __future__ import annotations

from pathlib import Path

import typer

from data_prep.atomic import write_atomic
from data_prep.console import console, friendly_errors


@friendly_errors
def predict(
    model: Path = typer.Option(..., "--model", help="Model directory (from `train` or a federated run)"),
    key: Path = typer.Option(..., "--key", help="The consortium's secret.key"),
    input: Path = typer.Option(..., "--input",  # \\[: rich markup would swallow "[name]"
                               help=".smi/.txt (SMILES \\[name] per line) or CSV/Parquet with `smiles`"),
    out: Path = typer.Option(Path("predictions.csv"), "--out", help="Where to write the predictions CSV"),
    prepared: Path | None = typer.Option(None, "--prepared",
                                         help="Prepared training data, for the similarity-to-training confidence"),
) -> None:
    """Predict per-assay activity for a file of molecules; every input row keeps its place, failures say why."""
    from partner_kit.predict import Predictor, read_molecules  # torch + RDKit: only when a command runs

    smiles, names = read_molecules(input)
    table = Predictor(model, key, prepared).predict(smiles, names).table
    write_atomic(out, lambda p: table.to_csv(p, index=False))
    failed = int((table["error"] != "").sum())
    console.print(f"wrote {out}: {len(table)} molecules, {failed} could not be featurized (see the error column)")


@friendly_errors
def serve(
    model: Path = typer.Option(..., "--model", help="Model directory"),
    key: Path = typer.Option(..., "--key", help="The consortium's secret.key"),
    prepared: Path | None = typer.Option(None, "--prepared", help="Prepared training data (similarity confidence)"),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (keep it inside the partner's network)"),
    port: int = typer.Option(8080, help="Port"),
) -> None:
    """Serve the prediction web page for scientists at http://HOST:PORT/."""
    from partner_kit.predict import Predictor
    from partner_kit.web import create_app

    app = create_app(Predictor(model, key, prepared))
    console.print(f"prediction page on http://{host}:{port}/ (Ctrl+C to stop)")
    app.run(host=host, port=port, debug=False)
