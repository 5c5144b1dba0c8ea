"""Helpers for consortium tests: tiny plans and scripted partner ClientApps that exercise the server.

The scripted partners are test partners (honest ones that add a known offset, dishonest ones that send a head
array or an extra key), so the server's arithmetic and its refusals can be checked exactly without training.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from flwr.client import ClientApp, NumPyClient
from flwr.client.mod import secaggplus_mod

from consortium.plan import FederationSpec, Plan, TrunkSpec
from data_prep.config import FingerprintConfig, PrepConfig


def tiny_plan(*, rounds: int = 2, min_partners: int = 3, secure_aggregation: bool = False, **fed) -> Plan:
    return Plan(
        name="test-consortium",
        data=PrepConfig(fingerprint=FingerprintConfig(size=128)),
        trunk=TrunkSpec(hidden_sizes=[8, 4]),
        federation=FederationSpec(rounds=rounds, min_partners=min_partners, secure_aggregation=secure_aggregation,
                                  **fed),
    )


def with_federation(plan: Plan, **kw) -> Plan:
    return dataclasses.replace(plan, federation=dataclasses.replace(plan.federation, **kw))


GOOD_HASH, OTHER_KEY_HASH = "ab" * 32, "cd" * 32  # stand-ins for `data-prep reference-hash` results
LOSS_CHEATS = {"text": "CC(=O)Oc1ccccc1C(=O)O", "bytes": b"CCO", "nan": float("nan"), "inf": float("inf")}


class ScriptedPartner(NumPyClient):
    """Adds `offset` to every trunk value and reports `examples`; `cheat` adds something that must not leave.

    cheat: "" (honest) | "head" (an extra array) | "metric" (an extra metric key) | "shape" (a transposed array)
    | "count" (claims 10**15 examples) | "huge" (finite 1e30 weights) | "text" / "bytes" / "nan" / "inf" (a loss
    that is a SMILES string, bytes, NaN or infinity) | "key" (the reference hash of another secret key)
    | "nohash" (no reference hash at all)
    """

    def __init__(self, offset: float, examples: int, cheat: str = "") -> None:
        self.offset, self.examples, self.cheat = offset, examples, cheat
        self.seen_configs: list[dict] = []

    def get_properties(self, config):
        return {"num_examples": self.examples}

    def fit(self, parameters, config):
        arrays = [np.asarray(p, dtype=np.float32) + np.float32(self.offset) for p in parameters]
        metrics = {"loss": float(self.offset), "reference_hash": OTHER_KEY_HASH if self.cheat == "key" else GOOD_HASH}
        if self.cheat == "nohash":
            del metrics["reference_hash"]
        if self.cheat == "head":
            arrays.append(np.ones((4, 3), np.float32))
        elif self.cheat == "metric":
            metrics["auc_task_17"] = 0.9
        elif self.cheat == "shape":
            arrays[0] = arrays[0].T.copy()
        elif self.cheat == "huge":
            arrays = [np.full_like(a, 1e30) for a in arrays]
        elif self.cheat in LOSS_CHEATS:
            metrics["loss"] = LOSS_CHEATS[self.cheat]
        return arrays, 10**15 if self.cheat == "count" else self.examples, metrics

    def evaluate(self, parameters, config):
        return 0.5, self.examples, {}


def scripted_app(partners: dict[str, tuple[float, int, str]], secagg: bool = False) -> ClientApp:
    """A ClientApp whose behaviour per node comes from `partners[node_config['name']]`."""

    def client_fn(context):
        offset, examples, cheat = partners[str(context.node_config["name"])]
        return ScriptedPartner(offset, examples, cheat).to_client()

    return ClientApp(client_fn=client_fn, mods=[secaggplus_mod] if secagg else [])
