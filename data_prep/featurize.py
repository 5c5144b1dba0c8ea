"""SMILES -> standardized structure, scaffold and unkeyed fingerprint in one pass; keyed rows for prediction.

`Featurizer` is what every worker process runs: it standardizes each SMILES and computes the standardized
SMILES, then the Murcko scaffold, its scaffold-network reduction (TUNER's fold scaffold) and the folded
Morgan counts from that SMILES (so all are functions of the row's identity). Its output
(`MolRecord`) is independent of the secret key, so it can be cached; the key is applied afterwards.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import NamedTuple

import numpy as np
import rdkit
import scipy.sparse as sp
from rdkit import Chem

from data_prep.config import PrepConfig
from data_prep.fingerprint import MorganFingerprinter, keyed_csr
from data_prep.folds import network_scaffold, scaffold_smiles
from data_prep.standardize import STANDARDIZER_VERSION, StageClock, Standardizer, StructureError

_EMPTY_IDX = np.zeros(0, dtype=np.int32)
_EMPTY_CNT = np.zeros(0, dtype=np.uint32)


class MolRecord(NamedTuple):
    """One input SMILES after standardization; `smiles` is None and `error` says why when it failed."""

    smiles: str | None
    error: str | None
    scaffold: str
    fp_idx: bytes  # little-endian int32 folded Morgan bit ids, sorted
    fp_cnt: bytes  # little-endian uint32 counts, same order
    network_scaffold: str = ""  # the Murcko scaffold reduced to <= 3 rings (folds.network_scaffold)

    @property
    def ok(self) -> bool:
        return self.error is None

    def indices(self) -> np.ndarray:
        return np.frombuffer(self.fp_idx, dtype="<i4") if self.fp_idx else _EMPTY_IDX

    def counts(self) -> np.ndarray:
        return np.frombuffer(self.fp_cnt, dtype="<u4") if self.fp_cnt else _EMPTY_CNT

    def fold_scaffold(self, method: str) -> str:
        """The scaffold whose keyed hash is the fold under the plan's `folds.method`."""
        return self.network_scaffold if method == "scaffold_network" else self.scaffold

    @classmethod
    def failed(cls, reason: str) -> MolRecord:
        return cls(None, reason, "", b"", b"", "")


class Featurizer:
    """The plan's standardization + fingerprint settings, with RDKit objects built once per process."""

    def __init__(self, config: PrepConfig, scaffolds: bool = True) -> None:
        """`scaffolds=False`: leave the fold scaffolds empty (prediction needs no fold; the scaffold-network
        reduction is ~15 % of a molecule's featurization)."""
        self.config = config
        self.scaffolds = scaffolds
        self.standardizer = Standardizer(config.standardization)
        self.fingerprinter = MorganFingerprinter(config.fingerprint)

    def __call__(self, smiles: str, timings: dict[str, float] | None = None) -> MolRecord:
        try:
            mol = self.standardizer.run(smiles, timings)
        except StructureError as exc:
            return MolRecord.failed(str(exc))
        clock = StageClock(timings)
        try:
            std = Chem.MolToSmiles(mol)
            # Rows are merged by standardized SMILES, so fingerprint and scaffold must be functions of that
            # SMILES alone: the canonical-tautomer molecule can carry hydrogen flags that the SMILES does
            # not (they change the Murcko scaffold of some metal complexes), so read the SMILES back.
            mol = Chem.MolFromSmiles(std)
            clock.tick("smiles")
            if mol is None:
                return MolRecord.failed(f"standardized SMILES '{std}' cannot be read back by RDKit")
            idx, cnt = self.fingerprinter(mol)
            clock.tick("fingerprint")
            scaffold = scaffold_smiles(mol) if self.scaffolds else ""
            network = network_scaffold(scaffold) if self.scaffolds else ""
            clock.tick("scaffold")
        except Exception as exc:  # exotic chemistry that standardized but cannot be written out
            return MolRecord.failed(f"RDKit failed after standardization: {exc}")
        return MolRecord(std, None, scaffold, idx.astype("<i4").tobytes(), cnt.astype("<u4").tobytes(), network)


def cache_namespace(config: PrepConfig) -> str:
    """What a cached MolRecord depends on: standardization profile, fingerprint shape, RDKit, our code."""
    content = {
        "standardization": asdict(config.standardization),
        "radius": config.fingerprint.radius,
        "size": config.fingerprint.size,
        "rdkit": rdkit.__version__,
        "standardizer": STANDARDIZER_VERSION,
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def featurize_smiles(
    smiles: Sequence[str],
    config: PrepConfig,
    key: bytes,
    *,
    n_jobs: int | None = 1,
    cache_dir: str | Path | None | bool = False,
) -> tuple[sp.csr_matrix, list[str | None]]:
    """Keyed fingerprint rows for prediction: one row per input, in order, in the consortium's column space.

    A molecule that fails keeps its (empty) row and gets an error string; every other row is None. The row
    of a molecule depends only on its SMILES, the plan and the key, never on the rest of the batch.
    """
    from data_prep.parallel import compute_records

    records = compute_records(list(smiles), config, n_jobs=n_jobs, cache_dir=cache_dir, progress=False)
    x = keyed_csr([r.indices() for r in records], [r.counts() for r in records], config.fingerprint, key)
    return x, [r.error for r in records]
