"""`federation.batches = "epochs"`: a partner's rounds walk one stream of shuffled epochs; runs resume exactly."""

from __future__ import annotations

import numpy as np
from fed_helpers import make_federation

from consortium.ledger import verify
from partner_kit.batching import stream_batches


def test_every_row_is_seen_once_per_epoch_however_the_steps_are_split_into_rounds():
    rows = np.arange(100, 203)  # 103 rows, batches of 10: 10 full batches per epoch, 3 rows wait each epoch
    whole = list(stream_batches(rows, 10, 0, 30, seed=4))
    split = [b for r in range(6) for b in stream_batches(rows, 10, r * 5, 5, seed=4)]  # 6 rounds of 5 steps
    assert all(np.array_equal(a, b) for a, b in zip(whole, split, strict=True))
    for epoch in range(3):
        seen = np.concatenate(whole[epoch * 10:(epoch + 1) * 10])
        assert len(seen) == 100 and len(np.unique(seen)) == 100 and set(seen) <= set(rows)
    assert not np.array_equal(np.concatenate(whole[:10]), np.concatenate(whole[10:20]))  # reshuffled


def test_epoch_stream_federation_resumes_exactly_and_differs_from_per_round_batches(tmp_path):
    fed = make_federation(tmp_path / "e", rounds=3, batches="epochs")
    fed.run("whole", "model-whole")
    fed.run("split", "model-split", rounds=2)
    fed.run("split", "model-split", rounds=3, resume=True)
    whole = [e.trunk_sha256 for e in verify(tmp_path / "e" / "whole" / "ledger.jsonl")]
    split = [e.trunk_sha256 for e in verify(tmp_path / "e" / "split" / "ledger.jsonl")]
    assert whole == split
    other = make_federation(tmp_path / "r", rounds=3, batches="per_round")
    other.run()
    assert [e.trunk_sha256 for e in verify(tmp_path / "r" / "run" / "ledger.jsonl")] != whole
