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
    trunk_optimizer: str = typer.Option("keep", help="keep | reset: partners' trunk Adam moments across rounds"),
    finetune_epochs: int = typer.Option(0, help="Epochs of private fine-tuning after the last round (0 = off)"),
    server_lr: float = typer.Option(1.0, help="Server learning rate on the averaged trunk update (1 = FedAvg)"),
    server_optimizer: str = typer.Option("none", help="none | adam: the trunk's Adam on the server (with "
                                         "--schedule per_iteration; the pooled model's update)"),
    batches: str = typer.Option("epochs", help="epochs | per_round: how partners draw their batches across "
                                "rounds (epochs: every row once per epoch, as the single and pooled models)"),
    secure_aggregation: bool = typer.Option(False, "--secagg", help="Use Flower SecAgg+"),
    min_partners: int = typer.Option(2, help="Partners needed for a round"),
    dp_noise_multiplier: float = typer.Option(0.0, help="Differential privacy: noise multiplier σ (0 = DP off)"),
    dp_clipping_norm: float = typer.Option(1.0, help="Differential privacy: L2 bound of each partner's update"),
    dp_delta: float = typer.Option(1e-5, help="Differential privacy: δ at which ε is reported"),
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
            rounds=rounds, schedule=schedule, local_steps=local_steps, trunk_optimizer=trunk_optimizer,
            finetune_epochs=finetune_epochs, server_lr=server_lr, server_optimizer=server_optimizer,
            batches=batches, secure_aggregation=secure_aggregation,
            min_partners=min_partners,
            dp_enabled=dp_noise_multiplier > 0, dp_noise_multiplier=dp_noise_multiplier or 1.0,
            dp_clipping_norm=dp_clipping_norm, dp_delta=dp_delta,
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
    test_folds: int = typer.Option(1, "--test-folds", min=1, help="Rotate the test fold over the first N folds "
                                   "(fold r tested, fold r + 1 selects): N times the test compounds, tighter "
                                   "intervals, N times the compute"),
    rotate: bool = typer.Option(False, "--rotate", help="Test seed i on fold i instead (--seeds N: N seeds and N "
                                "test folds in N runs, the compute of --seeds alone)"),
    keep_checkpoints: int = typer.Option(0, "--keep-checkpoints", min=0, help="Keep only the newest N round "
                                         "checkpoints per run (0 = all; the ledger keeps every round's hash)"),
    report: bool = typer.Option(True, "--report/--no-report", help="Write RUN/report.html (intervals, plots) "
                                "and print its table"),
    verbose: bool = typer.Option(False, "--verbose", help="Show Flower's own log lines"),
) -> None:
    """Run the federation embedded in one process (no network) and print single vs federated per partner."""
    from consortium.simulate import any_evaluable, summary_table
    from consortium.simulate import simulate as run_simulation

    result = run_simulation(plan_path, _partners_arg(partners, more_partners), out, key=key, rounds=rounds,
                            resume=resume, baseline=baseline, pooled=pooled, seeds=seeds,
                            keep_checkpoints=keep_checkpoints, verbose=verbose, test_folds=test_folds,
                            rotate=rotate)
    st = result.status
    schedule = Plan.load(plan_path).federation.schedule
    out = Console()
    if not out.is_terminal:  # a log file or pipe: do not squeeze the table into 80 columns
        out = Console(width=140)
    if not any_evaluable(result.rows):
        console.print("[bold red]no task is evaluable on any partner's test fold[/] (every classification task lacks "
                      "the per-fold quorum of actives/inactives, every regression task too few values or a standard "
                      "deviation below tasks.min_eval_regression_std): there is no uplift to show. Check the quorums "
                      "in the plan's [tasks] table and the per-fold counts in each prepared tasks.parquet.")
        return
    out.print(summary_table(result.rows, f"test fold, {st.get('round')} rounds ({schedule})"))
    if report and baseline:
        _write_and_print_report(result.run_dir, result.run_dir / "report.html")
    layout = ("folds/<test fold>/" if test_folds > 1 or rotate else "") + (
        "seeds/<seed>/" if seeds > 1 and not rotate else "")
    console.print(f"run directory {result.run_dir}: {layout}ledger.jsonl, {layout}checkpoints/, "
                  f"{layout}partners/*/{{model,baseline{',pooled' if pooled else ''}}}, comparison.json, summary.json, "
                  f"summary.csv ({sum(result.seconds.values()):.0f} s)", highlight=False)


