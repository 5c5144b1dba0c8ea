"""Flower tuned for second-long rounds: the server's reply polling, shorter waits, serializing a record once."""

from __future__ import annotations

import time

import pytest
from cons_helpers import scripted_app, tiny_plan
from flwr.app import ConfigRecord, Message
from flwr.common import GetPropertiesIns
from flwr.common.constant import MessageTypeLegacy
from flwr.compat.common.recorddict_compat import getpropertiesins_to_recorddict
from flwr.supercore.inflatable import inflatable_utils
from flwr.supercore.inflatable.inflatable_utils import ObjectUnavailableError

from consortium.embedded import InProcessGrid, node_id_for
from consortium.flower_tuning import CappedSleep, cache_config_record_deflate, shorten_object_pull_backoff
from consortium.server_app import REPLY_POLL_S, GuardedGrid, probe_examples
from partner_kit.supernode import DEFAULT_POLL_S, split_poll_interval

PARTNERS = {"A": (1.0, 10, ""), "B": (2.0, 20, "")}


class LateGrid(InProcessGrid):
    """Replies become visible only from the `late`-th pull on, as when partners are still computing."""

    def __init__(self, *args, late: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.late, self.pulls = late, 0

    def pull_messages(self, message_ids):
        self.pulls += 1
        return super().pull_messages(message_ids) if self.pulls >= self.late else []


class Notes:
    def __init__(self) -> None:
        self.refused: list[tuple[int, str]] = []

    def on_refused(self, node: int, reason: str) -> None:
        self.refused.append((node, reason))


def _grid(late: int) -> LateGrid:
    return LateGrid(scripted_app(PARTNERS), {node_id_for(n): {"name": n} for n in PARTNERS}, late=late)


def test_server_keeps_pulling_until_every_reply_is_in_at_the_short_poll_interval(server_identity):
    inner = _grid(late=4)
    started = time.monotonic()
    counts = probe_examples(GuardedGrid(inner, tiny_plan(), Notes()), [node_id_for(n) for n in PARTNERS],
                            tiny_plan())
    elapsed = time.monotonic() - started
    assert counts == {node_id_for("A"): 10, node_id_for("B"): 20}
    assert inner.pulls == 4
    assert 3 * REPLY_POLL_S <= elapsed < 3 * REPLY_POLL_S + 2.0  # Flower's own loop would wait 3 x 3 s


def test_server_pull_gives_up_at_the_timeout_with_the_replies_it_has(server_identity):
    inner = _grid(late=10**9)
    grid = GuardedGrid(inner, tiny_plan(), Notes())
    content = getpropertiesins_to_recorddict(GetPropertiesIns({}))
    msgs = [Message(content, node_id_for("A"), MessageTypeLegacy.GET_PROPERTIES, group_id="0")]
    started = time.monotonic()
    assert list(grid.send_and_receive(msgs, timeout=0.3)) == []
    assert 0.3 <= time.monotonic() - started < 1.5


def test_config_record_serialized_once_gives_the_same_bytes_and_notices_every_change():
    big = b"\x01" * 5_000_000
    record = ConfigRecord({"masked": [big, b"tail"], "stage": "collect", "n": 3})
    expected = record.deflate()
    cache_config_record_deflate()
    cache_config_record_deflate()  # idempotent: no cache around a cache
    assert record.deflate() == expected and record.deflate() is record.deflate()
    fresh_id = ConfigRecord({"masked": [big, b"tail"], "stage": "collect", "n": 3}).object_id
    assert record.object_id == fresh_id

    record["n"] = 4  # an assignment
    assert record.deflate() != expected
    assert record.object_id == ConfigRecord({"masked": [big, b"tail"], "stage": "collect", "n": 4}).object_id
    record["masked"].append(b"more")  # an in-place change of a list value
    assert record.object_id == ConfigRecord({"masked": [big, b"tail", b"more"], "stage": "collect",
                                             "n": 4}).object_id
    record["masked"][0] = b"\x01" * 5_000_000  # equal content, another object: same bytes, recomputed
    assert record.object_id == ConfigRecord({"masked": [big, b"tail", b"more"], "stage": "collect",
                                             "n": 4}).object_id


def test_object_pulls_retry_within_a_fraction_of_a_second_not_flowers_one_second():
    tries = []

    def pull(object_id: str) -> bytes:
        tries.append(time.monotonic())
        if len(tries) < 3:  # the writer is still uploading
            raise ObjectUnavailableError(object_id)
        return b"content"

    shorten_object_pull_backoff()
    started = time.monotonic()
    assert inflatable_utils.pull_objects(["obj"], pull) == {"obj": b"content"}
    assert time.monotonic() - started < 0.5  # Flower 1.42's defaults: 1 s + 2 s
    assert inflatable_utils.pull_objects.__kwdefaults__["max_tries_per_object"] == 500  # retries unchanged


def test_capped_sleep_never_waits_longer_than_the_cap_and_keeps_the_clock():
    capped = CappedSleep(0.05)
    started = time.monotonic()
    capped.sleep(3)
    assert time.monotonic() - started < 1.0
    assert capped.monotonic() >= started and capped.time() > 0
    with pytest.raises(ValueError, match="positive"):
        CappedSleep(0)


def test_supernode_poll_interval_is_taken_out_of_flowers_arguments():
    args = ["--insecure", "--superlink", "127.0.0.1:9092", "--node-config", 'name="A"']
    assert split_poll_interval(["--poll-interval", "0.5", *args]) == (0.5, args)
    assert split_poll_interval([*args, "--poll-interval=0.1"]) == (0.1, args)
    assert split_poll_interval(args) == (DEFAULT_POLL_S, args)
    with pytest.raises(SystemExit, match="positive"):
        split_poll_interval(["--poll-interval", "0", *args])
