"""`federation.wire_dtype`: float32 or float16 trunks in plain rounds, checked per the plan on both sides."""

from __future__ import annotations

import numpy as np
import pytest
from cons_helpers import tiny_plan

from consortium.plan import Plan
from consortium.strategy import ReplyRefused, check_trunk
from consortium.trunk import initial_trunk, to_list, to_wire
from data_prep.errors import InputError
from partner_kit.client_app import check_wire_range
from partner_kit.federated import PlanMismatch


@pytest.mark.parametrize(("fed", "message"), [
    ({"wire_dtype": "float64"}, "wire_dtype 'float64' unknown"),
    ({"wire_dtype": "float16", "secure_aggregation": True}, "SecAgg"),
    ({"wire_dtype": "float16", "dp_enabled": True}, "dp_clipping_norm"),
])
def test_plan_refuses_unknown_dtypes_and_float16_with_secagg_or_dp(fed, message):
    raw = tiny_plan().to_dict()
    raw["federation"].update(fed)
    with pytest.raises(InputError, match=message):
        Plan.from_dict(raw, source="plan.toml")


def test_plan_refuses_a_wire_dtype_that_is_not_a_string():
    raw = tiny_plan().to_dict()
    raw["federation"]["wire_dtype"] = 16
    with pytest.raises(InputError, match="wire_dtype must be a quoted string"):
        Plan.from_dict(raw, source="plan.toml")


def test_server_accepts_only_the_plans_wire_dtype():
    half, full = tiny_plan(wire_dtype="float16"), tiny_plan()
    trunk = to_list(full, initial_trunk(full, 0))
    check_trunk(to_wire(half, trunk), half)
    check_trunk(trunk, full)
    with pytest.raises(ReplyRefused, match="float32, expected"):
        check_trunk(trunk, half)
    with pytest.raises(ReplyRefused, match="float16, expected"):
        check_trunk(to_wire(half, trunk), full)


def test_partner_refuses_to_send_values_beyond_float16_range():
    plan = tiny_plan(wire_dtype="float16")
    arrays = [a.astype(np.float16) for a in to_list(plan, initial_trunk(plan, 0))]
    check_wire_range(arrays, plan)
    with np.errstate(over="ignore"):
        arrays[0] = (arrays[0].astype(np.float32) + np.float32(1e5)).astype(np.float16)  # 1e5 > 65504
    with pytest.raises(PlanMismatch, match="beyond float16's range"):
        check_wire_range(arrays, plan)
    check_wire_range([a.astype(np.float32) * 1e6 for a in arrays[1:]], tiny_plan())  # float32 wire: no check
