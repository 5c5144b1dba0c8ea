"""`consortium` command line: plan, federated server, embedded simulation, status, report."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich import print as rprint
from rich.console import Console
from rich.table import Table

from consortium.plan import FederationSpec, Plan, TrunkSpec
from data_prep.config import FingerprintConfig, FoldConfig, PrepConfig
from data_prep.console import console, friendly_errors
from data_prep.errors import InputError

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


def _partners_arg(partners: list[Path] | None, more: list[Path] | None) -> list[Path]:
    """`--partners A B C` and `--partners A --partners B`: click options take one value each, so the
    directories after the first arrive as positional arguments (`more`) and join the list here."""
    partners = [*(partners or []), *(more or [])]
    if not partners:
        raise typer.BadParameter("give one or more partner directories", param_hint="--partners")
    return partners


@app.command()
@friendly_errors
def simulate(
    plan_path: Path = typer.Option(..., "--plan", help="Consortium plan (plan.toml)"),
    partners: list[Path] | None = typer.Option(None, "--partners", help="Partner input dirs (T0/T1/T2) or prepared "
                                               "dirs: --partners A B C, or repeat the option"),
    more_partners: list[Path] | None = typer.Argument(None, hidden=True, metavar="[PARTNER]...",
                                                      help="More partner dirs (after --partners)"),
    out: Path = typer.Option(..., "--out", help="Run directory (checkpoints, ledger, models, summary)"),
    key: Path | None = typer.Option(None, "--key", help="Partners' secret key (needed to prepare input dirs)"),
    rounds: int | None = typer.Option(None, "--rounds", help="Rounds to run (default: the plan's)"),
    resume: bool = typer.Option(False, "--resume", help="Continue a stopped run from its last checkpoint"),
    baseline: bool = typer.Option(True, "--baseline/--no-baseline", help="Train single-partner baselines"),
    pooled: bool = typer.Option(False, "--pooled", help="Also train the pooled upper bound (all partners' rows in "
                                "one model, each partner its own heads)"),
    seeds: int = typer.Option(1, "--seeds", min=1, help="Repeat single, federated (and pooled) with N seeds "
                              "(same key, same folds)"),
    verbose: bool = typer.Option(False, "--verbose", help="Show Flower's own log lines"),
) -> None:
    """Run the federation embedded in one process (no network) and print single vs federated per partner."""
    from consortium.simulate import simulate as run_simulation
    from consortium.simulate import summary_table

    result = run_simulation(plan_path, _partners_arg(partners, more_partners), out, key=key, rounds=rounds,
                            resume=resume, baseline=baseline, pooled=pooled, seeds=seeds, verbose=verbose)
    st = result.status
    schedule = Plan.load(plan_path).federation.schedule
    out = Console()
    if not out.is_terminal:  # a log file or pipe: do not squeeze the table into 80 columns
        out = Console(width=140)
    out.print(summary_table(result.rows, f"test fold, {st.get('round')} rounds ({schedule})"))
    console.print(f"run directory {result.run_dir}: ledger.jsonl, checkpoints/, partners/*/model, summary.json, "
                  f"summary.csv ({sum(result.seconds.values()):.0f} s)")


@app.command()
@friendly_errors
def serve(
    plan_path: Path = typer.Option(..., "--plan", help="Consortium plan (plan.toml)"),
    out: Path = typer.Option(..., "--out", help="Run directory (checkpoints, ledger, status)"),
    port: int = typer.Option(9093, "--port", help="SuperLink port (Fleet, Control and Runtime APIs)"),
    host: str = typer.Option("0.0.0.0", "--host", help="Address the SuperLink listens on"),
    rounds: int | None = typer.Option(None, "--rounds", help="Rounds to run (default: the plan's)"),
    resume: bool = typer.Option(False, "--resume", help="Continue a stopped run from its last checkpoint"),
    insecure: bool = typer.Option(False, "--insecure", help="No TLS (loopback tests only)"),
    ssl_ca_certfile: Path | None = typer.Option(None, "--ssl-ca-certfile", help="CA certificate (TLS)"),
    ssl_certfile: Path | None = typer.Option(None, "--ssl-certfile", help="Server certificate (TLS)"),
    ssl_keyfile: Path | None = typer.Option(None, "--ssl-keyfile", help="Server private key (TLS)"),
    timeout: float = typer.Option(24 * 3600, "--timeout", help="Give up after this many seconds"),
) -> None:
    """Start the SuperLink and the consortium's server app for the plan; partners join with `partner-kit join`."""
    from consortium.deploy import TlsOptions, run_deployed, start_consortium
    from consortium.server_app import RunSettings, start_point

    plan = Plan.load(plan_path)
    total = int(rounds or plan.federation.rounds)
    start_point(RunSettings(plan=plan, run_dir=out.resolve(), rounds=total, resume=resume))  # fail fast
    tls = TlsOptions(insecure=insecure, ca_certfile=ssl_ca_certfile, certfile=ssl_certfile, keyfile=ssl_keyfile)
    consortium = start_consortium(out, port=port, host=host, tls=tls)
    console.print(f"SuperLink on {consortium.address}; partners join with "
                  f"`partner-kit join --superlink HOST:{port} ...`; follow with `consortium status {out}`")
    try:
        result = run_deployed(consortium, plan_path, out, rounds=total, resume=resume, timeout=timeout,
                              on_status=_print_status)
    finally:
        consortium.stop()
    console.print(f"run {result['run_id']} finished: {result['status'].get('round')} rounds, ledger {out}/ledger.jsonl")


