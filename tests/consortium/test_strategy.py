"""Trunk-only FedAvg: arithmetic, and refusal of anything but trunk arrays + example count + loss."""

from __future__ import annotations

import numpy as np
import pytest
from cons_helpers import tiny_plan
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from flwr.common import Code as FlowerCode
from flwr.common import FitRes, Status, ndarrays_to_parameters
from flwr.compat.common.recorddict_compat import fitres_to_recorddict

from consortium.plan import trunk_shapes
from consortium.strategy import (
    ReplyRefused,
    RoundFailed,
    TrunkFedAvg,
    check_reply,
    check_trunk,
    round_seed,
    weighted_average,
)
from consortium.trunk import initial_trunk, to_list


def _trunk_list(plan, value: float) -> list[np.ndarray]:
    return [np.full(s, value, np.float32) for s in trunk_shapes(plan).values()]


def _fit_content(arrays, examples=10, metrics=None) -> RecordDict:
    res = FitRes(status=Status(FlowerCode.OK, ""), parameters=ndarrays_to_parameters(arrays),
                 num_examples=examples, metrics=metrics if metrics is not None else {"loss": 0.3})
    return fitres_to_recorddict(res, keep_input=True)


def test_weighted_average_weights_each_partner_by_its_examples():
    a = [np.array([1.0, 2.0], np.float32), np.array([[0.0]], np.float32)]
    b = [np.array([4.0, 8.0], np.float32), np.array([[3.0]], np.float32)]
    out = weighted_average([a, b], [1, 2])
    np.testing.assert_allclose(out[0], [3.0, 6.0])
    np.testing.assert_allclose(out[1], [[2.0]])
    assert all(o.dtype == np.float32 for o in out)


def test_weighted_average_does_not_depend_on_reply_order():
    rng = np.random.default_rng(0)
    parts = [[rng.normal(size=(50, 7)).astype(np.float32)] for _ in range(4)]
    weights = [13, 7, 29, 7]
    first = weighted_average(parts, weights)[0]
    second = weighted_average(parts[::-1], weights[::-1])[0]
    assert np.array_equal(first, second)


def test_weighted_average_refuses_non_positive_counts():
    with pytest.raises(ValueError, match="positive"):
        weighted_average([[np.zeros(2, np.float32)]], [0])


def test_check_trunk_accepts_the_plans_trunk():
    plan = tiny_plan()
    check_trunk(to_list(plan, initial_trunk(plan, 0)), plan)


def test_check_trunk_refuses_an_extra_head_array():
    plan = tiny_plan()
    arrays = _trunk_list(plan, 0.0) + [np.zeros((4, 3), np.float32)]
    with pytest.raises(ReplyRefused, match="heads or extra arrays"):
        check_trunk(arrays, plan)


def test_check_trunk_refuses_wrong_shape_dtype_and_nan():
    plan = tiny_plan()
    arrays = _trunk_list(plan, 0.0)
    bad_shape = [arrays[0].T.copy(), *arrays[1:]]
    with pytest.raises(ReplyRefused, match="input.weight has shape"):
        check_trunk(bad_shape, plan)
    with pytest.raises(ReplyRefused, match="float64"):
        check_trunk([a.astype(np.float64) for a in arrays], plan)
    arrays[1][0] = np.nan
    with pytest.raises(ReplyRefused, match="NaN"):
        check_trunk(arrays, plan)


def test_check_reply_accepts_exactly_trunk_count_and_loss():
    plan = tiny_plan()
    check_reply(_fit_content(_trunk_list(plan, 1.0)), plan, "train")


def test_check_reply_refuses_a_per_task_metric():
    plan = tiny_plan()
    content = _fit_content(_trunk_list(plan, 1.0), metrics={"loss": 0.2, "auc_pr_task_3": 0.8})
    with pytest.raises(ReplyRefused, match="auc_pr_task_3"):
        check_reply(content, plan, "train")


def test_check_reply_refuses_an_extra_record():
    plan = tiny_plan()
    content = _fit_content(_trunk_list(plan, 1.0))
    content.array_records["heads"] = ArrayRecord([np.zeros((4, 3), np.float32)])
    with pytest.raises(ReplyRefused, match="unexpected array records \\['heads'\\]"):
        check_reply(content, plan, "train")
    content = _fit_content(_trunk_list(plan, 1.0))
    content.config_records["smiles"] = ConfigRecord({"s": "CCO"})
    with pytest.raises(ReplyRefused, match="unexpected config records"):
        check_reply(content, plan, "train")
    content = _fit_content(_trunk_list(plan, 1.0))
    content.metric_records["fitres.num_examples"] = MetricRecord({"num_examples": 3, "n_actives": 2})
    with pytest.raises(ReplyRefused, match="other keys"):
        check_reply(content, plan, "train")


