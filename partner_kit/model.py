"""The multitask network: a shared trunk (federated) and private per-task heads (never leave the partner).

Trunk and heads are separate modules with separate state dicts, so a trunk can be swapped (a federated
average, a fine-tuning start point) without touching a head, and the trunk's parameter names and shapes are
exactly `consortium.plan.trunk_shapes(plan)`.
"""

from __future__ import annotations

import pandas as pd
import torch
from torch import nn

from consortium.plan import Plan, trunk_shapes
from partner_kit.batching import SparseBatch
from partner_kit.sparse_input import SparseInput

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "tanh": nn.Tanh, "elu": nn.ELU,
}


class Trunk(nn.Module):
    """Sparse input layer + dense hidden layers; each layer is followed by the activation and dropout."""

    def __init__(self, n_features: int, hidden_sizes: list[int], dropout: float = 0.2,
                 activation: str = "relu", input_dropout: float = 0.0) -> None:
        super().__init__()
        sizes = [int(h) for h in hidden_sizes]
        self.input = SparseInput(n_features, sizes[0], input_dropout=input_dropout)
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        self.act = _ACTIVATIONS[activation]()
        self.drop = nn.Dropout(dropout)
        self.out_features = sizes[-1]

    @classmethod
    def from_plan(cls, plan: Plan) -> Trunk:
        t = plan.trunk
        return cls(plan.n_features, t.hidden_sizes, t.dropout, t.activation, t.input_dropout)

    def forward(self, x: SparseBatch) -> torch.Tensor:
        h = self.drop(self.act(self.input(x)))
        for layer in self.hidden:
            h = self.drop(self.act(layer(h)))
        return h


class Heads(nn.Module):
    """One linear output per task: classification logits and regression values.

    Regression outputs are trained on standardized targets (per-task mean/std of the training values, kept as
    buffers) so classification and regression losses share a scale; `regression_values` maps them back.
    """

    def __init__(self, in_features: int, n_class: int, n_regr: int) -> None:
        super().__init__()
        self.n_class, self.n_regr = int(n_class), int(n_regr)
        self.classification = nn.Linear(in_features, self.n_class) if self.n_class else None
        self.regression = nn.Linear(in_features, self.n_regr) if self.n_regr else None
        self.register_buffer("regr_mean", torch.zeros(self.n_regr))
        self.register_buffer("regr_std", torch.ones(self.n_regr))

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = h.shape[0]
        logits = self.classification(h) if self.classification is not None else h.new_zeros(n, 0)
        regr = self.regression(h) if self.regression is not None else h.new_zeros(n, 0)
        return logits, regr

    def regression_values(self, standardized: torch.Tensor) -> torch.Tensor:
        return standardized * self.regr_std + self.regr_mean

    def standardize(self, values: torch.Tensor) -> torch.Tensor:
        return (values - self.regr_mean) / self.regr_std


class MultitaskModel(nn.Module):
    """trunk -> heads. `forward` returns (classification logits, standardized regression outputs)."""

    def __init__(self, trunk: Trunk, heads: Heads) -> None:
        super().__init__()
        self.trunk = trunk
        self.heads = heads

    def forward(self, x: SparseBatch) -> tuple[torch.Tensor, torch.Tensor]:
        return self.heads(self.trunk(x))

    @property
    def device(self) -> torch.device:
        return self.trunk.input.weight.device

    @torch.no_grad()
    def predict(self, x: SparseBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(class probabilities, regression values in the data's units) on the CPU; eval mode, no dropout.

        The batch is moved to the model's device and the read-outs back, so callers never see the device.
        """
        was_training = self.training
        self.eval()
        try:
            logits, regr = self(x.to(self.device))
            return torch.sigmoid(logits).cpu(), self.heads.regression_values(regr).cpu()
        finally:
            self.train(was_training)


def task_counts(tasks: pd.DataFrame) -> tuple[int, int]:
    """(classification tasks, regression tasks) of a task table."""
    kinds = tasks["kind"].astype(str)
    return int((kinds == "classification").sum()), int((kinds == "regression").sum())


def build_model(plan: Plan, tasks: pd.DataFrame) -> MultitaskModel:
    """The plan's trunk plus heads for the partner's tasks, seeded by the caller's torch RNG state."""
    trunk = Trunk.from_plan(plan)
    expected = trunk_shapes(plan)
    actual = {k: tuple(v.shape) for k, v in trunk.state_dict().items()}
    assert actual == expected, f"trunk layout {actual} differs from the plan's {expected}"
    n_class, n_regr = task_counts(tasks)
    return MultitaskModel(trunk, Heads(trunk.out_features, n_class, n_regr))
