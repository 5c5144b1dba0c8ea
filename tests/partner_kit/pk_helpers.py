"""Helpers for partner_kit tests: small plans and synthetic prepared datasets with learnable labels.

Synthetic data stands in for `data-prep prepare` output in unit tests; end-to-end tests use the shared consortia
(the `shared_data` fixture of tests/conftest.py, which skips when ../shared is absent).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import scipy.sparse as sp

from consortium.plan import Plan, TrainingSpec, TrunkSpec
from data_prep.config import FingerprintConfig, PrepConfig
from data_prep.prepared import PreparedData


def small_plan(n_features: int = 256, hidden: tuple[int, ...] = (32, 16), **training) -> Plan:
    """A complete plan with a tiny trunk, quick training settings, and the given fingerprint size."""
    spec = dict(batch_fraction=0.1, min_batch_size=16, max_batch_size=128, max_epochs=6, patience=3, seed=7)
    spec.update(training)
    return Plan(
        name="test",
        data=PrepConfig(fingerprint=FingerprintConfig(size=n_features)),
        trunk=TrunkSpec(hidden_sizes=list(hidden), dropout=0.1),
        training=TrainingSpec(**spec),
    )


def make_tasks(n_class: int, n_regr: int) -> pd.DataFrame:
    kinds = ["classification"] * n_class + ["regression"] * n_regr
    return pd.DataFrame({
        "task_index": np.arange(n_class + n_regr),
        "kind": kinds,
        "input_assay_id": [str(100 + i) for i in range(n_class + n_regr)],
        "threshold": [6.0] * n_class + [np.nan] * n_regr,
        "direction": ["high"] * (n_class + n_regr),
        "training_weight": np.ones(n_class + n_regr),
        "aggregation_weight": np.ones(n_class + n_regr),
        "censored_weight": np.ones(n_class + n_regr),
    })


def synthetic_data(plan: Plan, n_rows: int = 500, n_class: int = 4, n_regr: int = 2, density: float = 0.08,
                   label_density: float = 0.6, seed: int = 0) -> PreparedData:
    """Random binary fingerprints; labels from a hidden linear model so a network can learn them."""
    rng = np.random.default_rng(seed)
    n_features = plan.n_features
    x = sp.random(n_rows, n_features, density=density, format="csr", dtype=np.float32, random_state=rng)
    x.data[:] = 1.0
    w = rng.normal(size=(n_features, n_class + n_regr)).astype(np.float32)
    score = np.asarray(x @ w)
    score = (score - score.mean(0)) / score.std(0)
    known = rng.random((n_rows, n_class + n_regr)) < label_density
    cls = np.where(score[:, :n_class] > 0.3, 1.0, -1.0) * known[:, :n_class]
    regr_values = 6.0 + score[:, n_class:] + 0.1 * rng.normal(size=(n_rows, n_regr))
    regr_known = known[:, n_class:]
    censor = np.zeros((n_rows, n_regr), np.int8)
    flip = rng.random((n_rows, n_regr))
    censor[(flip < 0.1) & regr_known] = -1
    censor[(flip > 0.9) & regr_known] = 1
    rr, cc = np.nonzero(regr_known)
    y_regr = sp.csr_matrix((regr_values[rr, cc].astype(np.float32), (rr, cc)), shape=(n_rows, n_regr))
    y_censor = sp.csr_matrix((censor[rr, cc], (rr, cc)), shape=(n_rows, n_regr), dtype=np.int8)
    return PreparedData(
        x=x,
        folds=(np.arange(n_rows) % plan.data.folds.n_folds).astype(np.int8),
        y_class=sp.csr_matrix(cls.astype(np.float32)),
        y_regr=y_regr,
        y_censor=y_censor,
        tasks=make_tasks(n_class, n_regr),
        manifest={"plan_hash": plan.hash},
    )


def replace_training(plan: Plan, **kw) -> Plan:
    return dataclasses.replace(plan, training=dataclasses.replace(plan.training, **kw))
