"""The consortium plan (`plan.toml`): public, identical at every partner, nothing secret.

The data sections come from `data_prep.config` (configuration only, no partner data code); this module adds
the trunk architecture, the local training settings and the federation schedule, and writes/reads the file.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import tomli_w

from data_prep.atomic import write_text_atomic
from data_prep.config import PrepConfig, plan_hash, read_plan_dict, section
from data_prep.errors import InputError

ACTIVATIONS = ("relu", "leaky_relu", "tanh", "elu")
SCHEDULES = ("local_steps", "local_epochs", "per_iteration")
TRUNK_OPTIMIZER_MODES = ("keep", "reset")
WIRE_DTYPE_NAMES = ("float32", "float16")
SERVER_OPTIMIZERS = ("none", "adam")
BATCH_ORDERS = ("per_round", "epochs")


@dataclass(frozen=True)
class TrunkSpec:
    hidden_sizes: list[int] = field(default_factory=lambda: [2000])
    dropout: float = 0.2
    activation: str = "relu"
    input_dropout: float = 0.0

    def __post_init__(self) -> None:
        if not self.hidden_sizes or any(int(h) < 1 for h in self.hidden_sizes):
            raise InputError(f"plan: trunk.hidden_sizes must be positive integers, got {self.hidden_sizes}")
        if self.activation not in ACTIVATIONS:
            raise InputError(f"plan: trunk.activation '{self.activation}' unknown; use one of {ACTIVATIONS}")
        if not 0.0 <= self.dropout < 1.0 or not 0.0 <= self.input_dropout < 1.0:
            raise InputError("plan: trunk dropouts must be in [0, 1)")


@dataclass(frozen=True)
class TrainingSpec:
    """Local training settings, shared so single-partner baselines and federated partners train alike."""

    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    batch_fraction: float = 0.02
    min_batch_size: int = 32
    max_batch_size: int = 4096
    max_epochs: int = 40
    patience: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.learning_rate < float("inf") or not 0.0 <= self.weight_decay < float("inf"):
            raise InputError(f"plan: training.learning_rate must be > 0 and training.weight_decay >= 0, got "
                             f"{self.learning_rate} and {self.weight_decay}")
        if not 0.0 < self.batch_fraction <= 1.0:
            raise InputError(f"plan: training.batch_fraction must be in (0, 1], got {self.batch_fraction}")
        if not 1 <= self.min_batch_size <= self.max_batch_size:
            raise InputError(f"plan: training.min_batch_size must be >= 1 and <= training.max_batch_size, got "
                             f"{self.min_batch_size} and {self.max_batch_size}")
        if self.max_epochs < 1 or self.patience < 1 or self.seed < 0:
            raise InputError(f"plan: training.max_epochs and training.patience must be >= 1 and training.seed "
                             f">= 0, got {self.max_epochs}, {self.patience}, {self.seed}")


@dataclass(frozen=True)
class FederationSpec:
    rounds: int = 20
    schedule: str = "local_steps"
    local_steps: int = 50
    local_epochs: int = 1
    min_partners: int = 2
    secure_aggregation: bool = False
    secagg_clipping_range: float = 8.0
    secagg_quantization_range: int = 4194304
    #: dtype of the trunk arrays on the wire in plain rounds: "float32", or "float16" (half the bytes; partners
    #: refuse to send values beyond float16's range; averaged in float64 -> float32 either way).
    wire_dtype: str = "float32"
    #: Differential privacy (`consortium.privacy`): each partner clips its trunk update to L2 norm
    #: `dp_clipping_norm`, the server adds Gaussian noise (`dp_noise_multiplier` x the sensitivity) to the mean
    #: and records the cumulative ε at `dp_delta` in every ledger line. Partner-level DP.
    dp_enabled: bool = False
    dp_clipping_norm: float = 1.0
    dp_noise_multiplier: float = 1.0
    dp_delta: float = 1e-5
    #: Largest training-example count a reply may claim (FedAvg weight): a partner cannot outweigh the rest.
    max_examples: int = 10_000_000
    #: Largest update a reply may make, as a multiple of the sent trunk's L2 norm (1e30 weights are refused).
    max_update_norm: float = 100.0
    #: "keep": each partner's trunk-optimizer moments persist across rounds (private state); "reset": fresh Adam
    #: on every averaged trunk (the old behaviour, kept to measure the difference).
    trunk_optimizer: str = "keep"
    #: After the last round, at most this many epochs of private fine-tuning (trunk + heads) from the partner's
    #: chosen federated model, early-stopped on its validation fold; the untuned model stays a candidate. 0 = off.
    finetune_epochs: int = 0
    #: Before round 1, this many epochs of training the partner's fresh heads alone on the initial trunk (private;
    #: the first trunk gradients then come from heads that already fit). 0 = off.
    head_warmup_epochs: int = 0
    #: Server learning rate η on the averaged trunk update (FedOpt's server SGD without momentum): the new trunk
    #: is `sent + η · (mean of the partners' trunks − sent)`. 1 = plain FedAvg. Averaging partners whose steps
    #: point different ways shortens the step a pooled model would take; η > 1 gives that length back. Applied
    #: after DP noise (post-processing), so the privacy accounting is unchanged; stateless, so resume is exact.
    server_lr: float = 1.0
    #: "none": the server averages the partners' own optimizer steps (FedAvg, times `server_lr`). "adam": the
    #: trunk's Adam runs on the server (`consortium.server_optimizer`): each partner takes one plain gradient
    #: step per round and the server applies Adam (`training.learning_rate`) to the mean gradient, the update
    #: a pooled model would take. Needs `schedule = "per_iteration"`; the server keeps (and checkpoints) the moments.
    server_optimizer: str = "none"
    #: How a partner draws its batches with the step schedules: "epochs" (default) — round r trains steps
    #: (r−1)·n … r·n−1 of one stream of shuffled epochs, so every row is seen once per epoch, as the
    #: single-partner and pooled models see it (`partner_kit.batching.stream_batches`); "per_round" — each
    #: round's steps from a fresh shuffle seeded by the round (rows drawn unevenly across rounds; the behaviour
    #: before session 8, kept to measure the difference). Ignored by local_epochs. BENCHMARKS.md, "Uplift".
    batches: str = "epochs"

    def __post_init__(self) -> None:
        if isinstance(self.head_warmup_epochs, bool) or not isinstance(self.head_warmup_epochs, int) \
                or self.head_warmup_epochs < 0:
            raise InputError("plan: federation.head_warmup_epochs must be an integer >= 0, "
                             f"got {self.head_warmup_epochs!r}")
        if isinstance(self.finetune_epochs, bool) or not isinstance(self.finetune_epochs, int) \
                or self.finetune_epochs < 0:
            raise InputError(f"plan: federation.finetune_epochs must be an integer >= 0, got {self.finetune_epochs!r}")
        if self.trunk_optimizer not in TRUNK_OPTIMIZER_MODES:
            raise InputError(f"plan: federation.trunk_optimizer '{self.trunk_optimizer}' unknown; use one of "
                             f"{TRUNK_OPTIMIZER_MODES}")
        if isinstance(self.max_examples, bool) or not isinstance(self.max_examples, int) or self.max_examples < 1:
            raise InputError(f"plan: federation.max_examples must be a positive integer, got {self.max_examples!r}")
        if isinstance(self.max_update_norm, bool) or not isinstance(self.max_update_norm, int | float) \
                or not 0 < self.max_update_norm < float("inf"):
            raise InputError("plan: federation.max_update_norm must be a positive finite number, "
                             f"got {self.max_update_norm!r}")
        if isinstance(self.server_lr, bool) or not isinstance(self.server_lr, int | float) \
                or not 0 < self.server_lr <= 10:
            raise InputError(f"plan: federation.server_lr must be a number in (0, 10] (1 = plain FedAvg), "
                             f"got {self.server_lr!r}")
        if self.schedule not in SCHEDULES:
            raise InputError(f"plan: federation.schedule '{self.schedule}' unknown; use one of {SCHEDULES}")
        self._check_server_optimizer()
        if self.batches not in BATCH_ORDERS:
            raise InputError(f"plan: federation.batches '{self.batches}' unknown; use one of {BATCH_ORDERS}")
        if self.rounds < 1 or self.min_partners < 1:
            raise InputError("plan: federation.rounds and federation.min_partners must be >= 1")
        if self.local_steps < 1 or self.local_epochs < 1:
            raise InputError(f"plan: federation.local_steps and federation.local_epochs must be >= 1, got "
                             f"{self.local_steps} and {self.local_epochs}")
        if not 0 < self.secagg_clipping_range < float("inf") or self.secagg_quantization_range < 1:
            raise InputError(f"plan: federation.secagg_clipping_range must be > 0 and "
                             f"federation.secagg_quantization_range >= 1, got {self.secagg_clipping_range} and "
                             f"{self.secagg_quantization_range}")
        if self.wire_dtype not in WIRE_DTYPE_NAMES:
            raise InputError(f"plan: federation.wire_dtype '{self.wire_dtype}' unknown; use one of {WIRE_DTYPE_NAMES}")
        if self.wire_dtype == "float16" and self.secure_aggregation:
            raise InputError("plan: federation.wire_dtype = \"float16\" with federation.secure_aggregation: SecAgg+ "
                             "sends its own quantized integers, so float16 saves nothing there; use \"float32\"")
        self._check_dp()

    def _check_server_optimizer(self) -> None:
        if self.server_optimizer not in SERVER_OPTIMIZERS:
            raise InputError(f"plan: federation.server_optimizer '{self.server_optimizer}' unknown; use one of "
                             f"{SERVER_OPTIMIZERS}")
        if self.server_optimizer == "none":
            return
        needs = [
            (self.schedule != "per_iteration", "federation.schedule = \"per_iteration\" (the server's Adam steps "
             "on one gradient per partner and round)"),
            (self.server_lr != 1, "federation.server_lr = 1 (the step length is training.learning_rate)"),
            (self.wire_dtype != "float32", "federation.wire_dtype = \"float32\" (the gradient is read off the "
             "trunk's difference, which float16 would round away)"),
            (self.secure_aggregation, "federation.secure_aggregation = false (SecAgg+ quantizes the trunk to steps "
             "of about 4e-6, the size of many gradients)"),
        ]
        needed = [text for broken, text in needs if broken]
        if needed:
            raise InputError(f"plan: federation.server_optimizer = \"{self.server_optimizer}\" needs "
                             + "; ".join(needed))

    def _check_dp(self) -> None:
        for key in ("dp_clipping_norm", "dp_noise_multiplier", "dp_delta"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise InputError(f"plan: federation.{key} must be a finite number, got {value!r}")
        if not self.dp_clipping_norm > 0 or not self.dp_noise_multiplier >= 0:
            raise InputError("plan: federation.dp_clipping_norm must be > 0 and federation.dp_noise_multiplier "
                             f">= 0, got {self.dp_clipping_norm} and {self.dp_noise_multiplier}")
        if not 0 < self.dp_delta < 1:
            raise InputError(f"plan: federation.dp_delta must be in (0, 1) (e.g. 1e-5), got {self.dp_delta}")
        if self.dp_enabled and self.dp_noise_multiplier == 0:
            raise InputError("plan: federation.dp_enabled with federation.dp_noise_multiplier = 0 adds no noise "
                             "(ε = infinity); set a noise multiplier > 0 (e.g. 1.0) or turn dp_enabled off")
        if self.dp_enabled and self.wire_dtype == "float16":
            raise InputError("plan: federation.dp_enabled with federation.wire_dtype = \"float16\": float16 rounding "
                             "of every trunk value would push clipped updates past dp_clipping_norm; use \"float32\"")

    @property
    def steps_per_round(self) -> int | None:
        """Optimizer steps each partner takes per round; None means whole local epochs."""
        return {"local_steps": self.local_steps, "per_iteration": 1}.get(self.schedule)


@dataclass(frozen=True)
class Plan:
    name: str = "consortium"
    data: PrepConfig = field(default_factory=PrepConfig)
    trunk: TrunkSpec = field(default_factory=TrunkSpec)
    training: TrainingSpec = field(default_factory=TrainingSpec)
    federation: FederationSpec = field(default_factory=FederationSpec)
    reference_hash: str = ""

    @property
    def hash(self) -> str:
        return plan_hash(self.to_dict())

    @property
    def n_features(self) -> int:
        return self.data.fingerprint.size

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "reference_hash": self.reference_hash,
            **self.data.to_dict(),
            "trunk": asdict(self.trunk),
            "training": asdict(self.training),
            "federation": asdict(self.federation),
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "plan", saved: bool = False) -> Plan:
        """The plan from a parsed plan file. `saved=True` reads the plan a model directory saved (model.json): its
        [federation] table may come from another kit version (keys added or renamed since; they shape no
        model), so unknown federation keys are dropped, missing ones take their defaults and the file-as-written
        hash check is skipped: the model's own `plan_hash` identifies what it was trained under."""
        if saved and isinstance(raw.get("federation"), dict):
            names = {f.name for f in fields(FederationSpec)}
            raw = {**raw, "federation": {k: v for k, v in raw["federation"].items() if k in names}}
        known = {"name", "reference_hash", "fingerprint", "standardization", "folds", "tasks",
                 "trunk", "training", "federation"}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise InputError(f"{source}: unknown table(s) {unknown}; allowed: {sorted(known)}")
        plan = cls(
            name=str(raw.get("name", "consortium")),
            data=PrepConfig.from_plan(raw, source),
            trunk=section(TrunkSpec, raw, "trunk", source),
            training=section(TrainingSpec, raw, "training", source),
            federation=section(FederationSpec, raw, "federation", source),
            reference_hash=str(raw.get("reference_hash", "")),
        )
        # One hash everywhere: data_prep hashes the file as written, so the file must be complete.
        if not saved and plan.data.plan_hash != plan.hash:
            full = plan.to_dict()
            missing = sorted(
                f"{t}.{k}" if isinstance(v, dict) else t
                for t, v in full.items()
                for k in (v if isinstance(v, dict) else [None])
                if t not in raw or (k is not None and k not in raw.get(t, {}))
            )
            raise InputError(
                f"{source}: the plan is incomplete or has values of the wrong type"
                + (f" (missing: {', '.join(missing[:8])})" if missing else "")
                + "; write plans with `consortium init` so every partner hashes the same content"
            )
        return plan

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        return cls.from_dict(read_plan_dict(path), source=str(path))

    def save(self, path: str | Path) -> Path:
        header = (
            "# Consortium plan: public, identical at every partner, nothing secret.\n"
            f"# plan hash (content, without reference_hash): {self.hash}\n"
        )
        # Public: readable by everyone (atomic writes default to owner-only 0600; secret.key stays 0600).
        return write_text_atomic(path, header + tomli_w.dumps(self.to_dict()), mode=0o644)


def trunk_shapes(plan: Plan) -> dict[str, tuple[int, ...]]:
    """The exact arrays a trunk consists of; the server refuses any reply with other names or shapes.

    `input.weight` is stored feature-major (n_features x hidden), as an embedding table, so a sparse
    row selects rows of it.
    """
    sizes = [int(h) for h in plan.trunk.hidden_sizes]
    shapes: dict[str, tuple[int, ...]] = {
        "input.weight": (plan.n_features, sizes[0]),
        "input.bias": (sizes[0],),
    }
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        shapes[f"hidden.{i}.weight"] = (fan_out, fan_in)
        shapes[f"hidden.{i}.bias"] = (fan_out,)
    return shapes
