"""Masked multitask losses: masking, censoring direction, task and censored weights."""

from __future__ import annotations

import torch

from partner_kit.losses import censored_mse, masked_bce


def test_unknown_labels_contribute_no_loss_and_no_gradient():
    torch.manual_seed(0)
    logits = torch.randn(5, 3, requires_grad=True)
    labels = torch.tensor([[1, -1, 0], [0, 1, 1], [-1, 0, 0], [1, 1, -1], [0, 0, 1]], dtype=torch.float32)
    mask = labels != 0
    loss = masked_bce(logits, labels, mask, torch.ones(3))
    loss.backward()
    assert torch.all(logits.grad[~mask] == 0)
    assert torch.all(logits.grad[mask] != 0)
    # Whatever sits in the unknown entries (even a wrong label) changes nothing.
    garbage = torch.where(mask, labels, torch.ones_like(labels))
    assert torch.equal(masked_bce(logits, garbage, mask, torch.ones(3)), loss)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        logits[mask], (labels[mask] > 0).float(), reduction="sum") / 5
    torch.testing.assert_close(loss, expected)


def test_masked_entries_with_infinite_logits_do_not_leak_inf_or_nan():
    logits = torch.tensor([[float("inf"), 0.5]], requires_grad=True)
    labels = torch.tensor([[-1.0, 1.0]])
    mask = torch.tensor([[False, True]])
    loss = masked_bce(logits, labels, mask, torch.ones(2))
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.all(torch.isfinite(logits.grad)) and logits.grad[0, 0] == 0


def test_task_training_weight_scales_that_tasks_loss():
    torch.manual_seed(1)
    logits = torch.randn(4, 2)
    labels = torch.tensor([[1, -1], [1, 1], [-1, -1], [-1, 1]], dtype=torch.float32)
    mask = torch.ones(4, 2, dtype=torch.bool)
    one = masked_bce(logits[:, :1], labels[:, :1], mask[:, :1], torch.ones(1))
    two = masked_bce(logits[:, 1:], labels[:, 1:], mask[:, 1:], torch.ones(1))
    weighted = masked_bce(logits, labels, mask, torch.tensor([3.0, 0.0]))
    torch.testing.assert_close(weighted, 3 * one)
    torch.testing.assert_close(masked_bce(logits, labels, mask, torch.tensor([1.0, 2.0])), one + 2 * two)


def test_censored_less_than_is_penalised_only_when_prediction_is_above_the_bound():
    target = torch.tensor([[5.0, 5.0]])
    censor = torch.tensor([[-1, -1]], dtype=torch.int8)
    mask = torch.ones(1, 2, dtype=torch.bool)
    pred = torch.tensor([[4.0, 6.5]], requires_grad=True)
    loss = censored_mse(pred, target, mask, censor, torch.ones(2), torch.ones(2))
    loss.backward()
    torch.testing.assert_close(loss, torch.tensor(1.5**2))
    assert pred.grad[0, 0] == 0 and pred.grad[0, 1] > 0


def test_censored_greater_than_is_penalised_only_when_prediction_is_below_the_bound():
    target = torch.tensor([[5.0, 5.0]])
    censor = torch.tensor([[1, 1]], dtype=torch.int8)
    mask = torch.ones(1, 2, dtype=torch.bool)
    pred = torch.tensor([[4.0, 6.5]], requires_grad=True)
    loss = censored_mse(pred, target, mask, censor, torch.ones(2), torch.ones(2))
    loss.backward()
    torch.testing.assert_close(loss, torch.tensor(1.0))
    assert pred.grad[0, 0] < 0 and pred.grad[0, 1] == 0


def test_uncensored_regression_is_plain_masked_mse_and_censored_weight_applies_only_to_censored():
    pred = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], requires_grad=True)
    target = torch.tensor([[2.0, 0.0, 9.0], [1.0, 1.0, 1.0]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    censor = torch.tensor([[0, 1, 0], [0, 0, 0]], dtype=torch.int8)
    # entry (0,1): '>' 0.0 with pred 2.0 -> satisfied, no loss; entry (0,2) unknown.
    loss = censored_mse(pred, target, mask, censor, torch.ones(3), torch.full((3,), 0.5))
    torch.testing.assert_close(loss, torch.tensor((1.0 + 1.0) / 2))
    censor2 = torch.tensor([[0, -1, 0], [0, 0, 0]], dtype=torch.int8)   # '<' 0.0 with pred 2.0 -> violated by 2
    loss2 = censored_mse(pred, target, mask, censor2, torch.tensor([1.0, 2.0, 1.0]), torch.full((3,), 0.5))
    torch.testing.assert_close(loss2, torch.tensor((1.0 + 2.0 * 0.5 * 4.0 + 1.0) / 2))
    loss2.backward()
    assert pred.grad[0, 2] == 0 and pred.grad[1, 1] == 0
