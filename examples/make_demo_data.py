#!/usr/bin/env python3
"""Build the README demo's example consortium: examples/tox21-3/{A,B,C}/T0.csv, T1.csv.gz, T2.csv.

Source: the Tox21 challenge table (12 binary assays, public NIH/EPA data, MoleculeNet collection) at
../shared/data/raw/tox21.csv.gz. Compounds are split between three partners by a hash of their Murcko
scaffold, so each partner holds distinct chemotypes (as pharma libraries do); every partner measured all
12 assays, under its own private compound ids and assay ids. Deterministic: the same raw file gives the
same bytes. Usage: python examples/make_demo_data.py [OUT_DIR]   (default examples/tox21-3)
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pandas as pd
from rdkit import Chem, RDLogger
from rdkit.Chem.Scaffolds import MurckoScaffold

HERE = Path(__file__).resolve().parent
RAW = HERE.parent.parent / "shared" / "data" / "raw" / "tox21.csv.gz"
PARTNERS = ("A", "B", "C")
T0_COLUMNS = ["input_assay_id", "assay_type", "use_in_regression", "is_binary", "expert_threshold_1",
              "expert_threshold_2", "expert_threshold_3", "expert_threshold_4", "expert_threshold_5",
              "direction", "catalog_assay_id", "parent_assay_id", "assay_name_META"]


def scaffold_key(smiles: str) -> str:
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return smiles
    return Chem.MolToSmiles(MurckoScaffold.GetScaffoldForMol(mol)) or smiles


def partner_of(smiles: str) -> str:
    digest = hashlib.sha256(("tox21-3 demo:" + scaffold_key(smiles)).encode()).digest()
    return PARTNERS[int.from_bytes(digest[:8], "big") % len(PARTNERS)]


def assay_ids(partner: str, assays: list[str]) -> dict[str, str]:
    """Private assay ids: each partner numbers (and orders) its assays its own way."""
    if partner == "A":
        return {a: str(i + 1) for i, a in enumerate(assays)}
    if partner == "B":
        return {a: f"B-ASSAY-{i + 1:02d}" for i, a in enumerate(reversed(assays))}
    ranked = sorted(assays, key=lambda a: hashlib.sha256(a.encode()).hexdigest())
    return {a: str(501 + i) for i, a in enumerate(ranked)}


def main() -> None:
    RDLogger.DisableLog("rdApp.*")
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "tox21-3"
    wide = pd.read_csv(RAW)
    assays = [c for c in wide.columns if c not in ("mol_id", "smiles")]
    wide["partner"] = [partner_of(s) for s in wide["smiles"]]
    for partner in PARTNERS:
        sub = wide[wide["partner"] == partner].reset_index(drop=True)
        ids = [f"{partner}-{i:06d}" for i in range(len(sub))]
        private = assay_ids(partner, assays)
        t0 = pd.DataFrame({"input_assay_id": [private[a] for a in assays], "assay_type": "OTHER",
                           "use_in_regression": False, "is_binary": True, "direction": "high",
                           "assay_name_META": assays})
        t0 = t0.reindex(columns=T0_COLUMNS).sort_values("input_assay_id", kind="stable")
        long = sub.assign(input_compound_id=ids).melt(
            id_vars=["input_compound_id"], value_vars=assays, var_name="assay", value_name="label").dropna()
        t1 = pd.DataFrame({
            "input_compound_id": long["input_compound_id"],
            "input_assay_id": long["assay"].map(private),
            "standard_qualifier": "=",
            "standard_value": long["label"].map({1.0: 1, 0.0: -1}).astype(int),
        }).sort_values(["input_assay_id", "input_compound_id"], kind="stable")
        folder = out / partner
        folder.mkdir(parents=True, exist_ok=True)
        t0.to_csv(folder / "T0.csv", index=False)
        t1.to_csv(folder / "T1.csv.gz", index=False, compression={"method": "gzip", "mtime": 0})
        pd.DataFrame({"input_compound_id": ids, "smiles": sub["smiles"]}).to_csv(folder / "T2.csv", index=False)
        print(f"{partner}: {len(sub)} compounds, {len(t1)} labels")


if __name__ == "__main__":
    main()
