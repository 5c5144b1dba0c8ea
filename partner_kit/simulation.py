"""The partners' side of `consortium simulate`: prepare (cached) input directories, train baselines, read results.

In a real consortium each partner does these on its own machine; the embedded simulation plays every
partner in one process, so it needs them in one place.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from consortium.plan import Plan
from data_prep.errors import InputError
from data_prep.key import key_check_hash, load_key
from data_prep.prepared import PreparedData
from partner_kit.training import fit
from partner_kit.weights import METRICS_JSON


def is_prepared(path: Path) -> bool:
    return (Path(path) / "manifest.json").is_file()


def _cache_valid(out: Path, plan: Plan, key: bytes, input_dir: Path) -> bool:
    from data_prep.io import file_sha256

    if not is_prepared(out):
        return False
    m = json.loads((out / "manifest.json").read_text())
    if m.get("plan_hash") != plan.hash or m.get("key_check_hash") != key_check_hash(key):
        return False
    for info in m.get("inputs", {}).values():
        f = input_dir / info.get("file", "")
        if not f.is_file() or file_sha256(f) != info.get("sha256"):
            return False
    return True


def prepared_dir_for(partner_dir: Path, plan: Plan, plan_path: Path, key_path: Path | None, out: Path,
                     progress: bool = True) -> tuple[Path, bool]:
    """A prepared directory for `partner_dir`: itself if prepared, else `out` (re)made from its T0/T1/T2 files
    unless `out` already holds a preparation of the same files under the same plan and key.
    Returns (directory, whether it was prepared now)."""
    partner_dir = Path(partner_dir)
    if is_prepared(partner_dir):
        return partner_dir, False
    if not partner_dir.is_dir():
        raise InputError(f"partner directory {partner_dir} not found")
    if key_path is None:
        raise InputError(f"{partner_dir} holds input files, not a prepared directory; pass --key to prepare it")
    key = load_key(key_path)
    if _cache_valid(out, plan, key, partner_dir):
        return out, False
    from data_prep.prepare import prepare

    prepare(plan_path, key_path, partner_dir, out, progress=progress)
    return out, True


def cached_metrics(model_dir: Path, plan: Plan, seed: int, **expected: Any) -> dict[str, Any] | None:
    """The metrics of a model already trained in `model_dir` under this plan and seed (and `expected` model.json
    entries), so a rerun reuses it; None when it has to be trained."""
    info_path, metrics_path = Path(model_dir) / "model.json", Path(model_dir) / METRICS_JSON
    if not (info_path.is_file() and metrics_path.is_file()):
        return None
    info = json.loads(info_path.read_text())
    if info.get("plan_hash") != plan.hash or info.get("seed") != seed:
        return None
    if any(info.get(k) != v for k, v in expected.items()):
        return None
    return json.loads(metrics_path.read_text())


def train_baseline(plan: Plan, prepared: Path, out: Path, *, seed: int | None = None, progress: bool = True,
                   valid_fold: int = 1, test_fold: int = 0) -> dict[str, Any]:
    """The single-partner baseline with the plan's training settings (cached in `out/metrics.json`)."""
    cached = cached_metrics(out, plan, plan.training.seed if seed is None else seed, valid_fold=valid_fold,
                            test_fold=test_fold)
    if cached is not None:
        return cached
    data = PreparedData.load(prepared)
    return fit(plan, data, out, valid_fold=valid_fold, test_fold=test_fold, seed=seed, progress=progress,
               source=str(prepared))


def read_metrics(model_dir: Path) -> dict[str, Any]:
    path = Path(model_dir) / METRICS_JSON
    if not path.is_file():
        raise InputError(f"{model_dir} has no {METRICS_JSON}; the run did not finish for this partner")
    return json.loads(path.read_text())


def train_pooled_cached(plan: Plan, prepared: dict[str, Path], out_dirs: dict[str, Path], *, seed: int,
                        progress: bool = True, valid_fold: int = 1, test_fold: int = 0) -> dict[str, dict[str, Any]]:
    """The pooled upper bound (see `partner_kit.pooled`), reused when every partner's pooled model is current."""
    from partner_kit.pooled import train_pooled

    cached = {name: cached_metrics(out, plan, seed, partners=list(prepared), valid_fold=valid_fold,
                                   test_fold=test_fold) for name, out in out_dirs.items()}
    found = {name: m for name, m in cached.items() if m is not None}
    if len(found) == len(out_dirs):
        return found
    datas = {name: PreparedData.load(p) for name, p in prepared.items()}
    return train_pooled(plan, datas, out_dirs, seed=seed, progress=progress, valid_fold=valid_fold,
                        test_fold=test_fold)
