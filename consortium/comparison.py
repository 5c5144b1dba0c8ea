"""Load what a comparison needs from files only: model directories' test predictions, tasks and histories.

The input is either a `consortium simulate` run directory (`comparison.json` lists every model directory by
seed, partner and variant) or a handful of model directories of one partner (`partner-kit compare`). Nothing
here imports model code: the files are the contract (model.json, metrics.json, test_predictions.parquet).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from consortium.stats import VARIANTS, Quorum, TaskPanel, build_panel, merge_panels
from data_prep.errors import InputError

COMPARISON_JSON = "comparison.json"
TEST_PREDICTIONS = "test_predictions.parquet"
PREDICTION_COLUMNS = ("row", "task_index", "kind", "y", "censor", "pred")


@dataclass
class ModelRun:
    """One finished model: who, which variant, which seed, and what its training recorded."""

    partner: str
    variant: str
    seed: int
    dir: Path
    info: dict[str, Any]
    metrics: dict[str, Any]
    test_fold: int = 0

    @property
    def history(self) -> list[dict[str, Any]]:
        return list(self.metrics.get("history") or [])

    @property
    def selected(self) -> int | None:
        """The epoch (single, pooled) or round (federated) whose model was kept."""
        for key in ("best_round", "best_epoch"):
            if self.metrics.get(key) is not None:
                return int(self.metrics[key])
        return None


@dataclass
class Comparison:
    """Everything the statistics and the report read: meta data, one task panel and the model runs per partner."""

    meta: dict[str, Any]
    panels: dict[str, TaskPanel]
    runs: list[ModelRun] = field(default_factory=list)
    source: str = ""

    @property
    def seeds(self) -> list[int]:
        return sorted({r.seed for r in self.runs})

    @property
    def variants(self) -> list[str]:
        present = {r.variant for r in self.runs}
        return [v for v in VARIANTS if v in present]


def _read_json(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise InputError(f"{path} not found: {what}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path} is not valid JSON ({exc}); was it truncated? rerun the step that writes it") from None


def _read_model(partner: str, variant: str, seed: int, model_dir: Path,
                test_fold: int = 0) -> tuple[ModelRun, pd.DataFrame]:
    if not model_dir.is_dir():
        raise InputError(f"model directory {model_dir} ({variant}, partner {partner}, seed {seed}) not found")
    info = _read_json(model_dir / "model.json", "is this a finished model directory?")
    metrics = _read_json(model_dir / "metrics.json", "is this a finished model directory?")
    path = model_dir / TEST_PREDICTIONS
    if not path.is_file():
        raise InputError(f"{path} not found: the model was written without its test predictions (an older "
                         "version); retrain it, or rerun `consortium simulate`, to compare it")
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises its own types for a damaged file
        raise InputError(f"{path} is not a readable Parquet file ({exc})") from None
    missing = [c for c in PREDICTION_COLUMNS if c not in frame.columns]
    if missing:
        raise InputError(f"{path} lacks column(s) {missing}; expected {list(PREDICTION_COLUMNS)}")
    try:
        pred = frame["pred"].to_numpy(dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{path}: column 'pred' is not numeric") from None
    bad = ~np.isfinite(pred)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(f"{path} row {i}: prediction {pred[i]!r} is not a finite number; the model diverged or "
                         "the file was edited")
    return ModelRun(partner, variant, int(seed), model_dir, info, metrics, int(test_fold)), frame


def _assemble(entries: list[tuple[str, str, int, Path, int]], meta: dict[str, Any], source: str) -> Comparison:
    """Entries are (partner, variant, seed, model dir, test fold); one panel per partner, its test folds merged."""
    runs: list[ModelRun] = []
    frames: dict[str, dict[int, dict[tuple[str, int], pd.DataFrame]]] = {}
    for partner, variant, seed, model_dir, fold in entries:
        if variant not in VARIANTS:
            raise InputError(f"{source}: model {model_dir} has variant '{variant}'; expected one of {list(VARIANTS)}")
        key = (variant, int(seed))
        if key in frames.get(partner, {}).get(fold, {}):
            raise InputError(f"{source}: partner {partner} lists two {variant} models for seed {seed}, "
                             f"test fold {fold}")
        run, frame = _read_model(partner, variant, seed, model_dir, fold)
        runs.append(run)
        frames.setdefault(partner, {}).setdefault(fold, {})[key] = frame
    hashes = {r.info.get("plan_hash") for r in runs}
    if len(hashes) > 1:
        first, other = runs[0], next(r for r in runs if r.info.get("plan_hash") != runs[0].info.get("plan_hash"))
        raise InputError(f"{first.dir} and {other.dir} were trained with different plans "
                         f"({str(first.info.get('plan_hash'))[:16]}… vs {str(other.info.get('plan_hash'))[:16]}…); "
                         "compare models of one plan")
    panels = {}
    partner_meta = meta.get("partners", {})
    for partner, by_fold in frames.items():
        variants = {v for keys in by_fold.values() for v, _ in keys}
        if "single" not in variants:
            raise InputError(f"{source}: partner {partner} has no single-partner model; every comparison is "
                             "against the single-partner baseline")
        if len(variants) < 2:
            raise InputError(f"{source}: partner {partner} has only {next(iter(variants))} models; nothing to compare")
        run = next(r for r in runs if r.partner == partner and r.variant == "single")
        tasks = pd.DataFrame.from_records(run.info.get("tasks") or [])
        if tasks.empty or "task_index" not in tasks:
            raise InputError(f"{run.dir / 'model.json'} has no task table ('tasks'); is it a finished model?")
        types = {str(a): str(t) for a, t in zip(tasks["input_assay_id"], tasks.get(
            "assay_type", pd.Series([None] * len(tasks))), strict=True) if t is not None and pd.notna(t)}
        types.update({str(k): str(v) for k, v in (partner_meta.get(partner, {}).get("assay_types") or {}).items()
                      if v is not None})
        quorum = Quorum.from_plan(run.info.get("plan") or {})
        try:
            per_fold = [build_panel(partner, tasks, by_key, quorum, types, test_fold=fold)
                        for fold, by_key in sorted(by_fold.items())]
            panels[partner] = per_fold[0] if len(per_fold) == 1 else merge_panels(per_fold)
        except ValueError as exc:
            raise InputError(f"partner {partner}: {exc}") from None
    return Comparison(meta=meta, panels=panels, runs=runs, source=source)


def load_comparison(run_dir: str | Path) -> Comparison:
    """Read a `consortium simulate` run directory: comparison.json and every model directory it lists."""
    run_dir = Path(run_dir)
    meta = _read_json(run_dir / COMPARISON_JSON, "is it the --out directory of `consortium simulate`?")
    models = meta.get("models")
    if not isinstance(models, list) or not models:
        raise InputError(f"{run_dir / COMPARISON_JSON} lists no models ('models' is empty or missing)")
    entries = []
    for i, m in enumerate(models):
        try:
            entries.append((str(m["partner"]), str(m["variant"]), int(m["seed"]), run_dir / str(m["dir"]),
                            int(m.get("test_fold", 0))))
        except (KeyError, TypeError, ValueError):
            raise InputError(f"{run_dir / COMPARISON_JSON}: models[{i}] needs partner, variant, seed and dir; "
                             f"got {m!r}") from None
    return _assemble(entries, meta, str(run_dir / COMPARISON_JSON))


def comparison_from_models(models: dict[str, Path], partner: str = "partner") -> Comparison:
    """One partner's comparison from model directories keyed by variant (`partner-kit compare`), seed as trained."""
    entries: list[tuple[str, str, int, Path, int]] = []
    first_metrics: dict[str, Any] = {}
    plan_hash, plan_name = None, None
    for variant, model_dir in models.items():
        model_dir = Path(model_dir)
        info = _read_json(model_dir / "model.json", "is this a finished model directory?")
        entries.append((partner, variant, 0, model_dir, 0))
        first_metrics = first_metrics or _read_json(model_dir / "metrics.json", "is this a finished model directory?")
        if variant == "single":
            plan_hash, plan_name = info.get("plan_hash"), (info.get("plan") or {}).get("name")
    meta = {"plan_hash": plan_hash, "plan_name": plan_name, "test_fold": first_metrics.get("test_fold"),
            "valid_fold": first_metrics.get("valid_fold"), "seeds": [0],
            "selection": "each model as its own training selected it on the validation fold "
                         "(metrics.json: best epoch or best round)",
            "partners": {partner: {"models": {v: str(Path(d).resolve()) for v, d in models.items()}}}}
    return _assemble(entries, meta, "the given model directories")
