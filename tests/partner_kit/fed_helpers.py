"""Helpers for federated tests: a small consortium of synthetic partners on disk (plan file, prepared dirs)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from pk_helpers import small_plan, synthetic_data

from consortium.embedded import run_embedded
from consortium.plan import FederationSpec, Plan
from consortium.server_app import RunSettings
from partner_kit.client_app import app as partner_app
from partner_kit.federated import PartnerConfig

ROWS = (240, 300, 360)


@dataclass
class Federation:
    root: Path
    plan: Plan
    plan_path: Path
    prepared: dict[str, Path]

    def partners(self, models: str = "model", hashes: dict[str, str] | None = None) -> dict[str, PartnerConfig]:
        return {name: PartnerConfig(plan=self.plan_path, prepared=p, model=self.root / name / models, name=name,
                                    reference_hash=(hashes or {}).get(name, ""))
                for name, p in self.prepared.items()}

    def reference_hashes(self, models: str = "model", key: Path | None = None) -> dict[str, str]:
        """Each partner's reference hash with `key` (default: one consortium key), cached in its model dir as
        `partner-kit join --key` leaves it; the reference set is standardized once per federation."""
        from data_prep.key import generate_key
        from partner_kit.reference import partner_reference_hash

        if key is None:
            key = self.root / "secret.key"
            if not key.exists():
                generate_key(key)
        return {name: partner_reference_hash(cfg.plan, {}, cfg.prepared, cfg.model, key,
                                             cache_dir=self.root / "std-cache")
                for name, cfg in self.partners(models).items()}

    def run(self, run_dir: str = "run", models: str = "model", rounds: int | None = None, resume: bool = False,
            plan: Plan | None = None, client_app=partner_app, grid_hook=None):
        settings = RunSettings(plan=plan or self.plan, run_dir=self.root / run_dir,
                               rounds=rounds or self.plan.federation.rounds, resume=resume, mode="embedded")
        return run_embedded(settings, client_app,
                            {n: c.to_node_config() for n, c in self.partners(models).items()})


def make_federation(root: Path, *, rounds: int = 2, schedule: str = "local_steps", local_steps: int = 4,
                    local_epochs: int = 1, secure_aggregation: bool = False, fp16_wire: bool = False,
                    rows: tuple[int, ...] = ROWS, min_partners: int | None = None,
                    **federation: object) -> Federation:
    plan = small_plan(n_features=256, hidden=(32, 16))
    plan = dataclasses.replace(plan, federation=FederationSpec(
        rounds=rounds, schedule=schedule, local_steps=local_steps, local_epochs=local_epochs,
        min_partners=min_partners or len(rows), secure_aggregation=secure_aggregation,
        wire_dtype="float16" if fp16_wire else "float32",
        **federation))
    root.mkdir(parents=True, exist_ok=True)
    plan_path = plan.save(root / "plan.toml")
    prepared = {}
    for i, n in enumerate(rows):
        name = "ABCDEF"[i]
        data = synthetic_data(plan, n_rows=n, n_class=3, n_regr=1, seed=10 + i)
        prepared[name] = data.save(root / name / "prepared")
    return Federation(root, plan, plan_path, prepared)