def test_round_seed_depends_on_plan_seed_and_round_only():
    assert round_seed(0, 1) == round_seed(0, 1)
    assert len({round_seed(0, r) for r in range(1, 50)}) == 49
    assert round_seed(0, 1) != round_seed(1, 1)


class _Proxy:
    def __init__(self, node_id: int) -> None:
        self.node_id = node_id


def test_aggregate_fit_averages_valid_replies_and_records_refusals():
    plan = tiny_plan(min_partners=2)
    seen = []
    strategy = TrunkFedAvg(plan, initial_trunk(plan, 0), total_rounds=3, first_round=2, on_round=seen.append)
    ok = lambda v, n: FitRes(Status(FlowerCode.OK, ""), ndarrays_to_parameters(_trunk_list(plan, v)), n,  # noqa: E731
                             {"loss": v})
    cheat = FitRes(Status(FlowerCode.OK, ""), ndarrays_to_parameters(_trunk_list(plan, 9.0) + [np.ones(3, np.float32)]),
                   5, {"loss": 1.0})
    params, metrics = strategy.aggregate_fit(1, [(_Proxy(11), ok(1.0, 10)), (_Proxy(12), ok(4.0, 30)),
                                                 (_Proxy(13), cheat)], [])
    assert seen[0].round == 2  # resumed numbering: Flower's round 1 is the run's round 2
    assert [u.node_id for u in seen[0].updates] == [11, 12]
    for arr in seen[0].trunk.values():
        np.testing.assert_allclose(arr, 3.25)  # (1*10 + 4*30) / 40
    assert any("node 13" in r for r in strategy.refused)
    assert metrics["partners"] == 2


def test_aggregate_fit_fails_the_round_below_min_partners():
    plan = tiny_plan(min_partners=3)
    strategy = TrunkFedAvg(plan, initial_trunk(plan, 0), total_rounds=2)
    res = FitRes(Status(FlowerCode.OK, ""), ndarrays_to_parameters(_trunk_list(plan, 1.0)), 10, {"loss": 0.1})
    with pytest.raises(RoundFailed, match="2 valid replies, the plan needs 3"):
        strategy.aggregate_fit(1, [(_Proxy(1), res), (_Proxy(2), res)], [])


@pytest.mark.parametrize("loss", ["CC(=O)O", b"CCO", float("nan"), float("inf"), True])
def test_check_reply_refuses_a_loss_that_is_not_a_finite_number(loss):
    plan = tiny_plan()
    content = _fit_content(_trunk_list(plan, 1.0), metrics={"loss": loss})
    with pytest.raises(ReplyRefused, match="loss"):
        check_reply(content, plan, "train")


def test_check_reply_refuses_a_reply_without_a_loss():
    plan = tiny_plan()
    with pytest.raises(ReplyRefused, match="no loss"):
        check_reply(_fit_content(_trunk_list(plan, 1.0), metrics={}), plan, "train")


@pytest.mark.parametrize("examples", [10**15, 0, -3])
def test_check_reply_refuses_an_example_count_outside_the_plans_cap(examples):
    plan = tiny_plan()
    with pytest.raises(ReplyRefused, match="max_examples"):
        check_reply(_fit_content(_trunk_list(plan, 1.0), examples=examples), plan, "train")
    capped = tiny_plan(max_examples=50)
    check_reply(_fit_content(_trunk_list(capped, 1.0), examples=50), capped, "train")
    with pytest.raises(ReplyRefused, match="51 is outside 1..50"):
        check_reply(_fit_content(_trunk_list(capped, 1.0), examples=51), capped, "train")


def test_check_reply_refuses_a_float_example_count():
    plan = tiny_plan()
    content = _fit_content(_trunk_list(plan, 1.0))
    content.metric_records["fitres.num_examples"] = MetricRecord({"num_examples": 12.5})
    with pytest.raises(ReplyRefused, match="float, not an integer"):
        check_reply(content, plan, "train")


