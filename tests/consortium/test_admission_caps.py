"""The example count registered at admission (`consortium admit --max-examples`): a reply claiming more is refused."""

from __future__ import annotations

import numpy as np
from cons_helpers import scripted_app, tiny_plan
from typer.testing import CliRunner

from consortium.admission import ADMITTED_DIR, Admission
from consortium.certs import make_node_keys
from consortium.checkpoints import checkpoint_path, load_checkpoint
from consortium.cli import app
from consortium.embedded import node_id_for, run_embedded
from consortium.ledger import verify
from consortium.server_app import RunSettings
from consortium.trunk import initial_trunk


def _admit_cap(run_dir, name, cap):
    """What `consortium admit NAME.pub --max-examples CAP` leaves once the SuperLink registered the node."""
    folder = run_dir / ADMITTED_DIR
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.node-id").write_text(f"{node_id_for(name)}\n")
    (folder / f"{name}.max-examples").write_text(f"{cap}\n")


def _run(tmp_path, plan, partners, secagg=False):
    settings = RunSettings(plan=plan, run_dir=tmp_path / "run", rounds=plan.federation.rounds, mode="embedded")
    return run_embedded(settings, scripted_app(partners, secagg=secagg), {n: {} for n in partners})


def test_reply_claiming_more_examples_than_registered_is_refused_with_its_reason(tmp_path):
    plan = tiny_plan(rounds=1, min_partners=2)
    _admit_cap(tmp_path / "run", "A", 10)   # claims exactly its registered count: fine
    _admit_cap(tmp_path / "run", "C", 25)   # registered 25, claims 30: refused
    partners = {"A": (1.0, 10, ""), "B": (4.0, 30, ""), "C": (100.0, 30, "")}
    status, _ = _run(tmp_path, plan, partners)
    start = initial_trunk(plan, plan.training.seed)
    final = load_checkpoint(checkpoint_path(tmp_path / "run", 1), plan)
    for name in start:  # A and B only: (1*10 + 4*30) / 40
        np.testing.assert_allclose(final[name], start[name] + 3.25, rtol=1e-6, atol=1e-5)
    entry = verify(tmp_path / "run" / "ledger.jsonl")[0]
    assert sorted(entry.node_ids) == sorted([node_id_for("A"), node_id_for("B")])
    assert len(entry.refused) == 1 and "partner C claims 30 training examples, more than the 25 registered" \
        in entry.refused[0]
    assert str(node_id_for("C")) in status["refused"][0]


def test_secagg_count_probe_over_the_registered_cap_is_refused_too(tmp_path):
    plan = tiny_plan(rounds=1, min_partners=2, secure_aggregation=True)
    _admit_cap(tmp_path / "run", "C", 5)
    partners = {"A": (0.5, 10, ""), "B": (0.5, 20, ""), "C": (0.5, 30, "")}
    status, _ = _run(tmp_path, plan, partners, secagg=True)
    assert any("partner C claims 30 training examples" in r for r in status["refused"])
    entry = verify(tmp_path / "run" / "ledger.jsonl")[0]
    assert node_id_for("C") not in entry.node_ids and len(entry.node_ids) == 2


def test_unregistered_node_or_no_cap_means_only_the_plan_cap(tmp_path):
    adm = Admission(tmp_path, required=False)
    adm.check_examples(123, 10**6)  # no admitted dir at all
    (tmp_path / ADMITTED_DIR).mkdir()
    (tmp_path / ADMITTED_DIR / "X.max-examples").write_text("5\n")  # admitted, not yet registered (no node id)
    adm.check_examples(123, 10**6)
    (tmp_path / ADMITTED_DIR / "X.node-id").write_text("123\n")
    assert adm.example_caps() == {123: ("X", 5)}


def test_admit_cli_stores_replaces_and_revokes_the_cap(tmp_path):
    _, pub = make_node_keys(tmp_path / "pharma.key")
    runner = CliRunner()
    run = tmp_path / "run"
    res = runner.invoke(app, ["admit", str(pub), "--out", str(run), "--name", "pharma-a", "--max-examples", "5000"])
    assert res.exit_code == 0, res.output
    cap = run / ADMITTED_DIR / "pharma-a.max-examples"
    assert cap.read_text().strip() == "5000" and "more than 5000 training examples" in res.output
    res = runner.invoke(app, ["admit", str(pub), "--out", str(run), "--name", "pharma-a", "--max-examples", "0"])
    assert res.exit_code == 2 and cap.read_text().strip() == "5000"
    assert runner.invoke(app, ["admit", str(pub), "--out", str(run), "--name", "pharma-a"]).exit_code == 0
    assert not cap.exists()  # re-admitted without a count: no stale cap
    runner.invoke(app, ["admit", str(pub), "--out", str(run), "--name", "pharma-a", "--max-examples", "7"])
    assert runner.invoke(app, ["admit", str(pub), "--out", str(run), "--name", "pharma-a", "--revoke"]).exit_code == 0
    assert not cap.exists() and not (run / ADMITTED_DIR / "pharma-a.pub").exists()
