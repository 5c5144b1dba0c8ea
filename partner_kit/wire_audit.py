"""A partner-side record of everything this partner sends: `partner-kit join --audit-log FILE`.

A Flower mod, outermost around the ClientApp (after SecAgg+ masking), so it sees each reply exactly as it
leaves the machine. It writes one JSON line per outgoing message: the message type, and for every record its
keys with value types and sizes (array dtypes and shapes, byte counts, string lengths) — never the values,
so the log itself holds nothing sensitive. A partner's compliance team can read it to confirm that only trunk
arrays, an example count, one loss and the reference hash ever left.
"""

from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # `partner-kit` must start without importing Flower; the mod only reads attributes
    from flwr.app import Context, Message
    from flwr.clientapp.typing import ClientAppCallable

AUDIT_KEY = "audit-log"  # node config key naming the log file


def _value(v: Any) -> dict[str, Any]:
    if isinstance(v, bytes):
        return {"type": "bytes", "size": len(v)}
    if isinstance(v, str):
        return {"type": "str", "size": len(v)}
    if isinstance(v, list):
        return {"type": "list", "size": len(v), "items": sorted({type(x).__name__ for x in v}),
                "bytes": sum(len(x) for x in v if isinstance(x, bytes | str))}
    return {"type": type(v).__name__}


def _array(a: Any) -> dict[str, Any]:
    """dtype and shape of a Flower Array; legacy (NumPyClient) arrays carry them only in their .npy header."""
    dtype, shape = str(a.dtype), list(a.shape)
    if not dtype and a.stype == "numpy.ndarray":
        import io

        import numpy as np

        buf = io.BytesIO(a.data)
        major, _ = np.lib.format.read_magic(buf)
        read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        found, _, kind = read(buf)  # header only, never the values
        shape, dtype = list(found), str(kind)
    return {"dtype": dtype, "shape": shape, "bytes": len(a.data)}


def describe(msg: Message) -> dict[str, Any]:
    """Keys, types and sizes of an outgoing message's content (no values)."""
    entry: dict[str, Any] = {"time": round(time.time(), 3), "message_type": msg.metadata.message_type}
    if not msg.has_content():
        entry["error"] = True
        return entry
    content = msg.content
    entry["arrays"] = {name: [{"key": k, **_array(a)} for k, a in record.items()]
                       for name, record in content.array_records.items()}
    entry["metrics"] = {name: {k: _value(v) for k, v in record.items()}
                        for name, record in content.metric_records.items()}
    entry["configs"] = {name: {k: _value(v) for k, v in record.items()}
                        for name, record in content.config_records.items()}
    return entry


def audit_mod(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
    """Pass the message on; log the reply's shape if the node config names an audit log."""
    reply = call_next(msg, ctxt)
    path = ctxt.node_config.get(AUDIT_KEY)
    if path:
        line = (json.dumps(describe(reply), sort_keys=True) + "\n").encode()
        fd = os.open(str(path), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:  # one write per line: forked ClientApps may append at the same time
            os.write(fd, line)
        finally:
            os.close(fd)
    return reply
