"""The federation in one process: the deployed ServerApp logic and ClientApps, joined by an in-process grid.

No Ray, no sockets: `InProcessGrid` implements Flower's `Grid` by calling the partner `ClientApp` directly
with a per-partner `Context`, exactly what a SuperNode would do. Every message still goes through Flower's
protobuf serialization both ways, so the partner code sees the same records as on the wire (no shared
objects) and the bytes each partner would send and receive are counted.
"""

from __future__ import annotations

import copy
import hashlib
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from uuid import uuid4

from flwr.app import Array, ArrayRecord, Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.common.serde import recorddict_from_proto, recorddict_to_proto
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

from consortium.server_app import RunSettings, run_server


class PartnerFailed(RuntimeError):
    """A partner's ClientApp raised; embedded runs stop with the partner's own message."""


def _varint_len(n: int) -> int:
    return max(1, (n.bit_length() + 6) // 7)


def _grown(size: int, delta: int) -> int:
    """How much a length-delimited field grows when its message grows by `delta` bytes (body + length prefix)."""
    return delta + _varint_len(size + delta) - _varint_len(size)


def _wire_copy(content: RecordDict) -> tuple[RecordDict, int]:
    """The content as the receiver would decode it from the wire, and its serialized size in bytes.

    Everything goes through Flower's protobuf serde except the array payloads: those are immutable `bytes`, so
    the copy shares them instead of copying them twice per message (at a 64 M-parameter trunk the two copies
    and their page faults were most of an embedded round). The size is still exact: the payloads' bytes are
    added to the stripped message's size level by level, with each length prefix recomputed.
    """
    stripped = RecordDict()
    payloads: dict[str, dict[str, bytes]] = {}
    for name, record in content.items():
        if isinstance(record, ArrayRecord) and all(isinstance(a.data, bytes) for a in record.values()):
            payloads[name] = {k: a.data for k, a in record.items()}
            stripped[name] = ArrayRecord({k: _with_data(a, b"") for k, a in record.items()})
        else:
            stripped[name] = record
    proto = recorddict_to_proto(stripped)
    size = proto.ByteSize()
    for item in proto.items:
        if item.key not in payloads:
            continue
        rec, d_rec = item.array_record, 0
        for entry in rec.items:
            n = len(payloads[item.key][entry.key])
            d_arr = 1 + _varint_len(n) + n if n else 0  # field `data` (tag 1 byte) was empty, so absent
            d_rec += _grown(entry.ByteSize(), _grown(entry.value.ByteSize(), d_arr))
        size += _grown(item.ByteSize(), _grown(rec.ByteSize(), d_rec))
    copy_ = recorddict_from_proto(proto)
    for name, datas in payloads.items():
        record = copy_[name]
        for k, data in datas.items():
            record[k] = _with_data(record[k], data)
    return copy_, size


def _with_data(a: Array, data: bytes) -> Array:
    """The same array description (dtype, shape, serialization type) over another payload."""
    return Array(dtype=a.dtype, shape=tuple(a.shape), stype=a.stype, data=data)


def node_id_for(name: str) -> int:
    """A stable node id per partner name (deployed runs get random ones from the SuperLink)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:7], "little") + 2


class InProcessGrid(Grid):
    """A `Grid` whose nodes are ClientApps called in this process, one after another."""

    def __init__(self, client_app: ClientApp, node_configs: dict[int, dict[str, Any]], *, run_id: int = 1,
                 raise_errors: bool = True) -> None:
        self.client_app = client_app
        self.contexts = {nid: Context(run_id=run_id, node_id=nid, node_config=dict(cfg), state=RecordDict(),
                                      run_config={}) for nid, cfg in node_configs.items()}
        self.raise_errors = raise_errors
        self._run = Run.create_empty(run_id)
        self._replies: dict[str, Message] = {}
        self.bytes_in: Counter[int] = Counter()   # server -> node
        self.bytes_out: Counter[int] = Counter()  # node -> server
        self.seconds: Counter[int] = Counter()    # time spent in each node's ClientApp

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = uuid4().hex
            nid = msg.metadata.dst_node_id
            if nid not in self.contexts:
                raise KeyError(f"no partner with node id {nid}")
            content, size = _wire_copy(msg.content)
            self.bytes_in[nid] += size
            delivered = Message(metadata=copy.copy(msg.metadata), content=content)
            t0 = time.perf_counter()
            try:
                reply = self.client_app(delivered, self.contexts[nid])
            except Exception as exc:
                if self.raise_errors:
                    name = self.contexts[nid].node_config.get("name", nid)
                    raise PartnerFailed(f"partner {name}: {exc}") from exc
                reply = Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=repr(exc)),
                                reply_to=delivered)
            self.seconds[nid] += time.perf_counter() - t0
            if reply.has_content():
                content, size = _wire_copy(reply.content)
                self.bytes_out[nid] += size
                reply = Message(metadata=copy.copy(reply.metadata), content=content)
            reply.metadata.__dict__["_message_id"] = uuid4().hex
            self._replies[msg.metadata.message_id] = reply
            ids.append(msg.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(i) for i in list(message_ids) if i in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return self.pull_messages(self.push_messages(messages))


def run_embedded(settings: RunSettings, client_app: ClientApp, partners: dict[str, dict[str, Any]],
                 *, raise_errors: bool = True) -> tuple[dict[str, Any], InProcessGrid]:
    """Run the server logic against in-process partners (name -> node config); returns (status, grid)."""
    node_configs = {node_id_for(name): {**cfg, "name": name} for name, cfg in partners.items()}
    grid = InProcessGrid(client_app, node_configs, raise_errors=raise_errors)
    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = grid.run.run_id, SUPERLINK_NODE_ID, 1
    try:
        context = Context(run_id=grid.run.run_id, node_id=SUPERLINK_NODE_ID, node_config={}, state=RecordDict(),
                          run_config={})
        status = run_server(grid, context, settings)
    finally:
        TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved
    names = {nid: cfg["name"] for nid, cfg in node_configs.items()}
    status["partners"] = {names[n]: n for n in names}
    Path(settings.run_dir).mkdir(parents=True, exist_ok=True)
    return status, grid
