"""Masked multitask losses: unknown labels contribute neither loss nor gradient.

Both losses are summed over the known entries (each weighted by its task's `training_weight`) and divided by
the number of rows in the batch, as SparseChem does, so a task's pull on the trunk grows with its label count.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_bce(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor,
               task_weight: torch.Tensor) -> torch.Tensor:
    """BCE-with-logits on +1/-1 labels over known entries, task-weighted, divided by the batch rows."""
    n = max(int(logits.shape[0]), 1)
    if logits.numel() == 0:
        return logits.sum()
    target = (labels > 0).to(logits.dtype)
    per_entry = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    # torch.where, not multiplication: a masked entry must not leak NaN/inf or gradient.
    per_entry = torch.where(mask, per_entry * task_weight, torch.zeros_like(per_entry))
    return per_entry.sum() / n


def censored_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, censor: torch.Tensor,
                 task_weight: torch.Tensor, censored_weight: torch.Tensor) -> torch.Tensor:
    """Masked squared error; censored entries are penalised only on the wrong side of their bound.

    censor -1 ('<', the true value is below `target`): loss only where pred > target.
    censor +1 ('>', the true value is above `target`): loss only where pred < target.
    Censored entries are additionally weighted by their task's `censored_weight`.
    """
    n = max(int(pred.shape[0]), 1)
    if pred.numel() == 0:
        return pred.sum()
    diff = pred - target
    diff = torch.where(censor < 0, diff.clamp(min=0), diff)
    diff = torch.where(censor > 0, diff.clamp(max=0), diff)
    weight = task_weight * torch.where(censor != 0, censored_weight, torch.ones_like(censored_weight))
    per_entry = torch.where(mask, diff.square() * weight, torch.zeros_like(diff))
    return per_entry.sum() / n
