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
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from data_prep.errors import InputError

#: The assay types MELLODDY-TUNER knows; T0 rows with another type are rejected.
ASSAY_TYPES = ("ADME", "NON-CATALOG-PANEL", "CATALOG-PANEL", "OTHER", "AUX_HTS")
#: `folds.method`: TUNER's scaffold-network reduction (default) or the plain Murcko scaffold (see data_prep.folds).
FOLD_METHODS = ("scaffold_network", "scaffold")


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
    #: Counted on the molecule as given, before salt stripping: TUNER's `max_num_atoms = 100` (which
    #: rejects 100 atoms and more) is `max_heavy_atoms = 99` here.
    max_heavy_atoms: int = 99
    charge_parent: bool = True
    remove_isotopes: bool = True
    remove_stereo: bool = True
    canonical_tautomer: bool = True
    max_tautomers: int = 256

    def __post_init__(self) -> None:
        if self.max_heavy_atoms < 1:
            raise InputError(f"plan: standardization.max_heavy_atoms must be >= 1, got {self.max_heavy_atoms}")
        if self.max_tautomers < 1:
            raise InputError(f"plan: standardization.max_tautomers must be >= 1, got {self.max_tautomers}")


@dataclass(frozen=True)
class FoldConfig:
    n_folds: int = 5
    method: str = "scaffold_network"

    def __post_init__(self) -> None:
        if self.method not in FOLD_METHODS:
            raise InputError(f"plan: folds.method '{self.method}' is not supported; use one of "
                             f"{', '.join(repr(m) for m in FOLD_METHODS)}")
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

    def __post_init__(self) -> None:
        unknown = sorted(set(self.credibility) - set(ASSAY_TYPES))
        if unknown:
            raise InputError(f"plan: tasks.credibility has unknown assay type(s) {unknown}; use {list(ASSAY_TYPES)}")
        for assay_type, bounds in self.credibility.items():
            if len(bounds) != 2 or not all(math.isfinite(b) for b in bounds) or not bounds[0] < bounds[1]:
                raise InputError(f"plan: tasks.credibility.{assay_type} must be [min, max] with finite min < max, "
                                 f"got {bounds}")
        if not self.auto_thresholds or not all(math.isfinite(t) for t in self.auto_thresholds):
            raise InputError(f"plan: tasks.auto_thresholds must be a non-empty list of finite numbers, "
                             f"got {self.auto_thresholds}")
        for name in ("min_train_actives", "min_train_inactives", "min_eval_actives_per_fold",
                     "min_eval_inactives_per_fold", "min_regression_values", "min_regression_uncensored",
                     "min_eval_regression_values_per_fold", "min_eval_regression_std", "censored_weight"):
            value = getattr(self, name, 0)
            if not (math.isfinite(value) and value >= 0):
                raise InputError(f"plan: tasks.{name} must be >= 0, got {value}")

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
    """Build one config dataclass from a required plan table: unknown keys and values of the wrong type are
    named here, ranges by the dataclass's own `__post_init__` (one place for every table's checks)."""
    if name not in plan:
        raise InputError(f"{source}: the plan is incomplete: table [{name}] is missing; write plans with "
                         "`consortium init` so every partner reads the same settings")
    table = plan[name]
    if not isinstance(table, dict):
        raise InputError(f"{source}: [{name}] must be a table")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(table) - known)
    if unknown:
        raise InputError(
            f"{source}: unknown key(s) {unknown} in [{name}]; allowed: {sorted(known)}. "
            "Was the plan written by another version of `consortium init`?"
        )
    hints = typing.get_type_hints(cls)
    for key, value in table.items():
        if not _has_type(value, hints[key]):
            raise InputError(f"{source}: {name}.{key} must be {_describe(hints[key])}, got {value!r}")
    try:
        return cls(**table)
    except InputError as exc:  # a range check: say which file
        raise InputError(f"{source}: {str(exc).removeprefix('plan: ')}") from None
    except (TypeError, ValueError) as exc:
        raise InputError(f"{source}: bad value in [{name}]: {exc}") from None


def _has_type(value: Any, hint: Any) -> bool:
    """Whether a TOML value fits a dataclass annotation (bool is not an int, an int is not a float: the plan
    hash is computed on the values as written, so `1` where `1.0` belongs would give another hash)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint in (float, str):
        return isinstance(value, hint)
    if origin is list:
        return isinstance(value, list) and all(_has_type(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(_has_type(k, args[0]) and _has_type(v, args[1])
                                               for k, v in value.items())
    if origin in (typing.Union, types.UnionType):
        return any(_has_type(value, a) for a in args)
    return True  # a type TOML cannot express: left to the dataclass


_NAMES = {bool: ("true or false", "booleans"), int: ("an integer", "integers"), str: ("a quoted string", "strings"),
          float: ("a number with a decimal point (e.g. 1.0)", "numbers with a decimal point (e.g. [3.0, 12.0])")}


def _describe(hint: Any, plural: bool = False) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is list:
        return ("lists" if plural else "a list") + f" of {_describe(args[0], plural=True)}"
    if origin is dict:
        return f"a table of {_describe(args[1], plural=True)}"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a, plural) for a in args)
    return _NAMES[hint][plural] if hint in _NAMES else str(hint)


def read_plan_dict(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"plan file {path} not found; create one with `consortium init --out {path}`")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise InputError(f"plan file {path} is not UTF-8 text (a binary file?); write it with "
                         "`consortium init`") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"plan file {path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise InputError(f"plan file {path} cannot be read: {exc.strerror or exc}") from None


def plan_hash(plan: dict[str, Any]) -> str:
    """SHA-256 of the plan's content (canonical JSON), independent of TOML formatting and comments.

    The `reference_hash` slot is left out: it is filled in after the reference run that it certifies.
    """
    content = {k: v for k, v in plan.items() if k != "reference_hash"}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()