@app.command()
@friendly_errors
def serve(
    plan_path: Path = typer.Option(..., "--plan", help="Consortium plan (plan.toml)"),
    out: Path = typer.Option(..., "--out", help="Run directory (checkpoints, ledger, status)"),
    port: int = typer.Option(9093, "--port", help="SuperLink port (Fleet, Control and Runtime APIs)"),
    host: str | None = typer.Option(None, "--host", help="Address the SuperLink listens on (default: 0.0.0.0 "
                                    "with TLS, 127.0.0.1 with --insecure)"),
    rounds: int | None = typer.Option(None, "--rounds", help="Rounds to run (default: the plan's)"),
    resume: bool = typer.Option(False, "--resume", help="Continue a stopped run from its last checkpoint"),
    insecure: bool = typer.Option(False, "--insecure", help="No TLS, no node authentication: loopback only"),
    certs: Path | None = typer.Option(None, "--certs", help="Directory from `consortium certs` (ca.crt, "
                                      "server.pem, server.key)"),
    ssl_ca_certfile: Path | None = typer.Option(None, "--ssl-ca-certfile", help="CA certificate (TLS)"),
    ssl_certfile: Path | None = typer.Option(None, "--ssl-certfile", help="Server certificate (TLS)"),
    ssl_keyfile: Path | None = typer.Option(None, "--ssl-keyfile", help="Server private key (TLS)"),
    node_auth: bool = typer.Option(True, "--node-auth/--no-node-auth", help="Only admitted partner keys may "
                                   "connect (TLS only; admit with `consortium admit`)"),
    timeout: float = typer.Option(4 * 3600, "--timeout", min=1, help="Give up after this many seconds"),
) -> None:
    """Start the SuperLink and the consortium's server app for the plan; partners join with `partner-kit join`.

    TLS and node authentication are on by default: `consortium certs` once, `consortium admit` per partner.
    """
    import signal

    from consortium.certs import CA_CERT, SERVER_CERT, SERVER_KEY
    from consortium.deploy import ADMITTED_DIR, TlsOptions, run_deployed, start_consortium
    from consortium.server_app import RunSettings, start_point

    plan = Plan.load(plan_path)
    total = int(rounds or plan.federation.rounds)
    out = out.resolve()
    start_point(RunSettings(plan=plan, run_dir=out, rounds=total, resume=resume))  # fail fast
    if certs is not None and not insecure:
        ssl_ca_certfile = ssl_ca_certfile or certs / CA_CERT
        ssl_certfile, ssl_keyfile = ssl_certfile or certs / SERVER_CERT, ssl_keyfile or certs / SERVER_KEY
    tls = TlsOptions(insecure=insecure, ca_certfile=ssl_ca_certfile, certfile=ssl_certfile, keyfile=ssl_keyfile,
                     node_auth=node_auth).resolved()  # every path checked (and made absolute) before any start
    host = host or ("127.0.0.1" if insecure else "0.0.0.0")
    admitted = sorted((out / ADMITTED_DIR).glob("*.pub"))
    if not insecure and node_auth and not admitted:
        console.print(f"warning: no partner admitted yet ({out / ADMITTED_DIR} is empty): nodes cannot connect "
                      f"until you run `consortium admit partner.pub --out {out}`", highlight=False)

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # runs the finally below: the SuperLink and its children stop with us

    signal.signal(signal.SIGTERM, stop)
    consortium = start_consortium(out, port=port, host=host, tls=tls, on_plaintext=_print_plaintext)
    mode = "INSECURE, loopback only" if insecure else (
        f"TLS, node authentication, {len(admitted)} admitted" if node_auth else "TLS, no node authentication")
    console.print(f"SuperLink on {host}:{port} ({mode}); partners join with "
                  f"`partner-kit join --superlink HOST:{port} ...`; follow with `consortium status {out}`",
                  highlight=False)
    if consortium.front is not None:
        console.print(f"  TLS-only front on {host}:{port} (plaintext clients refused, with a line here), the "
                      f"SuperLink itself on {consortium.superlink_address}", highlight=False)
    try:
        result = run_deployed(consortium, plan_path, out, rounds=total, resume=resume, timeout=timeout,
                              on_status=_print_status, on_log=_print_refused_node)
    except (RuntimeError, TimeoutError) as exc:
        raise InputError(f"{exc}") from None
    except KeyboardInterrupt:
        raise InputError(f"stopped; resume with `consortium serve ... --out {out} --resume`") from None
    finally:
        consortium.stop()
    console.print(f"run {result['run_id']} finished: {result['status'].get('round')} rounds, ledger {out}/ledger.jsonl")


@app.command()
@friendly_errors
def certs(
    out: Path = typer.Option(..., "--out", help="Directory for ca.crt, ca.key, server.pem, server.key"),
    host: list[str] = typer.Option([], "--host", help="Name or address partners reach the server by "
                                   "(repeat; localhost and 127.0.0.1 are always included)"),
    days: int = typer.Option(365, "--days", min=1, help="Validity of the certificates"),
    force: bool = typer.Option(False, "--force", help="Replace existing certificates"),
) -> None:
    """Make the consortium CA and the server certificate; give partners ca.crt (never ca.key or server.key)."""
    from consortium.certs import make_certs

    files = make_certs(out, list(host), days=days, force=force)
    console.print(f"wrote {files.ca_cert} (give to partners), {files.server_cert} and {files.server_key} "
                  f"(serve --certs {out}), {files.ca_key} (keep offline)", highlight=False)


