"""The server holds no needless trunk copies (issue #11), and every result stays bit-identical to the plain code.

Each shortcut is checked against the straightforward statement it replaces: `np.load` for the zero-copy
views, an unblocked float64 sum for the blocked average, `tobytes()` for the trunk hash, Flower's serde for
the shared arrays of the messages sent to every partner.
"""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
from cons_helpers import tiny_plan, with_federation
from flwr.app import Message
from flwr.common import Code as FlowerCode
from flwr.common import FitIns, FitRes, Status, ndarrays_to_parameters
from flwr.common.serde import recorddict_to_proto
from flwr.compat.common.recorddict_compat import fitins_to_recorddict

import consortium.strategy as strategy_mod
from consortium.checkpoints import checkpoint_metadata, load_checkpoint, save_checkpoint
from consortium.plan import trunk_shapes
from consortium.server_app import share_arrays
from consortium.strategy import ReplyRefused, TrunkFedAvg, _decode, npy_view, weighted_average
from consortium.trunk import initial_trunk, trunk_sha256

#: Shapes and layouts both .npy helpers must handle: C and Fortran order, float16/32/64, empty, 0-d.
ARRAYS = [
    np.arange(12, dtype=np.float32).reshape(3, 4),
    np.arange(6, dtype=np.float16).reshape(2, 3),
    np.asfortranarray(np.arange(12, dtype=np.float64).reshape(3, 4)),
    np.zeros((0, 5), np.float32),
    np.array(2.5, np.float32),
]


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


@pytest.mark.parametrize("array", [*ARRAYS, np.arange(5, dtype=">f4")])
def test_npy_view_reads_what_np_load_reads_without_copying(array):
    blob = _npy(array)
    view = npy_view(blob)
    loaded = np.load(io.BytesIO(blob), allow_pickle=False)
    assert view.dtype == loaded.dtype and view.shape == loaded.shape
    assert np.array_equal(view, loaded)
    assert not view.flags.writeable  # a view of immutable bytes: nobody can change a partner's reply
    if view.size:
        assert np.shares_memory(view, np.frombuffer(blob, np.uint8))


def test_decode_refuses_pickles_and_short_payloads_as_np_load_does():
    obj = io.BytesIO()
    np.save(obj, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ReplyRefused, match="plain numpy array"):
        _decode([obj.getvalue()])
    with pytest.raises(ReplyRefused, match="plain numpy array"):
        _decode([_npy(np.ones(100, np.float32))[:-8]])
    with pytest.raises(ReplyRefused, match="plain numpy array"):
        _decode([b"not an npy payload at all"])


def _average_unblocked(arrays, weights):
    """The pre-#11 statement: whole-array float64 accumulator, sorted by (weight, content hash)."""
    def content(arrs):
        h = hashlib.sha256()
        for a in arrs:
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()

    keyed = sorted(zip(weights, arrays, strict=True), key=lambda wa: (wa[0], content(wa[1])))
    total = float(sum(weights))
    out = []
    for i in range(len(arrays[0])):
        acc = np.zeros(arrays[0][i].shape, dtype=np.float64)
        for w, arrs in keyed:
            acc += np.multiply(arrs[i], w / total, dtype=np.float64)
        out.append(acc.astype(np.float32))
    return out


@pytest.mark.parametrize("weights", [[13, 7, 29], [7, 7, 29, 7], [5, 5]])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_blocked_average_is_bit_identical_to_the_unblocked_sum(monkeypatch, weights, dtype):
    monkeypatch.setattr(strategy_mod, "AVERAGE_BLOCK", 7)  # many blocks and a ragged last one
    rng = np.random.default_rng(1)
    shapes = [(23, 5), (5,), (1, 1), (0, 3)]
    parts = [[(rng.normal(size=s) * 10 ** rng.uniform(-3, 3, size=s)).astype(dtype) for s in shapes]
             for _ in weights]
    got = weighted_average(parts, weights)
    want = _average_unblocked(parts, weights)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == np.float32 and g.shape == w.shape
        assert g.tobytes() == w.tobytes()
    # and the tie-break still makes it independent of the reply order
    again = weighted_average(parts[::-1], weights[::-1])
    assert all(a.tobytes() == b.tobytes() for a, b in zip(got, again, strict=True))


