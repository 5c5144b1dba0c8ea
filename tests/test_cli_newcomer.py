"""Small surprises a newcomer met in the command lines (issue 12): each promise in --help holds."""

from __future__ import annotations

import stat

import typer
from rich.console import Console
from typer.testing import CliRunner

from consortium import cli as consortium_cli
from data_prep import cli as data_prep_cli
from partner_kit import cli as partner_kit_cli


def _simulate_partners(args: list[str]) -> list[str]:
    """Parse `consortium simulate ARGS` with click (nothing runs) and combine the partner directories."""
    simulate = typer.main.get_command(consortium_cli.app).commands["simulate"]
    params = simulate.make_context("simulate", args).params
    return [str(p) for p in consortium_cli._partners_arg(params["partners"], params["more_partners"])]


def test_simulate_takes_a_list_after_one_partners_option_as_its_help_promises():
    base = ["--plan", "plan.toml", "--out", "run"]
    listed = _simulate_partners(["--plan", "plan.toml", "--partners", "A", "B", "C", "--out", "run"])
    repeated = _simulate_partners([*base, "--partners", "A", "--partners", "B", "--partners", "C"])
    assert listed == repeated == ["A", "B", "C"]
    result = CliRunner().invoke(consortium_cli.app, ["simulate", *base])
    assert result.exit_code == 2 and "give one or more partner directories" in result.output


def test_predict_help_shows_the_name_column_rich_markup_used_to_swallow():
    result = CliRunner().invoke(partner_kit_cli.app, ["predict", "--help"], terminal_width=200)
    assert result.exit_code == 0
    text = " ".join(result.output.replace("│", " ").split())  # the help column may wrap at any width
    assert "SMILES [name] per line" in text


def test_the_public_plan_is_world_readable_and_the_secret_key_is_not(tmp_path):
    plan, key = tmp_path / "plan.toml", tmp_path / "secret.key"
    result = CliRunner().invoke(consortium_cli.app, ["init", "--out", str(plan)])
    assert result.exit_code == 0, result.output
    assert CliRunner().invoke(data_prep_cli.app, ["keygen", "--out", str(key)]).exit_code == 0
    assert stat.S_IMODE(plan.stat().st_mode) == 0o644
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_the_metric_table_keeps_its_task_count_caption_on_one_line():
    metrics = {"auc_pr": 0.5, "auc_roc": 0.7, "n_class_evaluable": 12, "n_class_tasks": 12,
               "n_regr_evaluable": 0, "n_regr_tasks": 0}
    console = Console(width=80, record=True)
    console.print(partner_kit_cli._metric_table("model on prepared", {"fold 0": metrics}))
    assert "evaluable tasks: 12/12 classification, 0/0 regression" in console.export_text()
