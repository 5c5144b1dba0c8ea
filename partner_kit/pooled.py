"""The privacy-free upper bound: one centralized model over every partner's rows, each partner keeping its heads.

This is the model that per-step federation approximates: the same plan and trunk, all partners' rows in one
training set, each partner's tasks its own output columns (block-diagonal labels, partner-prefixed assay ids),
early-stopped on the pooled validation fold. Each partner then gets a model directory of its own — the pooled
trunk with its slice of the heads — scored on its own test fold exactly like its single-partner and federated
models. Only `consortium simulate --pooled` builds it: in a real consortium no one may hold all partners' data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from consortium.plan import Plan
from data_prep.errors import InputError
from data_prep.prepared import PreparedData
from partner_kit.batching import CsrBatcher
from partner_kit.model import MultitaskModel, build_model
from partner_kit.model_outputs import write_model_outputs
from partner_kit.training import LocalTrainer, evaluate_rows, train_early_stopping
from partner_kit.weights import save_model


@dataclass(frozen=True)
class PartnerSlice:
    """Where one partner's rows and task columns sit in the pooled data."""

    rows: slice
    class_cols: np.ndarray
    regr_cols: np.ndarray


def pool(datas: dict[str, PreparedData]) -> tuple[PreparedData, dict[str, PartnerSlice]]:
    """Stack partners' rows; labels block-diagonal, so each partner's tasks stay its own columns."""
    if not datas:
        raise InputError("pooling needs at least one partner")
    sizes = {d.n_features for d in datas.values()}
    hashes = {d.manifest.get("plan_hash") for d in datas.values()}
    if len(sizes) != 1 or len(hashes) != 1:
        raise InputError("partners were prepared under different plans; pool only data prepared with one plan")
    slices: dict[str, PartnerSlice] = {}
    tasks, row0, c0, r0 = [], 0, 0, 0
    for name, d in datas.items():
        n_c, n_r = len(d.class_tasks), len(d.regr_tasks)
        slices[name] = PartnerSlice(rows=slice(row0, row0 + d.n_rows), class_cols=np.arange(c0, c0 + n_c),
                                    regr_cols=np.arange(r0, r0 + n_r))
        t = pd.concat([d.class_tasks, d.regr_tasks], ignore_index=True).copy()
        t["input_assay_id"] = [f"{name}:{a}" for a in t["input_assay_id"]]
        tasks.append(t)
        row0, c0, r0 = row0 + d.n_rows, c0 + n_c, r0 + n_r
    class_tasks = pd.concat([t[t["kind"] == "classification"] for t in tasks], ignore_index=True)
    regr_tasks = pd.concat([t[t["kind"] == "regression"] for t in tasks], ignore_index=True)
    all_tasks = pd.concat([class_tasks, regr_tasks], ignore_index=True)
    all_tasks["task_index"] = np.arange(len(all_tasks), dtype=all_tasks["task_index"].dtype)

    def block(name: str, dtype: type) -> sp.csr_matrix:
        return sp.block_diag([getattr(d, name) for d in datas.values()], format="csr", dtype=dtype)

    first = next(iter(datas.values()))
    pooled = PreparedData(
        x=sp.vstack([d.x for d in datas.values()], format="csr", dtype=np.float32),
        folds=np.concatenate([np.asarray(d.folds) for d in datas.values()]),
        y_class=block("y_class", np.float32), y_regr=block("y_regr", np.float32),
        y_censor=block("y_censor", np.int8), tasks=all_tasks,
        manifest={"plan_hash": first.manifest.get("plan_hash"), "pooled_from": list(datas)},
    )
    return pooled, slices


def partner_model(plan: Plan, pooled_model: MultitaskModel, data: PreparedData, part: PartnerSlice) -> MultitaskModel:
    """The pooled trunk with this partner's slice of the heads: a model of the partner's own tasks."""
    with torch.random.fork_rng():
        model = build_model(plan, data.tasks)
    model.trunk.load_state_dict(pooled_model.trunk.state_dict())
    src, dst = pooled_model.heads, model.heads
    with torch.no_grad():
        for layer, cols in (("classification", part.class_cols), ("regression", part.regr_cols)):
            if getattr(dst, layer) is not None:
                idx = torch.as_tensor(cols, dtype=torch.long)
                getattr(dst, layer).weight.copy_(getattr(src, layer).weight.index_select(0, idx))
                getattr(dst, layer).bias.copy_(getattr(src, layer).bias.index_select(0, idx))
        if dst.n_regr:
            idx = torch.as_tensor(part.regr_cols, dtype=torch.long)
            dst.regr_mean.copy_(src.regr_mean.index_select(0, idx))
            dst.regr_std.copy_(src.regr_std.index_select(0, idx))
    model.eval()
    return model


def train_pooled(plan: Plan, datas: dict[str, PreparedData], out_dirs: dict[str, Path], *, seed: int | None = None,
                 valid_fold: int = 1, test_fold: int = 0, progress: bool = False) -> dict[str, dict[str, Any]]:
    """Train the pooled model once; write one model directory per partner; return each partner's metrics."""
    pooled, slices = pool(datas)
    trainer = LocalTrainer(plan, pooled, valid_fold=valid_fold, test_fold=test_fold, seed=seed,
                           source="pooled partners")
    run = train_early_stopping(trainer, plan.training.max_epochs, plan.training.patience, progress=progress)
    results = {}
    for name, data in datas.items():
        model = partner_model(plan, trainer.model, data, slices[name])
        batcher = CsrBatcher(data)
        rows = {f: np.flatnonzero(np.asarray(data.folds) == f) for f in (valid_fold, test_fold)}
        valid = evaluate_rows(model, batcher, data, rows[valid_fold], plan)
        test = evaluate_rows(model, batcher, data, rows[test_fold], plan)
        metrics = {
            "pooled": True, "partners": list(datas), "best_epoch": run["best_epoch"],
            "epochs_run": len(run["history"]), "selection_metric": run["selection_metric"],
            "selection_note": "early stopping on the pooled validation fold (all partners' tasks)",
            "valid_fold": valid_fold, "test_fold": test_fold, "n_train_pooled": trainer.n_train,
            "valid": valid.aggregate, "test": test.aggregate, "test_per_task": test.to_dict()["per_task"],
            "history": run["history"],
        }
        save_model(out_dirs[name], model, plan=plan, tasks=data.tasks, metrics=metrics,
                   extra={"pooled": True, "seed": trainer.seed, "partners": list(datas),
                          "valid_fold": valid_fold, "test_fold": test_fold, "best_epoch": run["best_epoch"]})
        write_model_outputs(out_dirs[name], model, batcher, data, rows[valid_fold], rows[test_fold])
        results[name] = metrics
    return results