def test_trunk_hash_is_the_hash_of_the_bytes_it_always_was():
    trunk = initial_trunk(tiny_plan(), 3)
    digest = hashlib.sha256()
    for name in sorted(trunk):
        arr = np.ascontiguousarray(trunk[name], dtype=np.float32)
        digest.update(f"{name}|{arr.dtype.str}|{arr.shape}\n".encode())
        digest.update(arr.tobytes())
    assert trunk_sha256(trunk) == digest.hexdigest()
    # a read-only view (as decoded from a reply) hashes alike
    views = {k: npy_view(_npy(v)) for k, v in trunk.items()}
    assert trunk_sha256(views) == digest.hexdigest()


def test_checkpoint_takes_the_hash_it_is_given_or_computes_it(tmp_path):
    plan = tiny_plan()
    trunk = initial_trunk(plan, 0)
    a = save_checkpoint(tmp_path / "a", 1, trunk, plan)
    b = save_checkpoint(tmp_path / "b", 1, trunk, plan, sha256=trunk_sha256(trunk))
    assert checkpoint_metadata(a)["trunk_sha256"] == checkpoint_metadata(b)["trunk_sha256"] == trunk_sha256(trunk)
    assert checkpoint_metadata(a) == checkpoint_metadata(b)  # (safetensors orders its header freely: not bytes)
    back_a, back_b = load_checkpoint(a, plan), load_checkpoint(b, plan)
    assert all(back_a[k].tobytes() == back_b[k].tobytes() == trunk[k].tobytes() for k in trunk)


def _fit_messages(parameters, node_ids):
    ins = FitIns(parameters, {"round": 1})
    return [Message(fitins_to_recorddict(ins, True), n, "train", group_id="1") for n in node_ids]


def test_messages_to_every_partner_share_one_array_and_serialize_unchanged(server_identity):
    plan = tiny_plan()
    params = ndarrays_to_parameters(list(initial_trunk(plan, 0).values()))
    plain = _fit_messages(params, [1, 2, 3])
    before = [recorddict_to_proto(m.content).SerializeToString() for m in plain]
    msgs = share_arrays(_fit_messages(params, [1, 2, 3]))
    after = [recorddict_to_proto(m.content).SerializeToString() for m in msgs]
    assert after == before
    assert [m.content.object_id for m in msgs] == [m.content.object_id for m in plain]  # what Flower pushes
    records = [m.content.array_records["fitins.parameters"] for m in msgs]
    for key in records[0]:
        assert records[0][key] is records[1][key] is records[2][key]
    # arrays with other payloads (equal bytes in other objects) stay apart: only identity is trusted
    other = ndarrays_to_parameters(list(initial_trunk(plan, 0).values()))  # the same values, other bytes objects
    mixed = share_arrays(_fit_messages(params, [1]) + _fit_messages(other, [2]))
    first, second = (m.content.array_records["fitins.parameters"] for m in mixed)
    assert all(first[k] is not second[k] for k in first)


def test_configure_fit_sends_the_rounds_bytes_or_casts_them_for_a_float16_wire():
    class Clients:
        def num_available(self):
            return 2

        def sample(self, num_clients, min_num_clients):
            return ["p1", "p2"]

    plan = tiny_plan(min_partners=2)
    trunk = initial_trunk(plan, 0)
    params = ndarrays_to_parameters(list(trunk.values()))
    out = TrunkFedAvg(plan, trunk, total_rounds=2).configure_fit(1, params, Clients())
    assert [t for t in out[0][1].parameters.tensors] == params.tensors
    assert all(a is b for a, b in zip(out[0][1].parameters.tensors, params.tensors, strict=True))
    half = with_federation(plan, wire_dtype="float16")
    strategy = TrunkFedAvg(half, trunk, total_rounds=2)
    sent = strategy.configure_fit(1, params, Clients())[0][1].parameters
    got = [np.load(io.BytesIO(t), allow_pickle=False) for t in sent.tensors]
    assert all(g.dtype == np.float16 for g in got)
    assert all(np.array_equal(g, v.astype(np.float16)) for g, v in zip(got, trunk.values(), strict=True))
    assert all(np.array_equal(s, v) for s, v in zip(strategy.sent, trunk.values(), strict=True))


