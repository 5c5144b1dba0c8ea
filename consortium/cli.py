"""`consortium` command line: plan, federated server, embedded simulation, status, report."""

from __future__ import annotations

from pathlib import Path

import typer

from consortium.plan import FederationSpec, Plan, TrunkSpec
from data_prep.config import FingerprintConfig, FoldConfig, PrepConfig
from data_prep.console import console, friendly_errors

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)


@app.callback()
def main() -> None:
    """Plan a consortium, serve or simulate federated runs, report results."""


@app.command()
@friendly_errors
def init(
    out: Path = typer.Option(..., "--out", help="Where to write plan.toml"),
    name: str = typer.Option("consortium", help="Consortium name"),
    radius: int = typer.Option(3, help="ECFP radius"),
    fp_size: int = typer.Option(32000, help="Folded fingerprint size"),
    counts: bool = typer.Option(False, "--counts", help="Count fingerprints instead of binary"),
    n_folds: int = typer.Option(5, help="Number of scaffold folds"),
    hidden: str = typer.Option("2000", help="Trunk hidden sizes, comma separated"),
    dropout: float = typer.Option(0.2, help="Trunk dropout"),
    rounds: int = typer.Option(20, help="Federated rounds"),
    schedule: str = typer.Option("local_steps", help="local_steps | local_epochs | per_iteration"),
    local_steps: int = typer.Option(50, help="Optimizer steps per partner per round (local_steps)"),
    secure_aggregation: bool = typer.Option(False, "--secagg", help="Use Flower SecAgg+"),
    min_partners: int = typer.Option(2, help="Partners needed for a round"),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing plan"),
) -> None:
    """Write a consortium plan with MELLODDY-TUNER defaults; give it to every partner."""
    if out.exists() and not force:
        raise typer.BadParameter(f"{out} exists; pass --force to overwrite", param_hint="--out")
    plan = Plan(
        name=name,
        data=PrepConfig(
            fingerprint=FingerprintConfig(radius=radius, size=fp_size, binary=not counts),
            folds=FoldConfig(n_folds=n_folds),
        ),
        trunk=TrunkSpec(hidden_sizes=[int(h) for h in hidden.split(",")], dropout=dropout),
        federation=FederationSpec(
            rounds=rounds, schedule=schedule, local_steps=local_steps,
            secure_aggregation=secure_aggregation, min_partners=min_partners,
        ),
    )
    plan.save(out)
    console.print(f"wrote {out} (plan hash {plan.hash[:16]}…)")


if __name__ == "__main__":
    app()
