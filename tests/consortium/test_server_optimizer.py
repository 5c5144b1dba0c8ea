"""`federation.server_optimizer = "adam"`: the server's Adam step equals torch's on the mean gradient; its state."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cons_helpers import tiny_plan

from consortium.plan import FederationSpec, trunk_shapes
from consortium.server_optimizer import LAZY_ARRAY, ServerAdam, state_path
from consortium.strategy import weighted_average
from data_prep.errors import InputError


def _adam_plan():
    return tiny_plan(schedule="per_iteration", server_optimizer="adam")


def test_server_adam_equals_torch_adam_on_the_example_weighted_mean_gradient():
    plan = _adam_plan()
    shapes = trunk_shapes(plan)
    rng = np.random.default_rng(0)
    trunk = [rng.normal(0, 0.1, s).astype(np.float32) for s in shapes.values()]
    # Reference: torch Adam per dense array; the lazy array as one Adam per row (per-row step counts), stepped
    # only on rounds where some partner moved that row.
    ref = {n: torch.nn.Parameter(torch.tensor(a)) for n, a in zip(shapes, trunk, strict=True)}
    rows = [torch.nn.Parameter(r.clone()) for r in ref[LAZY_ARRAY].data]
    wd, lr = plan.training.weight_decay, plan.training.learning_rate
    dense_opt = torch.optim.Adam([p for n, p in ref.items() if n != LAZY_ARRAY], lr=lr, weight_decay=wd)
    row_opts = [torch.optim.Adam([r], lr=lr, weight_decay=wd) for r in rows]
    server = ServerAdam(plan)
    examples = [30, 10]
    for _ in range(3):
        grads = []
        for _k in examples:
            g = [rng.normal(0, 1e-3, s).astype(np.float32) for s in shapes.values()]
            g[0][rng.random(shapes[LAZY_ARRAY][0]) < 0.5] = 0.0  # rows this partner's batch did not touch
            grads.append(g)
        grads[0][0][:5] = grads[1][0][:5] = 0.0  # rows no partner touched this round
        replies = [[t - d for t, d in zip(trunk, g, strict=True)] for g in grads]
        averaged = weighted_average(replies, examples)
        mean_grad = [np.asarray(t, np.float64) - a for t, a in zip(trunk, averaged, strict=True)]
        server.step(trunk, averaged)
        for (name, p), g in zip(ref.items(), mean_grad, strict=True):
            if name != LAZY_ARRAY:
                p.grad = torch.tensor(g, dtype=torch.float32)
        dense_opt.step()
        for r, opt, g in zip(rows, row_opts, mean_grad[0], strict=True):
            if np.any(g != 0):
                r.grad = torch.tensor(g, dtype=torch.float32)
                opt.step()
        expected = [torch.stack([r.data for r in rows]).numpy()] + [p.data.numpy() for n, p in ref.items()
                                                                    if n != LAZY_ARRAY]
        for got, want in zip(averaged, expected, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(averaged[0][:5], trunk[0][:5])  # untouched rows stay as sent, bit for bit
        trunk = averaged
    assert server.step_count == 3 and server.row_step[:5].tolist() == [0] * 5


def test_server_adam_state_round_trips_and_refuses_another_round(tmp_path):
    plan = _adam_plan()
    server = ServerAdam(plan)
    sent = [np.ones(s, np.float32) for s in trunk_shapes(plan).values()]
    averaged = [a - 1e-3 for a in sent]
    server.step(sent, averaged)
    path = server.save(state_path(tmp_path / "round-004.safetensors"), 4)
    assert path.name == "round-004.server-adam.safetensors"
    again = ServerAdam(plan)
    again.load(path, 4)
    for k, v in server.state().items():
        np.testing.assert_array_equal(again.state()[k], v)
    with pytest.raises(InputError, match="round 4 of plan"):
        ServerAdam(plan).load(path, 5)
    with pytest.raises(InputError, match="cannot resume exactly"):
        ServerAdam(plan).load(tmp_path / "missing.safetensors", 4)


@pytest.mark.parametrize(("change", "needs"), [
    ({"schedule": "local_steps"}, "per_iteration"),
    ({"server_lr": 2.0}, "server_lr = 1"),
    ({"wire_dtype": "float16"}, "float32"),
    ({"secure_aggregation": True}, "secure_aggregation = false"),
])
def test_plan_says_what_a_server_adam_needs(change, needs):
    fields = {"schedule": "per_iteration", "server_optimizer": "adam", **change}
    with pytest.raises(InputError, match=needs):
        FederationSpec(**fields)


def test_plan_refuses_an_unknown_server_optimizer():
    with pytest.raises(InputError, match="server_optimizer 'sgd' unknown"):
        FederationSpec(server_optimizer="sgd")
