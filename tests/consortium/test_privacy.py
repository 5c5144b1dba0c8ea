"""Differential privacy: plan keys, partner-side clipping, the server's noise scale, ε per round in the ledger."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from cons_helpers import scripted_app, tiny_plan
from hypothesis import given, settings
from hypothesis import strategies as st

from consortium.checkpoints import checkpoint_path, load_checkpoint
from consortium.embedded import run_embedded
from consortium.ledger import verify
from consortium.plan import Plan
from consortium.privacy import allowed_norm, clip_update, epsilon, noise_std, update_norm
from consortium.server_app import RunSettings
from consortium.trunk import initial_trunk
from data_prep.errors import InputError


def _dp_plan(rounds=1, min_partners=3, sigma=2.0, clip=1.0, **fed):
    return tiny_plan(rounds=rounds, min_partners=min_partners, dp_enabled=True, dp_noise_multiplier=sigma,
                     dp_clipping_norm=clip, **fed)


def _run(tmp_path, plan, partners):
    settings = RunSettings(plan=plan, run_dir=tmp_path / "run", rounds=plan.federation.rounds, mode="embedded")
    return run_embedded(settings, scripted_app(partners), {n: {} for n in partners})


# ---- plan keys ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("key", "value", "message"), [
    ("dp_clipping_norm", 0.0, "dp_clipping_norm must be > 0"),
    ("dp_noise_multiplier", -1.0, "dp_noise_multiplier"),
    ("dp_delta", 1.0, "dp_delta must be in"),
    ("dp_delta", "1e-5", "dp_delta must be"),
    ("dp_enabled", "yes", "dp_enabled must be true or false"),
    ("dp_clipping_norm", math.inf, "finite"),
])
def test_plan_refuses_bad_dp_keys_naming_the_key(key, value, message):
    raw = tiny_plan().to_dict()
    raw["federation"][key] = value
    with pytest.raises(InputError, match=message):
        Plan.from_dict(raw, source="plan.toml")


def test_plan_refuses_dp_without_noise_and_dp_with_a_float16_wire():
    with pytest.raises(InputError, match="adds no noise"):
        tiny_plan(dp_enabled=True, dp_noise_multiplier=0.0)
    with pytest.raises(InputError, match="wire_dtype"):
        tiny_plan(dp_enabled=True, wire_dtype="float16")


def test_dp_plan_round_trips_through_toml(tmp_path):
    plan = _dp_plan(sigma=0.7, clip=0.25, dp_delta=1e-6)
    loaded = Plan.load(plan.save(tmp_path / "plan.toml"))
    assert loaded.federation == plan.federation and loaded.hash == plan.hash
    assert loaded.hash != tiny_plan().hash  # DP settings are part of what every partner agrees on


# ---- clipping -------------------------------------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), scale=st.floats(1e-4, 1e3), clip=st.floats(1e-3, 10.0))
def test_clip_update_bounds_every_update_and_keeps_small_ones(seed, scale, clip):
    rng = np.random.default_rng(seed)
    ref = [rng.normal(size=(37, 5)).astype(np.float32), rng.normal(size=5).astype(np.float32)]
    new = [r + np.float32(scale) * rng.normal(size=r.shape).astype(np.float32) for r in ref]
    out = clip_update(new, ref, clip)
    assert all(o.dtype == np.float32 and o.shape == r.shape for o, r in zip(out, ref, strict=True))
    before, after = update_norm(new, ref), update_norm(out, ref)
    assert after <= allowed_norm(clip, ref)  # what the server accepts
    if before <= clip * 0.999:
        assert after == pytest.approx(before, rel=1e-3)  # small updates pass unchanged
    else:
        assert after == pytest.approx(clip, rel=1e-3)  # large ones shrink to the bound, direction kept
        cos = sum(float(np.dot((o - r).ravel(), (n - r).ravel())) for o, n, r in zip(out, new, ref, strict=True))
        assert cos / (after * before) == pytest.approx(1.0, abs=1e-3)


def test_server_refuses_an_update_its_partner_did_not_clip(tmp_path):
    plan = _dp_plan(min_partners=2, sigma=1.0, clip=1.0)
    n_values = sum(a.size for a in initial_trunk(plan, 0).values())
    small = 0.5 / math.sqrt(n_values)  # update norm 0.5 <= C
    partners = {"A": (small, 10, ""), "B": (small, 10, ""), "M": (0.1, 10, "")}  # M: norm ~3 > C
    status, _ = _run(tmp_path, plan, partners)
    assert len(status["refused"]) == 1 and str(status["partners"]["M"]) in status["refused"][0]
    assert "dp_clipping_norm" in status["refused"][0]
    entry = verify(tmp_path / "run" / "ledger.jsonl")[0]
    assert len(entry.node_ids) == 2 and any("did not clip" in r for r in entry.refused)


# ---- noise scale ----------------------------------------------------------------------------------------------
def test_noise_has_the_configured_scale_sigma_c_max_weight(tmp_path):
    sigma, clip = 2.0, 1.0
    plan = _dp_plan(sigma=sigma, clip=clip)
    start = initial_trunk(plan, plan.training.seed)
    n_values = sum(a.size for a in start.values())
    off = 0.2 / math.sqrt(n_values)  # every update well inside C
    partners = {"A": (off, 10, ""), "B": (2 * off, 20, ""), "C": (3 * off, 30, "")}
    _run(tmp_path, plan, partners)
    final = load_checkpoint(checkpoint_path(tmp_path / "run", 1), plan)
    mean_offset = (off * 10 + 2 * off * 20 + 3 * off * 30) / 60
    noise = np.concatenate([(final[k].astype(np.float64) - start[k] - mean_offset).ravel() for k in start])
    expected = sigma * clip * 30 / 60  # max weight 1/2: not sigma * C / 3 (equal partners' formula)
    assert expected == noise_std(plan.federation, [10, 20, 30])
    se = expected / math.sqrt(2 * noise.size)  # standard error of a sample standard deviation
    assert abs(noise.std() - expected) < 5 * se, (noise.std(), expected)
    assert abs(noise.mean()) < 5 * expected / math.sqrt(noise.size)
    # Gaussian, not uniform or Laplace: excess kurtosis near 0 (uniform -1.2, Laplace +3).
    kurt = float(np.mean((noise - noise.mean()) ** 4) / noise.var() ** 2 - 3)
    assert abs(kurt) < 0.6


def test_noise_is_fresh_each_run_not_derived_from_public_seeds(tmp_path):
    plan = _dp_plan(sigma=1.0)
    partners = {"A": (0.0, 10, ""), "B": (0.0, 10, ""), "C": (0.0, 10, "")}
    _run(tmp_path / "a", plan, partners)
    _run(tmp_path / "b", plan, partners)
    a = load_checkpoint(checkpoint_path(tmp_path / "a" / "run", 1), plan)
    b = load_checkpoint(checkpoint_path(tmp_path / "b" / "run", 1), plan)
    assert not np.array_equal(a["input.weight"], b["input.weight"])


# ---- ε --------------------------------------------------------------------------------------------------------
def test_epsilon_grows_with_rounds_and_matches_the_accountant():
    from dp_accounting import dp_event
    from dp_accounting.pld import pld_privacy_accountant
    from dp_accounting.rdp import rdp_privacy_accountant

    eps = [epsilon(1.0, r, 1e-5) for r in range(1, 11)]
    assert all(b > a for a, b in zip(eps, eps[1:], strict=False))
    assert epsilon(1.0, 0, 1e-5) == 0.0 and epsilon(4.0, 10, 1e-5) < eps[-1]  # more noise, less ε
    for rounds in (1, 10):
        rdp = rdp_privacy_accountant.RdpAccountant()
        rdp.compose(dp_event.SelfComposedDpEvent(dp_event.GaussianDpEvent(1.0), rounds))
        assert epsilon(1.0, rounds, 1e-5) == pytest.approx(rdp.get_epsilon(1e-5))
        # An independent, tighter accountant (privacy loss distributions): RDP is an upper bound, and close.
        pld = pld_privacy_accountant.PLDAccountant()
        pld.compose(dp_event.SelfComposedDpEvent(dp_event.GaussianDpEvent(1.0), rounds))
        assert pld.get_epsilon(1e-5) <= epsilon(1.0, rounds, 1e-5) <= 1.2 * pld.get_epsilon(1e-5)


def test_ledger_and_status_carry_epsilon_per_round(tmp_path):
    plan = _dp_plan(rounds=3, sigma=1.5, dp_delta=1e-6)
    partners = {"A": (0.0, 10, ""), "B": (0.0, 20, ""), "C": (0.0, 30, "")}
    _run(tmp_path, plan, partners)
    entries = verify(tmp_path / "run" / "ledger.jsonl")
    assert [e.dp_epsilon for e in entries] == pytest.approx([epsilon(1.5, r, 1e-6) for r in (1, 2, 3)])
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["dp"]["epsilon"] == pytest.approx(entries[-1].dp_epsilon)
    assert status["dp"]["delta"] == 1e-6 and status["dp"]["noise_std"] == pytest.approx(1.5 * 30 / 60)


def test_ledger_without_dp_has_no_epsilon_field(tmp_path):
    plan = tiny_plan(rounds=1)
    _run(tmp_path, plan, {"A": (0.0, 10, ""), "B": (0.0, 20, ""), "C": (0.0, 30, "")})
    line = (tmp_path / "run" / "ledger.jsonl").read_text().splitlines()[0]
    assert "dp_epsilon" not in line and verify(tmp_path / "run" / "ledger.jsonl")[0].dp_epsilon is None
