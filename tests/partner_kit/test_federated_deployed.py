"""Deployed federation on loopback: a real SuperLink and 3 SuperNodes (Flower processes), compared with embedded."""

from __future__ import annotations

import contextlib
import json
import os
import signal

import numpy as np
import pytest
from fed_helpers import make_federation

from consortium.checkpoints import checkpoint_path, load_checkpoint
from consortium.deploy import free_port, run_deployed, start_consortium
from consortium.ledger import verify
from partner_kit.join import start_supernode


@pytest.mark.slow
def test_deployed_run_on_loopback_matches_the_embedded_run(tmp_path):
    fed = make_federation(tmp_path, rounds=2)
    fed.run("embedded", "model_embedded")
    consortium = start_consortium(tmp_path / "deployed", flwr_home=tmp_path / "flwr-home" / "consortium")
    nodes = []
    hashes = fed.reference_hashes("model_deployed")  # a deployed consortium admits only partners that carry one
    try:
        for name, cfg in fed.partners("model_deployed", hashes).items():
            # A and B fork their ClientApp processes from a warm parent (join's default), C lets Flower
            # start a fresh Python per message: both paths must give the same trunk.
            nodes.append(start_supernode(cfg, consortium.address, port=free_port(),
                                         log=tmp_path / "logs" / f"{name}.log",
                                         flwr_home=tmp_path / "flwr-home" / name, warm=name != "C"))
        result = run_deployed(consortium, fed.plan_path, tmp_path / "deployed", rounds=2, timeout=400)
    finally:
        for proc in nodes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in nodes:
            try:
                proc.wait(timeout=20)
            except Exception:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
        consortium.stop()
    assert result["flower"]["status"] == "finished:completed"
    entries = verify(tmp_path / "deployed" / "ledger.jsonl")
    assert [e.round for e in entries] == [1, 2]
    assert [len(e.node_ids) for e in entries] == [3, 3] and all(len(e.examples) == 3 for e in entries)
    status = json.loads((tmp_path / "deployed" / "status.json").read_text())
    assert status["state"] == "finished" and len(status["nodes"]) == 3 and status["final_partners"] == 3
    for cfg in fed.partners("model_deployed").values():  # heads persisted at every partner, model written
        assert (cfg.model / "federated" / "round-002" / "heads.safetensors").is_file()
        assert json.loads((cfg.model / "metrics.json").read_text())["federated"]
    deployed = load_checkpoint(checkpoint_path(tmp_path / "deployed", 2), fed.plan)
    embedded = load_checkpoint(checkpoint_path(tmp_path / "embedded", 2), fed.plan)
    for k in embedded:
        np.testing.assert_allclose(deployed[k], embedded[k], rtol=0, atol=1e-6)
