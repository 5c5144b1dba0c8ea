"""`--device auto|cpu|cuda` (issue #11): the CPU path is unchanged, the device-generic path agrees with it, and a
missing GPU is one clear error.

There is no GPU on the CI machines, so the torch-native path a GPU runs (`torch.sparse.mm` backward, LazyAdam on
device tensors) is exercised on the CPU through the hidden `cpu-native` device.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pk_helpers import small_plan, synthetic_data
from typer.testing import CliRunner

from data_prep.errors import InputError
from partner_kit.batching import CsrBatcher
from partner_kit.cli import app
from partner_kit.device import NATIVE_CPU, resolve_device, uses_native_sparse
from partner_kit.federated import PartnerConfig
from partner_kit.training import LocalTrainer

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")


def _trained(device: str | None, catch_up: bool = False) -> tuple[dict[str, np.ndarray], LocalTrainer]:
    plan = small_plan(n_features=512, hidden=(64, 32))
    data = synthetic_data(plan, n_rows=600)
    t = LocalTrainer(plan, data, seed=3, **({} if device is None else {"device": device}))
    if catch_up:
        t.trunk_optimizers[0].param_groups[0]["catch_up"] = True
    t.train_epoch(11)
    t.train_steps(7, 5)
    out = {f"trunk.{k}": v for k, v in t.get_trunk().items()}
    out.update({f"heads.{k}": v.detach().cpu().numpy() for k, v in t.model.heads.state_dict().items()})
    prob, regr = t.predict_rows(t.fold_rows(1))
    return {**out, "prob": prob, "regr": regr}, t


def test_explicit_cpu_is_bit_identical_to_the_default():
    default, _ = _trained(None)
    cpu, t = _trained("cpu")
    assert t.device == torch.device("cpu") and not t.model.trunk.input.native
    assert default.keys() == cpu.keys()
    for k in default:
        assert np.array_equal(default[k], cpu[k]), k


@pytest.mark.parametrize("catch_up", [False, True])
def test_the_device_generic_path_matches_the_optimized_cpu_path(catch_up):
    cpu, _ = _trained("cpu", catch_up)
    native, t = _trained(NATIVE_CPU, catch_up)
    assert t.model.trunk.input.native
    state = t.trunk_optimizers[0].state[t.model.trunk.input.weight]
    assert int(state["step"]) == t.steps_done  # LazyAdam really ran on the native gradients
    moved = {k: float(np.abs(cpu[k] - native[k]).max()) for k in cpu}
    assert max(moved.values()) < 1e-4, moved
    # and the training actually changed the trunk (the comparison is not between two untouched models)
    fresh = LocalTrainer(t.plan, t.data, seed=3).get_trunk()
    assert not np.allclose(fresh["input.weight"], native["trunk.input.weight"])


def test_native_backward_equals_the_scipy_backward_on_one_batch():
    plan = small_plan(n_features=512, hidden=(64, 32))
    data = synthetic_data(plan, n_rows=200)
    batch = CsrBatcher(data).batch(np.arange(0, 200, 3)).x
    grads = []
    for native in (False, True):
        t = LocalTrainer(plan, data, seed=1)
        layer = t.model.trunk.input
        layer.native = native
        out = layer(batch)
        (out * torch.linspace(-1, 1, out.shape[1])).square().sum().backward()
        grads.append(layer.weight.grad.coalesce())
    assert torch.equal(grads[0].indices(), grads[1].indices())
    assert torch.allclose(grads[0].values(), grads[1].values(), atol=1e-5)


def test_cpu_batches_are_not_copied():
    plan = small_plan()
    b = CsrBatcher(synthetic_data(plan)).batch(np.arange(10))
    assert b.to(torch.device("cpu")) is b and b.x.to(torch.device("cpu")) is b.x


def test_device_names():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert uses_native_sparse(NATIVE_CPU, resolve_device(NATIVE_CPU))
    assert not uses_native_sparse("cpu", torch.device("cpu"))
    with pytest.raises(InputError, match="not one of auto, cpu, cuda"):
        resolve_device("tpu")


@NO_CUDA
def test_cuda_without_a_gpu_is_an_input_error():
    with pytest.raises(InputError, match="no CUDA GPU"):
        resolve_device("cuda")
    plan = small_plan()
    with pytest.raises(InputError, match="no CUDA GPU"):
        LocalTrainer(plan, synthetic_data(plan), device="cuda")


@NO_CUDA
@pytest.mark.parametrize("command", [
    ["train", "--plan", "p.toml", "--prepared", "prep", "--out", "m"],
    ["predict", "--model", "m", "--key", "k", "--input", "in.smi", "--out", "o.csv"],
    ["join", "--plan", "p.toml", "--prepared", "prep", "--model", "m", "--superlink", "127.0.0.1:1", "--insecure"],
])
def test_cli_device_cuda_without_a_gpu_is_one_line_and_exit_2(command, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, [*command, "--device", "cuda"])
    assert r.exit_code == 2, r.output
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert lines[0].startswith("error: --device cuda: torch sees no CUDA GPU"), r.output
    assert "Traceback" not in r.output


def test_the_device_is_partner_node_config_only():
    cfg = PartnerConfig(plan="p", prepared="d", model="m")
    assert "device" not in cfg.to_node_config()  # unchanged node config for CPU partners
    gpu = PartnerConfig(plan="p", prepared="d", model="m", device="cuda")
    assert PartnerConfig.from_node_config(gpu.to_node_config()).device == "cuda"
