"""Model directories and weight files: safetensors only (never pickle), JSON metadata, atomic writes.

A model directory holds
  trunk.safetensors            the shared trunk (names/shapes as `consortium.plan.trunk_shapes`)
  heads.safetensors            the private heads (+ regression standardization buffers)
  heads_optimizer.safetensors  head optimizer moments (only written by `save_private_state`, for federation)
  model.json                   plan (and its hash), task table, training settings, seed, versions
  metrics.json                 validation/test metrics of the saved model
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import safetensors.numpy
import safetensors.torch
import torch

from consortium.plan import Plan, trunk_shapes
from data_prep.atomic import write_atomic, write_text_atomic
from data_prep.errors import InputError
from data_prep.jsonsafe import json_safe
from partner_kit.model import MultitaskModel, build_model, task_counts

if TYPE_CHECKING:
    from data_prep.prepared import PreparedData
    from partner_kit.training import LocalTrainer

TRUNK_FILE = "trunk.safetensors"
HEADS_FILE = "heads.safetensors"
HEADS_OPTIMIZER_FILE = "heads_optimizer.safetensors"
TRUNK_OPTIMIZER_FILE = "trunk_optimizer.safetensors"  # private round state, never sent
MODEL_JSON = "model.json"
METRICS_JSON = "metrics.json"
FORMAT_VERSION = 1


# ---- plain safetensors files -------------------------------------------------------------------------------
def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
    """Atomically write named tensors (detached, contiguous CPU copies) to a safetensors file."""
    clean = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    return write_atomic(path, lambda p: safetensors.torch.save_file(clean, str(p), metadata=metadata))


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"weight file {path} not found")
    try:
        return safetensors.torch.load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise InputError(f"{path} is not a readable safetensors file ({exc})") from None


def write_trunk(path: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write trunk arrays (float32) as safetensors, e.g. a federated trunk for `train --init-trunk`."""
    clean = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in arrays.items()}
    return write_atomic(path, lambda p: safetensors.numpy.save_file(clean, str(p)))


def read_trunk(path: str | Path, plan: Plan | None = None) -> dict[str, np.ndarray]:
    """Read trunk arrays; with a plan, check names and shapes against `trunk_shapes(plan)`."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"trunk file {path} not found")
    try:
        arrays = safetensors.numpy.load_file(str(path))
    except Exception as exc:
        raise InputError(f"{path} is not a readable safetensors file ({exc})") from None
    if plan is not None:
        check_trunk_arrays(arrays, plan, source=str(path))
    return arrays


def check_trunk_arrays(arrays: dict[str, Any], plan: Plan, source: str = "trunk") -> None:
    """InputError naming the first difference between `arrays` and the plan's trunk layout."""
    expected = trunk_shapes(plan)
    missing = sorted(set(expected) - set(arrays))
    extra = sorted(set(arrays) - set(expected))
    if missing or extra:
        raise InputError(f"{source}: trunk arrays do not match the plan (missing {missing}, unexpected {extra}); "
                         "was it made with another plan?")
    for name, shape in expected.items():
        got = tuple(arrays[name].shape)
        if got != shape:
            raise InputError(f"{source}: trunk array '{name}' has shape {got}, the plan needs {shape}; "
                             "was it made with another plan (fingerprint size, hidden sizes)?")