def test_check_reply_checks_the_final_evaluation_loss_and_count():
    from flwr.common import EvaluateRes
    from flwr.compat.common.recorddict_compat import evaluateres_to_recorddict

    plan = tiny_plan()
    ok = evaluateres_to_recorddict(EvaluateRes(Status(FlowerCode.OK, ""), 0.4, 0, {}))
    check_reply(ok, plan, "evaluate")  # a partner without validation rows may report 0
    for loss, count in ((float("nan"), 3), (0.4, 10**15)):
        bad = evaluateres_to_recorddict(EvaluateRes(Status(FlowerCode.OK, ""), loss, count, {}))
        with pytest.raises(ReplyRefused):
            check_reply(bad, plan, "evaluate")


def test_aggregate_fit_refuses_huge_updates_and_huge_counts_and_goes_on():
    plan = tiny_plan(min_partners=2)
    seen = []
    strategy = TrunkFedAvg(plan, initial_trunk(plan, 0), total_rounds=1, on_round=seen.append)
    res = lambda arrays, n, loss=0.1: FitRes(Status(FlowerCode.OK, ""), ndarrays_to_parameters(arrays), n,  # noqa: E731
                                             {"loss": loss})
    start = to_list(plan, initial_trunk(plan, 0))
    honest = [a + np.float32(0.01) for a in start]
    huge = [np.full_like(a, 1e30) for a in start]
    scaled = [a * np.float32(500) for a in start]  # a "model replacement": finite, plausible values, 500x norm
    strategy.aggregate_fit(1, [(_Proxy(1), res(honest, 10)), (_Proxy(2), res(honest, 20)),
                               (_Proxy(3), res(huge, 10)), (_Proxy(4), res(scaled, 10)),
                               (_Proxy(5), res(honest, 10**15)), (_Proxy(6), res(honest, 10, "CCO"))], [])
    assert [u.node_id for u in seen[0].updates] == [1, 2]
    reasons = dict(r.split(": ", 2)[1:] for r in seen[0].refused)
    assert set(reasons) == {"node 3", "node 4", "node 5", "node 6"}
    assert "max_update_norm" in reasons["node 3"] and "max_update_norm" in reasons["node 4"]
    assert "max_examples" in reasons["node 5"] and "not a number" in reasons["node 6"]
    for arr, ref in zip(seen[0].trunk.values(), honest, strict=True):
        np.testing.assert_allclose(arr, ref)


def test_check_reply_refuses_text_smuggled_in_the_status_message():
    plan = tiny_plan()
    content = _fit_content(_trunk_list(plan, 1.0))
    content.config_records["fitres.status"] = ConfigRecord({"code": 0, "message": "CC(=O)Oc1ccccc1C(=O)O " * 10})
    with pytest.raises(ReplyRefused, match="status record"):
        check_reply(content, plan, "train")


def test_server_step_moves_the_trunk_lr_times_the_averaged_update():
    from consortium.strategy import server_step

    sent = [np.array([1.0, 2.0, -1.0], np.float32)]
    averaged = [np.array([2.0, 2.0, -3.0], np.float32)]
    server_step(sent, averaged, 2.0)
    np.testing.assert_allclose(averaged[0], [3.0, 2.0, -5.0])
    same = [np.array([2.0, 2.0, -3.0], np.float32)]
    server_step(sent, same, 1.0)
    np.testing.assert_array_equal(same[0], [2.0, 2.0, -3.0])  # lr 1: plain FedAvg, bit for bit


def test_aggregate_fit_applies_the_plans_server_lr_to_the_average():
    from cons_helpers import with_federation

    plan = with_federation(tiny_plan(min_partners=2), server_lr=3.0)
    start = initial_trunk(plan, 0)
    seen = []
    strategy = TrunkFedAvg(plan, start, total_rounds=1, on_round=seen.append)
    sent = to_list(plan, start)
    res = lambda d, n: FitRes(Status(FlowerCode.OK, ""),  # noqa: E731
                              ndarrays_to_parameters([s + np.float32(d) for s in sent]), n, {"loss": 0.1})
    params, _ = strategy.aggregate_fit(1, [(_Proxy(1), res(0.01, 10)), (_Proxy(2), res(0.03, 30))], [])
    mean_step = (0.01 * 10 + 0.03 * 30) / 40
    for got, s in zip(seen[0].trunk.values(), sent, strict=True):
        np.testing.assert_allclose(got, s + 3.0 * mean_step, atol=1e-6)


@pytest.mark.parametrize("bad", [0, -1.0, 11.0, float("nan"), True, "2"])
def test_plan_refuses_a_server_lr_outside_its_range(bad):
    from consortium.plan import FederationSpec
    from data_prep.errors import InputError

    with pytest.raises(InputError, match="server_lr"):
        FederationSpec(server_lr=bad)
