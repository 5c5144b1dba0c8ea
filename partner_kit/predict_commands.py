"""`partner-kit predict` and `partner-kit serve`: the scientist-facing commands."""

from __future__ import annotations

from pathlib import Path

import typer

from data_prep.console import console, friendly_errors
from data_prep.errors import InputError
from partner_kit.device import DEVICE_HELP

DEFAULT_SIGNIFICANCE = 0.2  # partner_kit.conformal.DEFAULT_SIGNIFICANCE; not imported: start-up stays instant
SIGNIFICANCE_HELP = "Conformal significance ε: sets hold the true label for ≥ 1 − ε of molecules per class"


def _check_out(out: Path) -> None:
    """Refuse an --out that cannot become a file before any work is done."""
    if out.is_dir():
        raise InputError(f"--out {out} is a directory; give a file name such as {out / 'predictions.csv'}")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"--out {out}: {parent} is a file, not a directory")
            break


@friendly_errors
def predict(
    model: Path = typer.Option(..., "--model", help="Model directory (from `train` or a federated run)"),
    key: Path = typer.Option(..., "--key", help="The consortium's secret.key"),
    input: Path = typer.Option(..., "--input",  # \\[: rich markup would swallow "[name]"
                               help=".smi/.txt (SMILES \\[name] per line), .sdf, or CSV/Parquet with `smiles`"),
    out: Path = typer.Option(Path("predictions.csv"), "--out", help="Where to write the predictions CSV"),
    prepared: Path | None = typer.Option(None, "--prepared",
                                         help="The partner's prepared training data: similarity to training"),
    significance: float = typer.Option(DEFAULT_SIGNIFICANCE, "--significance", help=SIGNIFICANCE_HELP),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    chunk: int = typer.Option(500, "--chunk", min=1,
                              help="Molecules read, predicted and written at a time (memory is flat in the input)"),
) -> None:
    """Predict per-assay activity for a file of molecules; every input row keeps its place, failures say why."""
    import time

    from partner_kit.device import resolve_device
    from partner_kit.predict import Predictor
    from partner_kit.predict_file import Written, predict_file

    resolve_device(device)  # `--device cuda` without a GPU: one clear error before any work
    _check_out(out)
    if not input.is_file():
        raise InputError(f"input file {input} not found")
    predictor = Predictor(model, key, prepared, significance, device=device)
    shown = [time.perf_counter()]

    def progress(done: Written) -> None:  # long inputs: a line every 10 s on stderr
        if time.perf_counter() - shown[0] >= 10:
            shown[0] = time.perf_counter()
            console.print(f"{done.molecules:,} molecules predicted ({done.molecules / done.seconds:.0f}/s)")

    written = predict_file(predictor, input, out, chunk_size=chunk, progress=progress)
    console.print(f"wrote {out}: {written.molecules} molecules, {written.failed} could not be featurized "
                  "(see the error column)")


@friendly_errors
def serve(
    model: Path = typer.Option(..., "--model", help="Model directory"),
    key: Path = typer.Option(..., "--key", help="The consortium's secret.key"),
    prepared: Path | None = typer.Option(None, "--prepared",
                                         help="The partner's prepared training data: similarity and neighbours"),
    significance: float = typer.Option(DEFAULT_SIGNIFICANCE, "--significance", help=SIGNIFICANCE_HELP),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (keep it inside the partner's network)"),
    port: int = typer.Option(8080, help="Port"),
) -> None:
    """Serve the prediction web page for scientists at http://HOST:PORT/ (JSON API under /api/)."""
    from partner_kit.predict import Predictor
    from partner_kit.web import create_app

    app = create_app(Predictor(model, key, prepared, significance))
    console.print(f"prediction page on http://{host}:{port}/ (Ctrl+C to stop)")
    app.run(host=host, port=port, debug=False)