# ---- model directories -------------------------------------------------------------------------------------
def _versions() -> dict[str, str]:
    from partner_kit import __version__

    return {"partner_kit": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def task_records(tasks: pd.DataFrame) -> list[dict[str, Any]]:
    return json_safe(tasks.astype(object).where(tasks.notna(), None).to_dict(orient="records"))


def save_model(model_dir: str | Path, trainer_or_model: LocalTrainer | MultitaskModel, *, plan: Plan,
               tasks: pd.DataFrame, metrics: dict[str, Any] | None = None,
               extra: dict[str, Any] | None = None) -> Path:
    """Write trunk, heads, model.json and metrics.json into `model_dir` (each file atomically)."""
    model = trainer_or_model if isinstance(trainer_or_model, MultitaskModel) else trainer_or_model.model
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    save_tensors(model_dir / TRUNK_FILE, model.trunk.state_dict(), {"plan_hash": plan.hash})
    save_tensors(model_dir / HEADS_FILE, model.heads.state_dict(), {"plan_hash": plan.hash})
    n_class, n_regr = task_counts(tasks)
    info = {
        "format_version": FORMAT_VERSION,
        "plan_hash": plan.hash,
        "plan": plan.to_dict(),
        "n_features": plan.n_features,
        "n_class_tasks": n_class,
        "n_regr_tasks": n_regr,
        "tasks": task_records(tasks),
        "training": json_safe(dict(plan.training.__dict__)),
        "versions": _versions(),
        **json_safe(extra or {}),
    }
    write_text_atomic(model_dir / METRICS_JSON, json.dumps(json_safe(metrics or {}), indent=2) + "\n")
    write_text_atomic(model_dir / MODEL_JSON, json.dumps(info, indent=2) + "\n")
    return model_dir


def read_model_json(model_dir: str | Path) -> dict[str, Any]:
    model_dir = Path(model_dir)
    path = model_dir / MODEL_JSON
    if not path.is_file():
        raise InputError(f"{model_dir} is not a model directory (no {MODEL_JSON}); "
                         f"create one with `partner-kit train --out {model_dir}`")
    return json.loads(path.read_text())


def load_model(model_dir: str | Path, plan: Plan | None = None) -> tuple[MultitaskModel, dict[str, Any]]:
    """Rebuild the model saved in `model_dir` (eval mode). A given plan must have the model's plan hash."""
    model, info, _ = load_model_and_plan(model_dir, plan)
    return model, info


def load_model_and_plan(model_dir: str | Path,
                        plan: Plan | None = None) -> tuple[MultitaskModel, dict[str, Any], Plan]:
    """`load_model`, also returning the plan it built the model with (the saved one unless `plan` is given),
    for callers that need both without reading model.json or parsing its plan a second time."""
    model_dir = Path(model_dir)
    info = read_model_json(model_dir)
    if plan is None:
        plan = Plan.from_dict(info["plan"], source=str(model_dir / MODEL_JSON), saved=True)
    elif plan.hash != info["plan_hash"]:
        raise InputError(f"plan hash {plan.hash[:16]}… differs from the model's plan hash "
                         f"{info['plan_hash'][:16]}… ({model_dir / MODEL_JSON}); use the plan the model was "
                         "trained with")
    tasks = pd.DataFrame.from_records(info["tasks"])
    model = build_model(plan, tasks)
    trunk = load_tensors(model_dir / TRUNK_FILE)
    check_trunk_arrays(trunk, plan, source=str(model_dir / TRUNK_FILE))
    model.trunk.load_state_dict(trunk)
    load_heads(model, model_dir / HEADS_FILE)
    model.eval()
    return model, info, plan


def load_heads(model: MultitaskModel, path: Path) -> None:
    """Load head weights, refusing a file made for another task list."""
    tensors = load_tensors(path)
    own = model.heads.state_dict()
    mismatch = sorted(k for k in set(own) | set(tensors)
                      if k not in own or k not in tensors or own[k].shape != tensors[k].shape)
    if mismatch:
        got = {k: tuple(tensors[k].shape) for k in mismatch if k in tensors}
        want = {k: tuple(own[k].shape) for k in mismatch if k in own}
        raise InputError(f"{path}: heads do not fit this partner's tasks (file {got}, tasks need {want}); "
                         "were they trained on another prepared directory?")
    model.heads.load_state_dict(tensors)


def check_model_matches_data(info: dict[str, Any], data: PreparedData, source: str = "prepared data") -> None:
    """InputError naming both values when a model and a prepared directory do not belong together."""
    data_hash = data.manifest.get("plan_hash")
    if data_hash and data_hash != info["plan_hash"]:
        raise InputError(f"{source} was prepared with plan hash {data_hash[:16]}… but the model was trained with "
                         f"plan hash {info['plan_hash'][:16]}…; use data prepared with the model's plan")
    if data.n_features != info["n_features"]:
        raise InputError(f"{source} has fingerprint size {data.n_features} but the model expects "
                         f"{info['n_features']}; use data prepared with the model's plan")
    n_class, n_regr = task_counts(data.tasks)
    if (n_class, n_regr) != (info["n_class_tasks"], info["n_regr_tasks"]):
        raise InputError(f"{source} has {n_class} classification + {n_regr} regression tasks but the model has "
                         f"{info['n_class_tasks']} + {info['n_regr_tasks']}; evaluate on the partner's own "
                         "prepared directory")