def test_aggregate_fit_from_views_equals_the_average_of_the_decoded_replies():
    plan = tiny_plan(min_partners=3)
    rng = np.random.default_rng(5)
    base = initial_trunk(plan, 0)
    replies = [[(v + rng.normal(scale=0.01, size=v.shape)).astype(np.float32) for v in base.values()]
               for _ in range(3)]
    seen = []
    strategy = TrunkFedAvg(plan, base, total_rounds=2, on_round=seen.append)
    strategy.sent = list(base.values())
    results = [(type("P", (), {"node_id": i + 1})(),
                FitRes(Status(FlowerCode.OK, ""), ndarrays_to_parameters(r), n, {"loss": 0.5}))
               for i, (r, n) in enumerate(zip(replies, [30, 10, 20], strict=True))]
    params, _ = strategy.aggregate_fit(1, results, [])
    want = _average_unblocked(replies, [30, 10, 20])
    got = [np.load(io.BytesIO(t), allow_pickle=False) for t in params.tensors]
    assert [g.tobytes() for g in got] == [w.tobytes() for w in want]
    assert list(seen[0].trunk) == list(trunk_shapes(plan))
    # the replies' payloads were let go before the round was recorded: no partner trunk outlives the average
    assert all(not res.parameters.tensors for _, res in results)
    assert all(u.arrays is None for u in seen[0].updates)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_arrays_inflate_in_one_copy_to_the_bytes_flower_builds(monkeypatch, server_identity, dtype):
    from flwr.app import Array, ArrayRecord, RecordDict
    from flwr.app.message import array as array_mod
    from flwr.app.message.arraychunk import ArrayChunk
    from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects
    from flwr.supercore.inflatable.inflatable_utils import inflate_object_from_contents

    from consortium.flower_tuning import inflate_arrays_in_one_copy
    from consortium.strategy import parameters_to_views

    for cls in (Array, ArrayChunk):  # restored after the test
        monkeypatch.setattr(cls, "inflate", cls.__dict__["inflate"])
    monkeypatch.setattr(array_mod, "FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE", 1000)  # many chunks, some repeated
    values = np.concatenate([np.zeros(3000), np.arange(2500) / 7, np.zeros(1000)]).astype(dtype)
    params = ndarrays_to_parameters([values, values[:7].reshape(7, 1)])
    msg = Message(RecordDict({"p": ArrayRecord({str(i): Array(data=t, dtype="", stype="numpy.ndarray", shape=())
                                                for i, t in enumerate(params.tensors)})}), 1, "train", group_id="1")

    def received() -> list[bytes]:
        contents = {oid: obj.deflate() for oid, obj in get_all_nested_objects(msg).items()}
        back = inflate_object_from_contents(msg.object_id, contents)
        return [a.data for a in back.content.array_records["p"].values()]

    plain = received()
    assert plain == params.tensors
    inflate_arrays_in_one_copy()
    inflate_arrays_in_one_copy()  # twice is once
    assert getattr(Array.inflate, "one_copy", False)
    assert received() == plain
    assert np.array_equal(parameters_to_views(type(params)(received(), "numpy.ndarray"))[0], values)



@pytest.mark.parametrize("array", [*ARRAYS, np.arange(10, dtype=np.float32)[::2]])
def test_npy_bytes_are_the_bytes_np_save_writes(array):
    from flwr.common import ndarray_to_bytes

    from consortium.strategy import npy_bytes

    assert npy_bytes(array) == ndarray_to_bytes(array) == _npy(array)


def test_blocked_reply_checks_find_what_whole_array_checks_find(monkeypatch):
    from consortium.strategy import check_trunk, check_update

    monkeypatch.setattr(strategy_mod, "CHECK_BLOCK", 5)
    plan = tiny_plan()
    sent = list(initial_trunk(plan, 0).values())
    bad = [a.copy() for a in sent]
    bad[0].reshape(-1)[-1] = np.nan  # in the ragged last block
    with pytest.raises(ReplyRefused, match="NaN"):
        check_trunk(bad, plan)
    check_trunk(sent, plan)
    # the norm bound: the blocked sums agree with the whole-array norm to float32 rounding
    bound = plan.federation.max_update_norm * max(np.sqrt(sum(float(np.dot(r.ravel(), r.ravel())) for r in sent)), 1.0)
    direction = [np.ones_like(a) for a in sent]
    unit = np.sqrt(sum(d.size for d in direction))
    near = [a + d * np.float32(0.98 * bound / unit) for a, d in zip(sent, direction, strict=True)]
    far = [a + d * np.float32(1.02 * bound / unit) for a, d in zip(sent, direction, strict=True)]
    check_update(near, sent, plan)
    with pytest.raises(ReplyRefused, match="max_update_norm"):
        check_update(far, sent, plan)
    half = with_federation(plan, wire_dtype="float16")
    check_update([a.astype(np.float16) for a in near], sent, half)  # a float16 reply against the float32 trunk
