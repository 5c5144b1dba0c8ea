"""Flower 1.42 tuned for a federation whose rounds take seconds: shorter fixed waits, no repeated serialization.

A deployed round moves each message over two hops (ServerApp -> SuperLink -> SuperNode -> ClientApp and back),
and Flower waits between polls at every hop: a SuperNode sleeps 3 s when its pull finds nothing and 0.5 s
while a reply is being computed; a reader that asks for a message's objects before the writer has uploaded
them backs off 1 s, then 2 s, ... (`inflatable_utils.pull_objects`). With a round's compute under a second
these waits were most of the round (measured in BENCHMARKS.md). Separately, a `ConfigRecord` re-serializes
itself every time its object id is asked for (it never reports itself clean), which is cheap for settings
but not for SecAgg+'s masked trunk (a ConfigRecord of int64 bytes): ~12 serializations of 62 MiB per reply.

Nothing here changes what is sent or how: only how long a process waits before asking again, and that an
unchanged record is serialized once. Each process that wants it calls the functions once: the ServerApp
(`consortium.server_app`), the SuperNode (`partner_kit.supernode`) and the ClientApp parent
(`partner_kit.warm_exec`). `partner-kit join --cold` runs Flower untouched.
"""

from __future__ import annotations

import json
import time as _time
from types import ModuleType
from typing import Any

#: First retry after an object was not yet uploaded (Flower: 1 s), doubling up to the cap (Flower: 10 s).
OBJECT_PULL_BACKOFF_S = 0.05
OBJECT_PULL_BACKOFF_CAP_S = 2.0


def shorten_object_pull_backoff(initial: float = OBJECT_PULL_BACKOFF_S, cap: float = OBJECT_PULL_BACKOFF_CAP_S
                                ) -> None:
    """Retry unavailable message objects after `initial` s (doubling to `cap`) in this process."""
    from flwr.supercore.inflatable import inflatable_utils

    for fn in (inflatable_utils.pull_objects, inflatable_utils.pull_and_inflate_object_from_tree):
        _set_default(fn, "initial_backoff", float(initial))
        _set_default(fn, "backoff_cap", float(cap))


def _set_default(fn: Any, name: str, value: float) -> None:
    """Change a keyword-only default in place, so callers that rely on it (all of Flower's) get `value`."""
    if not fn.__kwdefaults__ or name not in fn.__kwdefaults__:
        raise RuntimeError(f"{fn.__module__}.{fn.__qualname__} has no keyword {name!r}: this Flower is not the "
                           "version the consortium was tuned for (1.42); pin flwr==1.42.* or use --cold")
    fn.__kwdefaults__[name] = value


class CappedSleep:
    """Stands in for the `time` module inside one Flower module: its sleeps last at most `cap` seconds."""

    def __init__(self, cap: float, clock: ModuleType = _time) -> None:
        if not cap > 0:
            raise ValueError("the sleep cap must be a positive number of seconds")
        self.cap, self._clock = float(cap), clock

    def sleep(self, seconds: float) -> None:
        self._clock.sleep(min(float(seconds), self.cap))

    def __getattr__(self, name: str) -> Any:  # time.time, time.monotonic, ... unchanged
        return getattr(self._clock, name)


def cap_supernode_waits(cap: float) -> None:
    """A SuperNode in this process polls its SuperLink (and its ClientApp's reply) every `cap` seconds."""
    from flwr.supernode import start_client_internal as loop

    loop.time = CappedSleep(cap)  # type: ignore[assignment]  (only that module's sleeps are capped)


def cache_config_record_deflate() -> None:
    """Serialize an unchanged `ConfigRecord` once: later calls return the same bytes.

    "Unchanged" is checked on every call: the cache key is the record's keys and values, with bytes values
    (the big ones) compared by identity; the cache keeps those objects alive, so an identity cannot be reused
    while it is cached. Any assignment, deletion or in-place list change gives another key.
    """
    from flwr.app.message.configrecord import ConfigRecord

    original = ConfigRecord.deflate
    if getattr(original, "cached", False):
        return

    def deflate(self: ConfigRecord) -> bytes:
        key = tuple((k, _value_key(v)) for k, v in self.items())
        hit = self.__dict__.get("_deflate_cache")
        if hit is not None and hit[0] == key:
            return hit[2]
        body = original(self)
        self.__dict__["_deflate_cache"] = (key, list(self.values()), body)
        return body

    deflate.cached = True  # type: ignore[attr-defined]
    ConfigRecord.deflate = deflate  # type: ignore[method-assign]


def inflate_arrays_in_one_copy() -> None:
    """Rebuild a received array from its chunks with one copy instead of three (this process).

    Flower 1.42 copies each 5 MB chunk's body out of the pulled object, appends the chunks to a bytearray and
    copies that into bytes: three copies of every received trunk (py-spy: ~45 % of the ServerApp's busy time
    at a 64 M-parameter trunk, three partners). Here a chunk keeps a view of its pulled object and the array
    joins the views straight into its bytes. Same bytes, same checks (object type, children), fewer copies.
    """
    from flwr.app.message.array import Array
    from flwr.app.message.arraychunk import ArrayChunk
    from flwr.supercore.constant import HEAD_BODY_DIVIDER
    from flwr.supercore.inflatable.inflatable_object import (
        get_object_body,
        get_object_children_ids_from_object_content,
        get_object_type_from_object_content,
    )

    if getattr(Array.inflate, "one_copy", False):
        return
    original = Array.inflate.__func__

    def chunk_inflate(cls: type, object_content: bytes, children: dict | None = None) -> ArrayChunk:
        if children:
            raise ValueError("`ArrayChunk` objects do not have children.")
        object_type = get_object_type_from_object_content(object_content)
        if object_type != cls.__qualname__:
            raise ValueError(f"Class name ({cls.__qualname__}) and object type ({object_type}) do not match.")
        start = object_content.find(HEAD_BODY_DIVIDER) + len(HEAD_BODY_DIVIDER)
        return cls(data=memoryview(object_content)[start:])

    def array_inflate(cls: type, object_content: bytes, children: dict | None = None) -> Array:
        # Flower's own inflate with empty chunks checks the metadata and the children; then one join.
        chunks = children or {}
        array = original(cls, object_content, {k: ArrayChunk(memoryview(b"")) for k in chunks})
        ids = get_object_children_ids_from_object_content(object_content)
        order = json.loads(get_object_body(object_content, cls).decode("utf-8"))["arraychunk_ids"]
        array.data = b"".join(chunks[ids[i]].data for i in order)
        return array

    ArrayChunk.inflate = classmethod(chunk_inflate)  # type: ignore[method-assign,assignment]
    array_inflate.one_copy = True  # type: ignore[attr-defined]
    Array.inflate = classmethod(array_inflate)  # type: ignore[method-assign,assignment]


def _value_key(value: Any) -> Any:
    if isinstance(value, bytes):
        return ("bytes", id(value), len(value))
    if isinstance(value, list):
        return ("list", tuple(_value_key(v) for v in value))
    return (type(value).__name__, value)
