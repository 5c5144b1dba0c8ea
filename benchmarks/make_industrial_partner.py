#!/usr/bin/env python3
"""A synthetic industrial-size partner (T0/T1/T2) on real MOSES structures, for the scale benchmark (issue #11).

Why: a MELLODDY partner brings ~1 M compounds, ~2,000 assays and ~20 M activity records; the kit must meet that
size before a partner's first real run does. Structures are real (N drug-like SMILES from
`../shared/data/raw/moses_train.csv.gz`, read in place and streamed); activities are synthetic but *learnable*:
each assay's latent activity is a hidden linear function of fixed SMARTS substructure counts (assays grouped
in target families that share most of their weights, so multitask learning helps) plus noise.

Shape, scaled with N (at 1 M: ~1,900 assays, ~20 M records, ~20 records per compound at every N):
  * AUX_HTS: binary primary screens, each on 10-30 % of the compounds (100 k+ records at 1 M), ~3 % actives;
  * CATALOG-PANEL (with shared catalog ids), NON-CATALOG-PANEL, OTHER dose-response (pXC50-like, some with
    expert thresholds), ADME (a log-scale property, direction low) and binary OTHER assays, each on a few hundred
    to 30 k compounds (log-uniform);
  * censored values ('<' at the assay's lowest concentration, '>' at its highest), ~5 % replicate rows with
    fresh noise, and ~0.1 % implausible values (outside the credible range) that `prepare` must reject.

Deterministic: the same --n/--seed give byte-identical files (gzip headers carry no time stamp). T1 is written
assay by assay through gzip, so memory stays flat in the record count; the latent feature matrix (N x ~40
float32) is the only O(N) array. Writes only under --out (never the repository); `generator.json` there holds
the parameters and the counts (the hidden weights stay in memory: the benchmark checks learnability through
`partner-kit train`, not by peeking).

    .venv/bin/python benchmarks/make_industrial_partner.py --n 10000 --out /tmp/ind10k --seed 0
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import math
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MOSES = ROOT.parent / "shared" / "data" / "raw" / "moses_train.csv.gz"
MOSES_ROWS = 1_584_663  # rows of moses_train.csv.gz (see ../shared/data/README.md)
RECORDS_PER_COMPOUND = 20  # ~20 M records at 1 M compounds (issue #11)

#: Substructures whose counts drive the hidden structure-activity function (fixed: the same at every N).
SMARTS = [
    "[OX2H]", "[NX3;H2,H1;!$(NC=O)]", "[NX3;H0;!$(NC=O)]", "C(=O)[OH]", "C(=O)N", "C(=O)O[#6]", "S(=O)(=O)N",
    "S(=O)(=O)", "[F,Cl,Br,I]", "F", "Cl", "C#N", "[N+](=O)[O-]", "c1ccccc1", "c1ccncc1", "[nH]", "n",
    "o", "s", "[CX4][CX4][CX4]", "[R2]", "[r5]", "[r6]", "[r3,r4]", "C=C", "[CH3]", "[OX2]([#6])[#6]",
    "[NX3][CX3]=[OX1]", "c-c", "[#6]-[#7]-[#6](=O)", "C(F)(F)F", "[SX2]", "[#7]~[#7]", "c[OH]",
    "[CX4;H1,H0]([#6])([#6])[#6]", "c(:n):n", "[$([NX3](C)(C)C)]", "C1CCNCC1", "C1COCCN1", "O=C1CCCN1",
]
#: Assay kinds: (assay_type, binary, share of the non-HTS assays).
KINDS = [("CATALOG-PANEL", False, 0.15), ("NON-CATALOG-PANEL", False, 0.10), ("ADME", False, 0.10),
         ("OTHER", False, 0.55), ("OTHER", True, 0.10)]
T0_HEADER = ["input_assay_id", "assay_type", "use_in_regression", "is_binary", "expert_threshold_1",
             "expert_threshold_2", "expert_threshold_3", "expert_threshold_4", "expert_threshold_5", "direction",
             "catalog_assay_id", "parent_assay_id", "assay_name_META"]
T1_HEADER = ["input_compound_id", "input_assay_id", "standard_qualifier", "standard_value"]


def compound_id(i: int) -> str:
    return f"IND-{i:07d}"


def stream_smiles(n: int, seed: int, path: Path = MOSES, chunk: int = 100_000) -> Iterator[str]:
    """N SMILES sampled from MOSES in file order (each row kept with probability ~1.1 N / rows, stopping at N),
    read in chunks so a small N never holds the 1.58 M rows; a second pass tops up a (rare) short first pass."""
    import pandas as pd

    rng = np.random.default_rng([seed, 11])
    p = min(1.0, 1.1 * n / MOSES_ROWS)
    taken: set[int] = set()
    for _ in range(2):
        offset = 0
        for frame in pd.read_csv(path, usecols=["SMILES"], chunksize=chunk, dtype=str):
            keep = np.flatnonzero(rng.random(len(frame)) < p)
            values = frame["SMILES"].to_numpy()
            for k in keep:
                if offset + k in taken:
                    continue
                taken.add(int(offset + k))
                yield str(values[k])
                if len(taken) == n:
                    return
            offset += len(frame)
        p = 1.0  # top-up pass: the first rows not yet taken
    raise SystemExit(f"error: {path} has only {len(taken)} usable rows; ask for --n {len(taken)} or fewer")


def substructure_features(smiles: list[str]) -> np.ndarray:
    """log1p of SMARTS match counts (+ heavy atoms / 10, ring count) per molecule, float32, N x features."""
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    patterns = [Chem.MolFromSmarts(s) for s in SMARTS]
    out = np.zeros((len(smiles), len(patterns) + 2), dtype=np.float32)
    for i, smi in enumerate(smiles):
        mol = Chem.MolFromSmiles(smi)
        if mol is None:
            continue
        for j, patt in enumerate(patterns):
            out[i, j] = math.log1p(len(mol.GetSubstructMatches(patt, maxMatches=50)))
        out[i, -2] = mol.GetNumHeavyAtoms() / 10.0
        out[i, -1] = mol.GetRingInfo().NumRings()
    mean, std = out.mean(axis=0), out.std(axis=0)
    return (out - mean) / np.where(std > 0, std, 1.0)


class _GzipCsv:
    """A deterministic (mtime 0, no file name) gzip CSV written to a temporary name and renamed when closed."""

    def __init__(self, path: Path, header: list[str]) -> None:
        self.path, self.tmp = path, path.with_name(f".{path.name}.tmp")
        self._raw = open(self.tmp, "wb")  # noqa: SIM115  (closed in close())
        self._gz = gzip.GzipFile(filename="", mode="wb", fileobj=self._raw, mtime=0, compresslevel=6)
        self._text = io.TextIOWrapper(self._gz, encoding="utf-8", newline="")
        self.writer = csv.writer(self._text, lineterminator="\n")
        self.writer.writerow(header)
        self.rows = 0

    def write(self, rows: list[list[str]]) -> None:
        self.writer.writerows(rows)
        self.rows += len(rows)

    def close(self) -> None:
        self._text.close()
        self._raw.close()
        os.replace(self.tmp, self.path)


def plan_assays(n: int, rng: np.random.Generator) -> tuple[list[dict], int]:
    """Assay list with sizes so that the records total ~RECORDS_PER_COMPOUND x N."""
    n_hts = max(1, round(40 * n / 1_000_000))
    hts_sizes = rng.uniform(0.10, 0.30, n_hts) * n
    lo, hi = min(300.0, n / 20), max(min(30_000.0, n / 3), min(300.0, n / 20) * 2)
    mean = (hi - lo) / math.log(hi / lo)  # mean of log-uniform [lo, hi]
    n_reg = max(10, round((RECORDS_PER_COMPOUND * n - hts_sizes.sum()) / mean))
    sizes = np.exp(rng.uniform(math.log(lo), math.log(hi), n_reg))
    kinds = rng.choice(len(KINDS), size=n_reg, p=[k[2] for k in KINDS])
    n_families = max(3, n_reg // 20)
    assays = [{"assay_type": "AUX_HTS", "binary": True, "size": int(s), "family": int(rng.integers(n_families))}
              for s in hts_sizes]
    for size, kind in zip(sizes, kinds, strict=True):
        assay_type, binary, _ = KINDS[kind]
        assays.append({"assay_type": assay_type, "binary": binary, "size": max(20, int(size)),
                       "family": int(rng.integers(n_families))})
    order = rng.permutation(len(assays))
    return [dict(assays[i], id=k + 1) for k, i in enumerate(order)], n_families


def t0_row(a: dict, rng: np.random.Generator, catalog_ids: int) -> list[str]:
    thresholds = [""] * 5
    if not a["binary"] and a["assay_type"] != "ADME" and rng.random() < 0.3:
        thresholds[:2] = ["6.0", "7.0"] if rng.random() < 0.5 else ["5.5", ""]
    regression = not a["binary"]
    direction = "low" if a["assay_type"] == "ADME" else "high"
    catalog = f"CAT-{int(rng.integers(catalog_ids)):04d}" if a["assay_type"] == "CATALOG-PANEL" else ""
    return [str(a["id"]), a["assay_type"], str(regression), str(a["binary"]), *thresholds, direction, catalog, "",
            f"{a['assay_type'].lower()}-{a['id']}"]


def assay_records(a: dict, latent: np.ndarray, rng: np.random.Generator) -> list[list[str]]:
    """The T1 rows of one assay: values from its latent activity, censoring, replicates, a few implausible."""
    n = len(latent)
    compounds = np.sort(rng.choice(n, size=min(a["size"], n), replace=False))
    z = latent[compounds] + rng.normal(0.0, 0.5, len(compounds))
    rows: list[list[str]] = []
    if a["binary"]:
        active_share = 0.03 if a["assay_type"] == "AUX_HTS" else rng.uniform(0.1, 0.4)
        cut = np.quantile(z, 1.0 - active_share)
        for c, v in zip(compounds, z, strict=True):
            rows.append([compound_id(int(c)), str(a["id"]), "=", "1" if v > cut else "-1"])
        return rows
    if a["assay_type"] == "ADME":  # e.g. log clearance: low is good; wide credible range
        values, low_limit, high_limit = 1.5 - 0.6 * z, -1.0, 3.0
    else:  # pXC50: concentrations tested between 10^-4.5 and 10^-9 M
        values, low_limit, high_limit = rng.uniform(5.0, 6.0) + rng.uniform(0.7, 1.2) * z, 4.5, 9.0
    for c, v in zip(compounds, values, strict=True):
        cid = compound_id(int(c))
        if v < low_limit:
            rows.append([cid, str(a["id"]), "<", f"{low_limit:g}"])
        elif v > high_limit:
            rows.append([cid, str(a["id"]), ">", f"{high_limit:g}"])
        else:
            rows.append([cid, str(a["id"]), "=", f"{v:.3f}"])
        if rng.random() < 0.05:  # replicate measurement, fresh noise
            rows.append([cid, str(a["id"]), "=", f"{min(max(v + rng.normal(0, 0.3), low_limit), high_limit):.3f}"])
    if a["assay_type"] != "ADME":  # ~0.1 % implausible values (unit mistakes) that `prepare` rejects
        for k in np.flatnonzero(rng.random(len(rows)) < 0.001):
            rows[k][2:] = ["=", f"{rng.uniform(13.0, 20.0):.3f}"]
    return rows


def make_partner(n: int, out: Path, seed: int = 0, source: Path = MOSES) -> dict:
    """Write T0.csv, T1.csv.gz, T2.csv.gz and generator.json under `out`; return the generator summary."""
    started = time.perf_counter()
    if (ROOT / ".git").exists() and out.resolve().is_relative_to(ROOT):
        raise SystemExit(f"error: --out {out} is inside the repository; write the partner to a scratch directory")
    if not source.is_file():
        raise SystemExit(f"error: {source} not found (the public data beside the repository: ../shared/data/raw)")
    if n < 200:
        raise SystemExit(f"error: --n {n} is too small for tasks with quorums; use at least 200")
    out.mkdir(parents=True, exist_ok=True)
    smiles: list[str] = []
    t2 = _GzipCsv(out / "T2.csv.gz", ["input_compound_id", "smiles"])
    block: list[str] = []
    for smi in stream_smiles(n, seed, source):
        block.append(smi)
        if len(block) == 50_000:
            t2.write([[compound_id(len(smiles) + i), s] for i, s in enumerate(block)])
            smiles += block
            block = []
    t2.write([[compound_id(len(smiles) + i), s] for i, s in enumerate(block)])
    smiles += block
    t2.close()
    t_smiles = time.perf_counter() - started
    features = substructure_features(smiles)
    del smiles
    t_features = time.perf_counter() - started - t_smiles
    rng = np.random.default_rng([seed, 1])
    assays, n_families = plan_assays(n, rng)
    n_feat = features.shape[1]
    family_w = rng.normal(0.0, 1.0, (n_families, n_feat)) * (rng.random((n_families, n_feat)) < 0.4)
    rows_t0 = [t0_row(a, rng, catalog_ids=max(5, len(assays) // 10)) for a in assays]
    tmp_t0 = out / ".T0.csv.tmp"
    with open(tmp_t0, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(T0_HEADER)
        writer.writerows(rows_t0)
    os.replace(tmp_t0, out / "T0.csv")
    t1 = _GzipCsv(out / "T1.csv.gz", T1_HEADER)
    per_type: dict[str, int] = {}
    censored = 0
    for a, assay_seed in zip(assays, np.random.SeedSequence([seed, 2]).spawn(len(assays)), strict=True):
        arng = np.random.default_rng(assay_seed)
        w = family_w[a["family"]] + arng.normal(0.0, 0.35, n_feat)  # family weights + the assay's own
        latent = features @ w.astype(np.float32)
        latent = (latent - latent.mean()) / max(float(latent.std()), 1e-6)
        rows = assay_records(a, latent, arng)
        censored += sum(r[2] != "=" for r in rows)
        per_type[a["assay_type"]] = per_type.get(a["assay_type"], 0) + len(rows)
        t1.write(rows)
    t1.close()
    summary = {
        "n_compounds": n, "seed": seed, "source": str(source), "n_assays": len(assays),
        "n_binary_assays": sum(a["binary"] for a in assays), "n_families": n_families, "t1_rows": t1.rows,
        "censored_rows": censored, "records_per_type": per_type,
        "largest_assay": max(a["size"] for a in assays), "smallest_assay": min(a["size"] for a in assays),
        "n_features": n_feat, "seconds": {"smiles": round(t_smiles, 2), "features": round(t_features, 2),
                                          "total": round(time.perf_counter() - started, 2)},
    }
    tmp = out / ".generator.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    os.replace(tmp, out / "generator.json")
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000, help="compounds (default 1 M)")
    parser.add_argument("--out", type=Path, required=True, help="directory to write T0/T1/T2 (outside the repo)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    summary = make_partner(args.n, args.out, args.seed)
    print(json.dumps(summary, indent=2))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