@app.command()
@friendly_errors
def admit(
    public_key: Path = typer.Argument(..., help="A partner's node public key (partner.key.pub from "
                                      "`partner-kit keygen`)"),
    out: Path = typer.Option(..., "--out", help="Run directory of `consortium serve`"),
    name: str | None = typer.Option(None, "--name", help="Name to keep it under (default: the file's stem)"),
    revoke: bool = typer.Option(False, "--revoke", help="Remove this partner's key instead"),
    max_examples: int | None = typer.Option(None, "--max-examples", min=1, help="The training-example count "
                                            "this partner declared: a reply claiming more is refused"),
) -> None:
    """Admit a partner's node key (registered with the SuperLink at every `serve`); --revoke removes it."""
    import shutil

    from consortium.admission import MAX_EXAMPLES_SUFFIX
    from consortium.certs import check_node_public_key
    from consortium.deploy import ADMITTED_DIR, live_superlink, register_node, unregister_node
    from data_prep.atomic import write_text_atomic

    folder = out / ADMITTED_DIR
    stem = name or public_key.name.removesuffix(".pub").removesuffix(".key")
    if not stem.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise InputError(f"--name {stem!r}: use letters, digits, '-', '_' or '.'")
    target = folder / f"{stem}.pub"
    if revoke:
        if not target.is_file():
            raise InputError(f"{target} not found: no partner admitted as {stem!r} in {out}")
        target.unlink()
        node_file = target.with_suffix(".node-id")
        flwr_home = live_superlink(out)
        if flwr_home is not None and node_file.is_file():  # a running consortium: disconnect it now
            node_id = int(node_file.read_text())
            try:
                unregister_node(flwr_home, node_id)
            except RuntimeError as exc:
                raise InputError(f"revoked {stem} for the next serve, but the running SuperLink refused to "
                                 f"unregister node {node_id}: {exc}") from None
            console.print(f"revoked {stem}: node {node_id} unregistered from the running SuperLink and "
                          "disconnected; refused from now on", highlight=False)
        else:
            console.print(f"revoked {stem}: refused from the next `consortium serve` on", highlight=False)
        node_file.unlink(missing_ok=True)
        target.with_suffix(MAX_EXAMPLES_SUFFIX).unlink(missing_ok=True)
        return
    check_node_public_key(public_key)
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(public_key, target)
    cap_file = target.with_suffix(MAX_EXAMPLES_SUFFIX)
    if max_examples is None:
        cap_file.unlink(missing_ok=True)  # admitted as given now: no stale cap from an earlier admission
    else:
        write_text_atomic(cap_file, f"{max_examples}\n")
        console.print(f"{stem}: replies claiming more than {max_examples} training examples will be refused",
                      highlight=False)
    flwr_home = live_superlink(out)
    if flwr_home is not None:  # a running consortium: this node may connect now
        try:
            node_id = register_node(flwr_home, target)
        except RuntimeError as exc:
            raise InputError(f"admitted {stem} for the next serve, but the running SuperLink did not register "
                             f"it: {exc}") from None
        console.print(f"admitted {stem} ({target}): registered with the running SuperLink as node {node_id}",
                      highlight=False)
        return
    console.print(f"admitted {stem} ({target}); registered with the SuperLink when `consortium serve --out {out}` "
                  "starts", highlight=False)


def _print_plaintext(line: str) -> None:
    from rich.markup import escape

    console.print(escape(f"  {line}"), highlight=False, soft_wrap=True)  # one line, whatever the width


def _print_refused_node(line: str) -> None:
    import re

    from rich.markup import escape

    reason = re.sub(r"\x1b\[[0-9;]*m", "", line).split("exception:")[-1].strip()
    if "register-node" in line:
        reason = "a node without a node key (join --node-key)"
    console.print(escape(f"  refused a node: {reason} (admit its key with `consortium admit`)"), highlight=False)


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
    if st.get("dp"):
        dp = st["dp"]
        rows.insert(4, ("differential privacy", f"ε = {dp['epsilon']:.3g} at δ = {dp['delta']:g} so far "
                        f"(σ {dp['noise_multiplier']:g}, clip {dp['clipping_norm']:g}; partner-level)"))
    if "plaintext_refused" in st:  # serve's TLS front (consortium.tls_front)
        rows.append(("plaintext connections refused", str(st["plaintext_refused"])))
    if st.get("no_round_nodes"):
        rows.append(("joined, no round", ", ".join(map(str, st["no_round_nodes"])) + " (no federated model: joined "
                     "after the last round or refused)"))
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
    _write_and_print_report(run_dir, out if out is not None else run_dir / "report.html", replicates, seed)


def _write_and_print_report(run_dir: Path, target: Path, replicates: int = 1000, seed: int = 0) -> None:
    from consortium.report import interval_table, json_path, write_report

    write_report(run_dir, target, n_boot=replicates, seed=seed)
    data = json.loads(json_path(target).read_text())
    term = Console() if Console().is_terminal else Console(width=160)
    for metric in ("auc_pr", "r2"):
        if metric in data["consortium"]["pairs"].get("federated-single", {}):
            term.print(interval_table(data, metric))
    console.print(f"wrote {target} and {json_path(target)}", highlight=False)


if __name__ == "__main__":
    app()
