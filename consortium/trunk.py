"""Trunk arrays as the consortium sees them: an ordered name -> array mapping fixed by the plan.

On the wire a trunk is Flower's list of arrays in the order of `consortium.plan.trunk_shapes(plan)`; here it
becomes a named dict again, so checkpoints, hashes and checks all speak the plan's array names.
"""

from __future__ import annotations

import hashlib

import numpy as np

from consortium.plan import Plan, trunk_shapes

#: dtypes a trunk array may travel in, by the plan's `federation.wire_dtype`.
WIRE_DTYPES = {"float32": np.dtype(np.float32), "float16": np.dtype(np.float16)}


def trunk_names(plan: Plan) -> list[str]:
    return list(trunk_shapes(plan))


def to_list(plan: Plan, trunk: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Named trunk -> Flower's ordered list (the order of `trunk_shapes`)."""
    return [np.ascontiguousarray(trunk[name]) for name in trunk_names(plan)]


def to_dict(plan: Plan, arrays: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Flower's ordered list -> named trunk; the caller has checked count and shapes."""
    return dict(zip(trunk_names(plan), arrays, strict=True))


def to_wire(plan: Plan, arrays: list[np.ndarray]) -> list[np.ndarray]:
    """Cast to the plan's wire dtype (float16 halves the bytes; aggregation is float64 anyway)."""
    dtype = WIRE_DTYPES[plan.federation.wire_dtype]
    return [np.ascontiguousarray(a, dtype=dtype) for a in arrays]


def trunk_sha256(trunk: dict[str, np.ndarray]) -> str:
    """SHA-256 over names, dtypes, shapes and float32 bytes in name order: equal trunks, equal hashes."""
    digest = hashlib.sha256()
    for name in sorted(trunk):
        arr = np.ascontiguousarray(trunk[name], dtype=np.float32)
        digest.update(f"{name}|{arr.dtype.str}|{arr.shape}\n".encode())
        digest.update(raw_bytes(arr))
    return digest.hexdigest()


def raw_bytes(arr: np.ndarray) -> memoryview:
    """An array's bytes in C order, in place when it is C-contiguous (what `tobytes()` returns, without the
    256 MiB copy of a 32000 x 2000 trunk); 1-d first, so empty and 0-d arrays cast too."""
    return memoryview(np.ascontiguousarray(arr).reshape(-1)).cast("B")


def initial_trunk(plan: Plan, seed: int) -> dict[str, np.ndarray]:
    """A deterministic starting trunk from the plan seed, so every run of one plan starts alike.

    Same scheme as torch's default layer init (uniform in ±1/sqrt(fan_in)), generated with numpy so the
    server needs no torch and the result does not depend on the torch version.
    """
    rng = np.random.default_rng([int(seed), 0x7255])
    out: dict[str, np.ndarray] = {}
    sizes = [int(h) for h in plan.trunk.hidden_sizes]
    fan_ins = {"input": plan.n_features, **{f"hidden.{i}": sizes[i] for i in range(len(sizes) - 1)}}
    for name, shape in trunk_shapes(plan).items():
        layer = name.rsplit(".", 1)[0]
        bound = 1.0 / np.sqrt(fan_ins[layer])
        out[name] = rng.uniform(-bound, bound, size=shape).astype(np.float32)
    return out
