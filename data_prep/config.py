"""The data sections of the consortium plan (fingerprint, standardization, folds, task rules).

`consortium.plan` owns the whole plan file; this module defines the parts every partner's data
preparation must agree on, so `data_prep` can read a plan without importing the consortium package.
Defaults follow MELLODDY-TUNER.
"""

from __future__ import annotations

import hashlib
import json
import math
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from data_prep.errors import InputError

#: The assay types MELLODDY-TUNER knows; T0 rows with another type are rejected.
ASSAY_TYPES = ("ADME", "NON-CATALOG-PANEL", "CATALOG-PANEL", "OTHER", "AUX_HTS")


@dataclass(frozen=True)
class FingerprintConfig:
    kind: str = "ECFP"
    radius: int = 3
    size: int = 32000
    binary: bool = True

    def __post_init__(self) -> None:
        if self.kind.upper() != "ECFP":
            raise InputError(f"plan: fingerprint.kind '{self.kind}' is not supported; use 'ECFP'")
        if not 1 <= self.radius <= 6:
            raise InputError(f"plan: fingerprint.radius must be 1..6, got {self.radius}")
        if not 64 <= self.size <= 2**24:
            raise InputError(f"plan: fingerprint.size must be 64..16777216, got {self.size}")


@dataclass(frozen=True)
class StandardizationConfig:
    max_heavy_atoms: int = 100
    charge_parent: bool = True
    remove_isotopes: bool = True
    remove_stereo: bool = True
    canonical_tautomer: bool = True
    max_tautomers: int = 256


@dataclass(frozen=True)
class FoldConfig:
    n_folds: int = 5
    method: str = "scaffold"

    def __post_init__(self) -> None:
        if self.method != "scaffold":
            raise InputError(f"plan: folds.method '{self.method}' is not supported; use 'scaffold'")
        if not 2 <= self.n_folds <= 100:
            raise InputError(f"plan: folds.n_folds must be 2..100, got {self.n_folds}")


def _default_credibility() -> dict[str, list[float]]:
    # [min, max] of credible standard_value per assay type (pXC50-like for dose-response types).
    return {
        "OTHER": [3.0, 12.0],
        "NON-CATALOG-PANEL": [3.0, 12.0],
        "CATALOG-PANEL": [3.0, 12.0],
        "AUX_HTS": [3.0, 12.0],
        "ADME": [-1.0e9, 1.0e9],
    }


@dataclass(frozen=True)
class TaskRules:
    credibility: dict[str, list[float]] = field(default_factory=_default_credibility)
    auto_thresholds: list[float] = field(default_factory=lambda: [8.0, 7.0, 6.0, 5.0, 4.7, 4.4])
    min_train_actives: int = 25
    min_train_inactives: int = 25
    min_eval_actives_per_fold: int = 10
    min_eval_inactives_per_fold: int = 10
    min_regression_values: int = 50
    min_regression_uncensored: int = 25
    #: A regression task counts in evaluation on a fold only with this many uncensored values there and a
    #: standard deviation of at least `min_eval_regression_std` (MELLODDY-TUNER's rule): R² of a near-constant
    #: fold is meaningless and would dominate an aggregate.
    min_eval_regression_values_per_fold: int = 10
    min_eval_regression_std: float = 0.5
    censored_weight: float = 1.0

    def credible_range(self, assay_type: str) -> tuple[float, float]:
        lo, hi = self.credibility.get(assay_type, [-math.inf, math.inf])
        return float(lo), float(hi)


@dataclass(frozen=True)
class PrepConfig:
    """Everything data preparation reads from the plan."""

    fingerprint: FingerprintConfig = field(default_factory=FingerprintConfig)
    standardization: StandardizationConfig = field(default_factory=StandardizationConfig)
    folds: FoldConfig = field(default_factory=FoldConfig)
    tasks: TaskRules = field(default_factory=TaskRules)
    plan_hash: str = ""

    @classmethod
    def from_plan(cls, plan: dict[str, Any], source: str = "plan") -> PrepConfig:
        return cls(
            fingerprint=section(FingerprintConfig, plan, "fingerprint", source),
            standardization=section(StandardizationConfig, plan, "standardization", source),
            folds=section(FoldConfig, plan, "folds", source),
            tasks=section(TaskRules, plan, "tasks", source),
            plan_hash=plan_hash(plan),
        )

    @classmethod
    def from_file(cls, path: str | Path) -> PrepConfig:
        return cls.from_plan(read_plan_dict(path), source=str(path))

    def to_dict(self) -> dict[str, Any]:
        return {k: asdict(getattr(self, k)) for k in ("fingerprint", "standardization", "folds", "tasks")}


def section(cls: type, plan: dict[str, Any], name: str, source: str) -> Any:
    """Build one config dataclass from a plan table, naming unknown keys instead of ignoring them."""
    table = plan.get(name, {})
    if not isinstance(table, dict):
        raise InputError(f"{source}: [{name}] must be a table")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(table) - known)
    if unknown:
        raise InputError(
            f"{source}: unknown key(s) {unknown} in [{name}]; allowed: {sorted(known)}. "
            "Was the plan written by another version of `consortium init`?"
        )
    try:
        return cls(**table)
    except TypeError as exc:
        raise InputError(f"{source}: bad value in [{name}]: {exc}") from None


def read_plan_dict(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"plan file {path} not found; create one with `consortium init --out {path}`")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"plan file {path} is not valid TOML: {exc}") from None


def plan_hash(plan: dict[str, Any]) -> str:
    """SHA-256 of the plan's content (canonical JSON), independent of TOML formatting and comments.

    The `reference_hash` slot is left out: it is filled in after the reference run that it certifies.
    """
    content = {k: v for k, v in plan.items() if k != "reference_hash"}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()
