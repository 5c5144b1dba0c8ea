"""Real partners, embedded: what the server receives under SecAgg+ (never a partner's plaintext trunk), and the
differential-privacy clipping as it leaves each partner.

The replies are captured where the server receives them (the in-process grid under the server's `GuardedGrid`);
each partner's plaintext trunk is what its own `PartnerClient.fit` returned, before Flower's SecAgg+ mod masked
it (a spy subclass: the real partner code runs unchanged).
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from fed_helpers import make_federation
from flwr.client import ClientApp
from flwr.common import bytes_to_ndarray

import consortium.embedded as embedded
from consortium.checkpoints import checkpoint_path, load_checkpoint
from consortium.ledger import verify
from consortium.privacy import allowed_norm, epsilon, update_norm
from consortium.strategy import weighted_average
from consortium.trunk import to_list
from partner_kit.client_app import PartnerClient, plan_secagg_mod
from partner_kit.federated import PartnerConfig, get_partner


class RecordingGrid(embedded.InProcessGrid):
    """The in-process grid, keeping a copy of every reply the server pulls (node id -> list of contents)."""

    received: dict[int, list] = {}

    def pull_messages(self, message_ids):
        replies = list(super().pull_messages(message_ids))
        for msg in replies:
            if msg.has_content():
                # A copy: Flower's legacy workflow empties the records it converts (keep_input=False).
                copy, _ = embedded._wire_copy(msg.content)
                RecordingGrid.received.setdefault(msg.metadata.src_node_id, []).append(copy)
        return replies


def spy_app(plain: dict) -> ClientApp:
    """The partner ClientApp (same mods), noting each partner's plaintext fit result per round."""

    class Spy(PartnerClient):
        def fit(self, parameters, config):
            arrays, n, metrics = super().fit(parameters, config)
            plain[(self.partner.cfg.name, int(config["round"]))] = ([np.array(a) for a in arrays], n)
            return arrays, n, metrics

    def client_fn(context):
        return Spy(get_partner(PartnerConfig.from_node_config(context.node_config))).to_client()

    return ClientApp(client_fn=client_fn, mods=[plan_secagg_mod])


def _arrays_and_blobs(content) -> tuple[list[np.ndarray], list[bytes]]:
    """Every array in a reply (array records and arrays serialized in config values) and every raw byte value."""
    arrays, blobs = [], []
    for record in content.array_records.values():
        arrays.extend(bytes_to_ndarray(a.data) for a in record.values())
    for record in content.config_records.values():
        for value in record.values():
            for v in value if isinstance(value, list) else [value]:
                if isinstance(v, bytes):
                    blobs.append(v)
                    with contextlib.suppress(ValueError, OSError):  # a key or an encrypted share: no array
                        arrays.append(bytes_to_ndarray(v))
    return arrays, blobs


def _leaks(content, trunk: list[np.ndarray]) -> list[str]:
    """Ways one reply gives away `trunk`: an equal array, a correlated one (|r| > 0.2), or its raw bytes."""
    found = []
    arrays, blobs = _arrays_and_blobs(content)
    for got in arrays:
        for want in trunk:
            if got.size != want.size:
                continue
            g, w = got.astype(np.float64).ravel(), want.astype(np.float64).ravel()
            if np.array_equal(g, w):
                found.append(f"array equal to a trunk array of shape {want.shape}")
            elif g.size >= 500 and g.std() > 0 and abs(np.corrcoef(g, w)[0, 1]) > 0.2:
                found.append(f"array correlated with a trunk array (r = {np.corrcoef(g, w)[0, 1]:.3f})")
    probe = np.ascontiguousarray(trunk[0], dtype=np.float32).ravel()[100:116].tobytes()
    found += ["the trunk's raw float32 bytes" for b in blobs if probe in b]
    return found


@pytest.fixture
def recording(monkeypatch):
    RecordingGrid.received = {}
    monkeypatch.setattr(embedded, "InProcessGrid", RecordingGrid)
    return RecordingGrid.received


