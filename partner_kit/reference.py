"""This partner's reference hash for admission: computed once per (plan, key, kit), then read from the model dir.

`data-prep reference-hash` prepares the kit's public reference set with the plan and the secret key (~10 s of
RDKit); `partner-kit join --key` does the same before joining and keeps the result in
`model/federated/reference_hash.json`, keyed by plan hash, key check hash and kit/RDKit versions, so later
joins need neither the work nor the key. The hash reveals neither key nor data (see `data_prep.reference`).
The key is also checked against the prepared directory: a partner cannot join with data prepared under one
key while proving another.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from data_prep.atomic import write_text_atomic
from data_prep.errors import InputError

CACHE_NAME = "reference_hash.json"


def _kit() -> dict[str, str]:
    import rdkit

    import data_prep

    return {"kit_version": str(data_prep.__version__), "rdkit_version": str(rdkit.__version__)}


def cache_path(model_dir: Path) -> Path:
    return Path(model_dir) / "federated" / CACHE_NAME


def _cached(path: Path, want: dict[str, Any]) -> str | None:
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text())
    except ValueError:
        return None
    if all(saved.get(k) == v for k, v in want.items()) and isinstance(saved.get("reference_hash"), str):
        return saved["reference_hash"]
    return None


def partner_reference_hash(plan_path: Path, manifest: dict[str, Any], prepared: Path, model_dir: Path,
                           key_path: Path | None = None, *, cache_dir: Path | None = None) -> str:
    """The reference hash this partner reports; computed with `key_path` or read from the model dir's cache."""
    from consortium.plan import Plan

    plan = Plan.load(plan_path)
    prepared_check = manifest.get("key_check_hash")
    want: dict[str, Any] = {"plan_hash": plan.hash, **_kit()}
    path = cache_path(model_dir)
    if key_path is None:
        if prepared_check:
            want["key_check_hash"] = prepared_check
        found = _cached(path, want)
        if found is None:
            raise InputError(f"pass --key (your secret.key) once: the consortium admits a partner by its reference "
                             f"hash of plan + key + kit, and {path} holds none for this plan and kit yet")
        return found
    from data_prep.key import key_check_hash, load_key
    from data_prep.reference import reference_hash

    check = key_check_hash(load_key(key_path))
    if prepared_check and prepared_check != check:
        raise InputError(f"{key_path} is not the key {prepared} was prepared with (key check hash "
                         f"{check[:12]}… vs {str(prepared_check)[:12]}…); use the key you prepared with")
    want["key_check_hash"] = check
    found = _cached(path, want)
    if found is not None:
        return found
    digest = reference_hash(plan_path, key_path, cache_dir=cache_dir or False)
    write_text_atomic(path, json.dumps({**want, "reference_hash": digest}, indent=2) + "\n")
    return digest
