"""`data-prep` command line: key generation, preparation, reference hash, prediction rows, wide-table import."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from data_prep.console import console, friendly_errors
from data_prep.errors import InputError
from data_prep.key import generate_key

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)

PLAN = typer.Option(..., "--plan", help="Consortium plan (plan.toml from `consortium init`)")
KEY = typer.Option(..., "--key", help="The partners' secret key (from `data-prep keygen`)")
JOBS = typer.Option(None, "--jobs", "-j", help="Worker processes for standardization (default: all cores)")


@app.callback()
def main() -> None:
    """Prepare a partner's assay files for federated training."""


@app.command()
@friendly_errors
def keygen(
    out: Path = typer.Option(Path("secret.key"), "--out", help="Where to write the key (mode 0600)"),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing key"),
) -> None:
    """Create the partners' shared secret key. Share it among partners only, never with the operator."""
    generate_key(out, overwrite=force)
    console.print(f"wrote {out} (32 random bytes, mode 0600). Share it with the other partners only.")


@app.command()
@friendly_errors
def prepare(
    plan: Path = PLAN,
    key: Path = KEY,
    input_dir: Path = typer.Option(..., "--input", help="Directory with T0, T1, T2 (.csv, .csv.gz or .parquet)"),
    out: Path = typer.Option(..., "--out", help="Prepared directory to write"),
    cache: Path = typer.Option(None, "--cache", help="Cache of standardized structures "
                               "(default ~/.cache/fedqsar or $FEDQSAR_CACHE)"),
    no_cache: bool = typer.Option(False, "--no-cache", help="Standardize everything afresh, cache nothing"),
    jobs: int = JOBS,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output; print the summary JSON only"),
) -> None:
    """Turn T0/T1/T2 assay files into keyed fingerprints, scaffold folds and sparse task matrices."""
    from data_prep.prepare import prepare as run

    summary = run(plan, key, input_dir, out, cache_dir=False if no_cache else cache, n_jobs=jobs,
                  progress=not quiet)
    if quiet:
        print(json.dumps(summary, indent=2, default=str))
    else:
        console.print(f"wrote {out} (details in {out / 'manifest.json'}, rejects in {out / 'rejected.parquet'})")


@app.command("reference-hash")
@friendly_errors
def reference_hash(
    plan: Path = PLAN,
    key: Path = KEY,
    jobs: int = JOBS,
    keep: Path = typer.Option(None, "--keep", help="Also keep the prepared reference set in this directory"),
) -> None:
    """Prepare the reference set shipped with the kit and print a SHA-256 of plan + key + outputs.

    Partners with the same plan, key and kit print the same hash. If the plan holds a reference_hash,
    a different result exits with code 1.
    """
    from data_prep.config import read_plan_dict
    from data_prep.reference import reference_hash as compute

    digest = compute(plan, key, n_jobs=jobs, keep=keep)
    print(digest)
    expected = str(read_plan_dict(plan).get("reference_hash", "") or "")
    if expected and expected != digest:
        console.print(f"[bold red]mismatch:[/] the plan's reference_hash is {expected}; this kit, key or "
                      "RDKit version differs from the consortium's", highlight=False)
        raise typer.Exit(code=1)
    if expected:
        console.print("matches the plan's reference_hash", highlight=False)
    else:  # a bare hash says nothing on its own: tell the partner what to do with it
        console.print("the reference hash of this plan + key + kit (above): compare it with the other partners' "
                      "(equal hashes: same plan, key and kit; it reveals neither); the operator can record the "
                      "agreed hash as reference_hash in plan.toml so this command checks it", highlight=False)


@app.command("prepare-smiles")
@friendly_errors
def prepare_smiles(
    plan: Path = PLAN,
    key: Path = KEY,
    input_file: Path = typer.Option(..., "--input", help="CSV / CSV.gz / Parquet with a SMILES column, "
                                    "or a .smi/.txt file with one SMILES per line"),
    out: Path = typer.Option(..., "--out", help="Directory for x.npz and molecules.parquet"),
    smiles_col: str = typer.Option("smiles", "--smiles-col", help="Name of the SMILES column"),
    id_col: str = typer.Option(None, "--id-col", help="Optional id column to carry into molecules.parquet"),
    jobs: int = typer.Option(1, "--jobs", "-j", help="Worker processes"),
) -> None:
    """Fingerprint rows for prediction, in the consortium's keyed column space; one row per input, in order."""
    from data_prep.prediction import write_prediction_rows

    summary = write_prediction_rows(plan, key, input_file, out, smiles_col=smiles_col, id_col=id_col, n_jobs=jobs)
    console.print(f"wrote {out}: {summary['rows']} rows, {summary['failed']} failed "
                  "(empty rows; see the error column of molecules.parquet)", highlight=False)


@app.command("import-wide")
@friendly_errors
def import_wide(
    file: Path = typer.Argument(..., help="Wide table: a SMILES column and one column per assay"),
    out: Path = typer.Option(..., "--out", help="Directory to write T0.csv, T1.csv.gz, T2.csv"),
    smiles_col: str = typer.Option("smiles", "--smiles-col", help="Name of the SMILES column"),
    id_col: str = typer.Option(None, "--id-col", help="Compound id column (default: number the rows)"),
    binary: str = typer.Option("auto", "--binary", help="auto (0/1 columns are binary), all, none, or a "
                               "comma-separated list of binary columns"),
    assay_type: str = typer.Option("OTHER", "--assay-type", help="assay_type written for every assay"),
) -> None:
    """Convert a MoleculeNet-style wide table into T0/T1/T2 input files."""
    from data_prep.wide import import_wide as run

    choice: bool | list[str] | None = {"auto": None, "all": True, "none": False}.get(binary)
    if binary not in ("auto", "all", "none"):
        choice = [c.strip() for c in binary.split(",") if c.strip()]
        if not choice:
            raise InputError("--binary must be auto, all, none or a list of column names")
    summary = run(file, smiles_col, out, id_col=id_col, binary=choice, assay_type=assay_type)
    console.print(
        f"wrote {out}: {summary['compounds']} compounds, {summary['binary_assays']} binary + "
        f"{summary['dose_response_assays']} dose-response assays, {summary['records']} records"
        + (f"; skipped {len(summary['skipped_columns'])} empty column(s)" if summary["skipped_columns"] else ""),
        highlight=False,
    )




if __name__ == "__main__":
    app()
