#!/usr/bin/env python3
"""Build the reference set shipped with the kit (data_prep/reference/T0,T1,T2.csv) from public data.

Every partner prepares this set for `data-prep reference-hash`, so it exercises every path that decides
columns, folds and labels: 380 Tox21 compounds with two binary assays (public, MoleculeNet), 160 ChEMBL
compounds with one dose-response assay used for regression (CC BY-SA 3.0, MoleculeNet), and a few
hand-written structures (salt, charged, isotope-labelled, tautomer pair, stereoisomers, acyclic, an
unparsable SMILES) labelled in the binary assays, plus a replicate and a censored value.

Deterministic: `python examples/make_reference_set.py` (needs ../shared/data/raw beside the repo).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
RAW = REPO.parent / "shared" / "data" / "raw"
OUT = REPO / "data_prep" / "reference"

EDGE_CASES = [  # (id, smiles, label in assay R1)
    ("REF-E01", "CC(=O)Oc1ccccc1C(=O)[O-].[Na+]", -1),    # salt
    ("REF-E02", "C[NH+](C)CCc1c[nH]c2ccccc12.[Cl-]", -1),  # charged amine hydrochloride
    ("REF-E03", "[13CH3]c1ccc(O)cc1", -1),                 # isotope label
    ("REF-E04", "Oc1ccccn1", 1),                           # tautomer pair (hydroxypyridine ...
    ("REF-E05", "O=c1cccc[nH]1", 1),                       # ... and pyridone)
    ("REF-E06", "C[C@H](N)C(=O)O", -1),                    # stereoisomers collapsing
    ("REF-E07", "C[C@@H](N)C(=O)O", -1),
    ("REF-E08", "CCCCCCCCCCCCCCCC(=O)O", -1),              # acyclic
    ("REF-E09", "not a smiles", -1),                       # unparsable
]


def pick(frame: pd.DataFrame, column: str, n: int, salt: str) -> pd.DataFrame:
    order = frame[column].map(lambda s: hashlib.sha256((salt + s).encode()).hexdigest())
    return frame.assign(_o=order).sort_values("_o").head(n).drop(columns="_o")


def main() -> None:
    tox = pd.read_csv(RAW / "tox21.csv.gz")
    tox = tox[tox["SR-MMP"].notna() & tox["NR-AhR"].notna()]
    tox = pick(tox, "smiles", 380, "tox21").reset_index(drop=True)
    chembl = pd.read_csv(RAW / "chembl_5thresh.csv.gz", usecols=["smiles", "CHEMBL205"])
    chembl = pick(chembl[chembl["CHEMBL205"].notna()], "smiles", 160, "chembl").reset_index(drop=True)

    t2 = pd.concat([
        pd.DataFrame({"input_compound_id": [f"REF-T{i:03d}" for i in range(len(tox))], "smiles": tox["smiles"]}),
        pd.DataFrame({"input_compound_id": [f"REF-C{i:03d}" for i in range(len(chembl))],
                      "smiles": chembl["smiles"]}),
        pd.DataFrame(EDGE_CASES, columns=["input_compound_id", "smiles", "label"]).drop(columns="label"),
    ], ignore_index=True)
    t1 = pd.concat([
        pd.DataFrame({"input_compound_id": t2["input_compound_id"][: len(tox)], "input_assay_id": "R1",
                      "standard_qualifier": "=", "standard_value": tox["SR-MMP"].map({1.0: 1, 0.0: -1})}),
        pd.DataFrame({"input_compound_id": t2["input_compound_id"][: len(tox)], "input_assay_id": "R2",
                      "standard_qualifier": "=", "standard_value": tox["NR-AhR"].map({1.0: 1, 0.0: -1})}),
        pd.DataFrame({"input_compound_id": [f"REF-C{i:03d}" for i in range(len(chembl))],
                      "input_assay_id": "R3", "standard_qualifier": "=",
                      "standard_value": chembl["CHEMBL205"].round(3)}),
        pd.DataFrame({"input_compound_id": [e[0] for e in EDGE_CASES], "input_assay_id": "R1",
                      "standard_qualifier": "=", "standard_value": [e[2] for e in EDGE_CASES]}),
        pd.DataFrame({"input_compound_id": ["REF-C000", "REF-C001", "REF-C002"], "input_assay_id": "R3",
                      "standard_qualifier": ["=", "<", ">"], "standard_value": [6.5, 5.0, 4.5]}),
    ], ignore_index=True)
    t0 = pd.DataFrame({
        "input_assay_id": ["R1", "R2", "R3"], "assay_type": ["OTHER", "OTHER", "CATALOG-PANEL"],
        "use_in_regression": [False, False, True], "is_binary": [True, True, False],
        **{f"expert_threshold_{i}": [None, None, None] for i in range(1, 6)},
        "direction": ["high", "high", "high"], "catalog_assay_id": [None, None, None],
        "parent_assay_id": [None, None, None],
    })
    OUT.mkdir(parents=True, exist_ok=True)
    t0.to_csv(OUT / "T0.csv", index=False)
    t1.to_csv(OUT / "T1.csv", index=False)
    t2.to_csv(OUT / "T2.csv", index=False)
    print(f"wrote {OUT}: {len(t2)} compounds, {len(t1)} activity records, {len(t0)} assays")


if __name__ == "__main__":
    main()