def test_secagg_server_never_receives_a_partners_plaintext_trunk_and_gets_the_weighted_mean(tmp_path, recording):
    fed = make_federation(tmp_path, rounds=1, secure_aggregation=True)
    plain: dict = {}
    status, _ = fed.run(client_app=spy_app(plain))
    assert status["state"] == "finished"
    ids = status["partners"]
    for name in ids:  # every partner trained and returned a trunk, and the server received several messages
        assert (name, 1) in plain and len(recording[ids[name]]) >= 3
    for name, node in ids.items():
        trunk = plain[(name, 1)][0]
        leaks = [leak for content in recording[node] for leak in _leaks(content, trunk)]
        assert not leaks, f"{name}: {leaks}"
    # The aggregate is the example-weighted mean of the plaintext trunks, within SecAgg+'s quantization.
    expected = weighted_average([plain[(n, 1)][0] for n in ids], [plain[(n, 1)][1] for n in ids])
    got = to_list(fed.plan, load_checkpoint(checkpoint_path(tmp_path / "run", 1), fed.plan))
    step = 2 * fed.plan.federation.secagg_clipping_range / fed.plan.federation.secagg_quantization_range
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=0, atol=len(ids) * step * 1.01)
        assert not np.array_equal(g, e)  # quantized: not the plain float32 mean bit for bit


def test_plain_rounds_do_show_the_trunk_so_the_leak_check_can_fail(tmp_path, recording):
    fed = make_federation(tmp_path, rounds=1)
    plain: dict = {}
    status, _ = fed.run(client_app=spy_app(plain))
    for name, node in status["partners"].items():
        leaks = [leak for content in recording[node] for leak in _leaks(content, plain[(name, 1)][0])]
        assert any("equal" in leak for leak in leaks), name


def test_dp_clipping_bounds_every_update_a_partner_sends(tmp_path, recording):
    base = make_federation(tmp_path / "plain", rounds=1)
    plain: dict = {}
    base.run(client_app=spy_app(plain))
    start = to_list(base.plan, load_checkpoint(checkpoint_path(tmp_path / "plain" / "run", 0), base.plan))
    raw = {name: update_norm(arrays, start) for (name, _), (arrays, _) in plain.items()}
    clip = 0.5 * min(raw.values())  # every partner's own update is larger: all of them must clip
    fed = make_federation(tmp_path / "dp", rounds=2, dp_enabled=True, dp_clipping_norm=clip,
                          dp_noise_multiplier=1e-3)
    recording.clear()
    status, _ = fed.run()
    assert status["state"] == "finished" and not status["refused"]
    run = tmp_path / "dp" / "run"
    for node, contents in recording.items():
        fits = [c for c in contents if "fitres.parameters" in c.array_records]
        assert len(fits) == 2
        for rnd, content in enumerate(fits, start=1):
            sent = to_list(fed.plan, load_checkpoint(checkpoint_path(run, rnd - 1), fed.plan))
            arrays = [bytes_to_ndarray(a.data) for a in content.array_records["fitres.parameters"].values()]
            norm = update_norm(arrays, sent)
            assert norm <= allowed_norm(clip, sent), (node, rnd, norm, clip)
            assert norm == pytest.approx(clip, rel=1e-3)  # clipped to the bound, not zeroed


def test_dp_under_secagg_runs_and_records_epsilon(tmp_path):
    fed = make_federation(tmp_path, rounds=2, secure_aggregation=True, dp_enabled=True, dp_clipping_norm=0.5,
                          dp_noise_multiplier=0.5)
    status, _ = fed.run()
    assert status["state"] == "finished" and not status["refused"]
    entries = verify(tmp_path / "run" / "ledger.jsonl")
    assert [e.dp_epsilon for e in entries] == pytest.approx([epsilon(0.5, r, fed.plan.federation.dp_delta)
                                                             for r in (1, 2)])
