"""Differential privacy of the trunk updates: partner-side clipping, server-side Gaussian noise, ε accounting.

The scheme is Flower's central DP with client-side fixed clipping (`DifferentialPrivacyClientSideFixedClipping`
+ `fixedclipping_mod`), run on this project's own round path: Flower's wrapper drops a round with any failure
(a refused reply is one), adds its noise after the strategy's `aggregate_fit` returned (so our checkpoint and
ledger would record the trunk before the noise), and its mod expects one config record (a SecAgg+ train
message has two). Clipping happens at the partner because under SecAgg+ the server never holds one update to
clip; the server adds the noise to the (securely) summed mean, so it works with and without SecAgg+.

Each round is one Gaussian mechanism on the example-weighted mean of clipped updates. With public weights
w_i = n_i / Σn, adding or removing one partner moves the mean by at most max_i w_i · C, so the noise standard
deviation is σ · C · max_i w_i (= σ·C/n, Flower's `compute_stdv`, when the partners are equal). Composed over
every round (all partners take part in every round, no subsampling) with the RDP accountant of
`dp-accounting`, reported as ε at the plan's δ. This is **partner-level** DP: it bounds what the trunk reveals
about whether a whole partner took part, against other partners and anyone who later holds the trunk; the
operator, who adds the noise, sees the un-noised mean (under SecAgg+ only the mean, never one update).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from consortium.plan import FederationSpec

#: Clipping is done in float32 at the partner; the server's norm check allows this much relative rounding
#: on C, plus float32 rounding of the trunk values themselves (`allowed_norm`).
CLIP_TOLERANCE = 1e-4
_CHUNK = 1 << 20


def _sq_norm(values: np.ndarray) -> float:
    """Σ x² accumulated in float64, one chunk at a time (no float64 copy of a 64 M-value trunk)."""
    flat = values.ravel()
    return float(sum(np.dot(c, c) for c in (flat[i:i + _CHUNK].astype(np.float64)
                                          for i in range(0, flat.size, _CHUNK))))


def update_norm(new: Sequence[np.ndarray], ref: Sequence[np.ndarray]) -> float:
    """L2 norm of (new − ref) over all arrays."""
    return math.sqrt(sum(_sq_norm(np.asarray(a, dtype=np.float32) - np.asarray(b, dtype=np.float32))
                         for a, b in zip(new, ref, strict=True)))


def allowed_norm(clipping_norm: float, ref: Sequence[np.ndarray]) -> float:
    """The largest update norm the server accepts from a clipping partner: C plus float32 rounding slack."""
    ref_norm = math.sqrt(sum(_sq_norm(np.asarray(b, dtype=np.float32)) for b in ref))
    return clipping_norm * (1 + CLIP_TOLERANCE) + 2.0 ** -22 * ref_norm


def clip_update(new: Sequence[np.ndarray], ref: Sequence[np.ndarray], clipping_norm: float) -> list[np.ndarray]:
    """ref + (new − ref) scaled to L2 norm at most `clipping_norm` (Flower's FlatClip), float32."""
    norm = update_norm(new, ref)
    scale = np.float32(min(1.0, clipping_norm * (1 - CLIP_TOLERANCE / 10) / norm) if norm > 0 else 1.0)
    out = []
    for a, b in zip(new, ref, strict=True):
        b32 = np.asarray(b, dtype=np.float32)
        out.append(b32 + scale * (np.asarray(a, dtype=np.float32) - b32))
    return out


def noise_std(fed: FederationSpec, examples: Sequence[int]) -> float:
    """σ · C · max_i w_i: the Gaussian noise per trunk value that makes one round (σ)-Gaussian-DP per partner."""
    total = float(sum(examples))
    if total <= 0:
        raise ValueError(f"example counts must be positive, got {list(examples)}")
    return fed.dp_noise_multiplier * fed.dp_clipping_norm * max(examples) / total


def add_noise(arrays: Sequence[np.ndarray], std: float, rng: np.random.Generator | None = None) -> list[np.ndarray]:
    """arrays + N(0, std²) per value, float32 (noise drawn in float32: no float64 copy of the trunk).

    The generator is seeded from the operating system by default: noise a partner could recompute would
    protect nothing against that partner.
    """
    rng = rng if rng is not None else np.random.default_rng()
    return [np.asarray(a, dtype=np.float32) + np.float32(std) * rng.standard_normal(np.shape(a), dtype=np.float32)
            for a in arrays]


def epsilon(noise_multiplier: float, rounds: int, delta: float) -> float:
    """Cumulative ε at `delta` after `rounds` Gaussian rounds of noise multiplier σ (RDP accountant).

    Every partner is in every round (no subsampling amplification). σ = 0 is no privacy: ε = inf.
    """
    if rounds <= 0:
        return 0.0
    if noise_multiplier <= 0:
        return math.inf
    from dp_accounting import dp_event  # heavy import (absl, scipy): only on a DP run
    from dp_accounting.rdp import rdp_privacy_accountant

    accountant = rdp_privacy_accountant.RdpAccountant()
    accountant.compose(dp_event.SelfComposedDpEvent(dp_event.GaussianDpEvent(noise_multiplier), int(rounds)))
    return float(accountant.get_epsilon(delta))
