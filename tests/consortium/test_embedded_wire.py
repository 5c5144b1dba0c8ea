"""The embedded grid's wire copy: what a partner decodes equals Flower's own protobuf round trip, byte for byte,
and the counted size is the serialized message's exact size, while array payloads are shared, not copied."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from flwr.common.serde import recorddict_to_proto

from consortium.embedded import _wire_copy


@pytest.mark.parametrize("shapes", [[(3,)], [(0,)], [(200, 50), (50,)], [(1000, 300), (7,), (127,), (128,)],
                                    [(16,)] * 5, [(40000,)]])
def test_wire_copy_equals_flower_serde_and_counts_exact_bytes(shapes: list[tuple[int, ...]]) -> None:
    rng = np.random.default_rng(len(shapes))
    content = RecordDict({
        "arrays": ArrayRecord([rng.standard_normal(s).astype(np.float32) for s in shapes]),
        "config": ConfigRecord({"round": 3, "plan_hash": "ab" * 32}),
        "metrics": MetricRecord({"loss": 0.5, "num-examples": 10}),
        "bytes": ArrayRecord([np.zeros(130, dtype=np.uint8)]),
    })
    copy, size = _wire_copy(content)
    full = recorddict_to_proto(content)
    assert size == full.ByteSize()
    assert recorddict_to_proto(copy).SerializeToString() == full.SerializeToString()
    assert copy is not content and copy["arrays"] is not content["arrays"]
    # the payloads are shared (immutable bytes), so the copy costs nothing per parameter
    for k, a in content["arrays"].items():
        assert copy["arrays"][k].data is a.data
    np.testing.assert_array_equal(copy["arrays"][next(iter(content["arrays"]))].numpy(),
                                  next(iter(content["arrays"].values())).numpy())