def _print_status(status: dict) -> None:
    if status:
        console.print(f"  {status.get('state')}: round {status.get('round')}/{status.get('rounds')}, "
                      f"{len(status.get('nodes', []))} partner node(s) connected", highlight=False)


@app.command()
@friendly_errors
def status(
    run_dir: Path = typer.Argument(..., help="Run directory of `consortium serve` or `simulate`"),
    as_json: bool = typer.Option(False, "--json", help="Print status as JSON"),
) -> None:
    """Show connected partners, round progress and whether the ledger verifies (exit 1 when it does not)."""
    from consortium.ledger import LedgerError, verify_run
    from consortium.run_status import read_status

    st = read_status(run_dir)
    if not st:
        raise InputError(f"{run_dir} has no status.json; is it the --out of `consortium serve` or `simulate`?")
    broken = False
    try:
        entries = verify_run(run_dir)  # the chain, and the ledger heads the checkpoints recorded
        chain = f"verifies ({len(entries)} rounds)"
    except (LedgerError, InputError) as exc:
        entries, chain, broken = [], f"BROKEN: {exc}", True
    if as_json:
        print(json.dumps({**st, "ledger": chain}, indent=2))
        if broken:
            raise typer.Exit(code=1)
        return
    table = Table(title=f"{run_dir} ({st.get('mode')})", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    rows = [
        ("state", str(st.get("state"))), ("round", f"{st.get('round')}/{st.get('rounds')}"),
        ("partner nodes", ", ".join(map(str, st.get("nodes", []))) or "none yet"),
        ("secure aggregation", str(st.get("secure_aggregation"))),
        ("last loss", "n/a" if st.get("last_loss") is None else f"{st['last_loss']:.4f}"),
        ("round seconds", ", ".join(f"{s:.1f}" for s in st.get("round_seconds", [])) or "-"),
        ("refused replies", str(len(st.get("refused", [])))), ("ledger", chain), ("updated", str(st.get("updated"))),
    ]
    if st.get("error"):
        rows.append(("error", str(st["error"])))
    for k, v in rows:
        table.add_row(k, v)
    rprint(table)
    if entries:
        last = entries[-1]
        console.print(f"last round {last.round}: nodes {last.node_ids}, examples {last.examples}, "
                      f"trunk sha256 {last.trunk_sha256[:16]}…", highlight=False)
    if broken:
        console.print(f"error: the ledger of {run_dir} does not verify; `--resume` will refuse it", highlight=False)
        raise typer.Exit(code=1)


@app.command()
@friendly_errors
def report(
    run_dir: Path = typer.Argument(..., help="Run directory of `consortium simulate` (holds comparison.json)"),
    out: Path | None = typer.Option(None, "--out", help="HTML file to write (default RUN/report.html); the "
                                    "numbers go to a .json of the same name beside it"),
    replicates: int = typer.Option(1000, "--replicates", help="Bootstrap replicates for the 95 % intervals"),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap draws"),
) -> None:
    """Single vs federated (vs pooled) with bootstrap intervals and DeLong tests, as one offline HTML file."""
    from consortium.report import interval_table, json_path, write_report

    target = out if out is not None else run_dir / "report.html"
    write_report(run_dir, target, n_boot=replicates, seed=seed)
    data = json.loads(json_path(target).read_text())
    term = Console() if Console().is_terminal else Console(width=160)
    for metric in ("auc_pr", "r2"):
        if metric in data["consortium"]["pairs"].get("federated-single", {}):
            term.print(interval_table(data, metric))
    console.print(f"wrote {target} and {json_path(target)}", highlight=False)


if __name__ == "__main__":
    app()
