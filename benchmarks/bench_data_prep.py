#!/usr/bin/env python3
"""Throughput of data preparation against RDKit's own floor, cold and warm, 1 and N cores, peak memory.

Two workloads (read in place from ../shared beside the repository):
  muv   MUV SMILES (default a 10 k random subsample; --full for all 93 k): the featurization pipeline
        (standardize -> keyed fingerprint rows -> scaffold folds), which is all `prepare` does per molecule;
  p1    chembl-3/P1 (7.7 k ChEMBL compounds, 550 dose-response assays): the whole `data-prep prepare`.

For each: the floor = RDKit `ChargeParent` + `TautomerEnumerator.Canonicalize` (max 256 tautomers) alone,
one core, molecules parsed beforehand, and our pipeline cold on 1 core without cache — measured block by
block, interleaved, so a shared machine's changing load hits both alike (P1: each block is a complete
partner directory run through `prepare`); then cold on all cores (fresh cache), a warm re-run with 1 % new
compounds and one with none (1 core). Peak RSS of the process and its
workers is sampled with psutil. Prints tables (and --markdown FILE writes them for BENCHMARKS.md).

    .venv/bin/python benchmarks/bench_data_prep.py [--limit 10000] [--full] [--chembl-limit N] [--skip p1]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import random
import resource
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import psutil
from rdkit import Chem, RDLogger
from rdkit.Chem.MolStandardize import rdMolStandardize
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from machine_info import cpu_name, load_average  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

from data_prep.cache import smiles_key  # noqa: E402
from data_prep.config import PrepConfig  # noqa: E402
from data_prep.featurize import cache_namespace  # noqa: E402
from data_prep.fingerprint import keyed_csr  # noqa: E402
from data_prep.folds import assign_fold  # noqa: E402
from data_prep.parallel import compute_records, default_jobs  # noqa: E402
from data_prep.prepare import prepare  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
KEY = bytes(range(32))
console = Console(width=150)


class PeakRSS:
    """Samples the RSS of this process plus its children every 50 ms; `.peak_mb` after the block."""

    def __init__(self) -> None:
        self.proc = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()

    def _rss(self) -> int:
        total = self.proc.memory_info().rss
        for child in self.proc.children(recursive=True):
            with contextlib.suppress(psutil.Error):  # a worker may exit between listing and reading
                total += child.memory_info().rss
        return total

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            self._stop.wait(0.05)

    def __enter__(self) -> PeakRSS:
        self.peak = self._rss()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def peak_mb(self) -> float:
        return self.peak / 2**20


def floor_enumerator() -> rdMolStandardize.TautomerEnumerator:
    """The floor's tautomer enumerator (max 256 tautomers)."""
    params = rdMolStandardize.CleanupParameters()
    params.maxTautomers = 256
    return rdMolStandardize.TautomerEnumerator(params)


def floor_step(mol: Chem.Mol, enumerator: rdMolStandardize.TautomerEnumerator) -> None:
    """The floor's work on one parsed molecule: ChargeParent + Canonicalize (skipping what RDKit cannot do)."""
    with contextlib.suppress(Exception):
        enumerator.Canonicalize(rdMolStandardize.ChargeParent(mol))


def floor(smiles: list[str]) -> tuple[float, int]:
    """Seconds for RDKit's ChargeParent + Canonicalize (max 256 tautomers) alone, on pre-parsed molecules."""
    mols = [m for m in (Chem.MolFromSmiles(s) for s in smiles) if m is not None]
    enumerator = floor_enumerator()
    start = time.perf_counter()
    for mol in mols:
        floor_step(mol, enumerator)
    return time.perf_counter() - start, len(mols)


def featurize_pipeline(smiles: list[str], config: PrepConfig, cache: Path | bool, jobs: int) -> dict[str, Any]:
    """What prepare does per molecule: standardize (cached), keyed fingerprint rows, scaffold folds."""
    stats: dict[str, Any] = {}
    records = compute_records(smiles, config, n_jobs=jobs, cache_dir=cache, progress=False, stats=stats)
    ok = [r for r in records if r.ok]
    keyed_csr([r.indices() for r in ok], [r.counts() for r in ok], config.fingerprint, KEY)
    [assign_fold(KEY, r.fold_scaffold(config.folds.method), r.smiles, config.folds.n_folds) for r in ok]
    return stats


def forget_fraction(cache: Path, config: PrepConfig, smiles: list[str], fraction: float, seed: int = 0) -> int:
    """Delete `fraction` of the molecules from a cache, so a re-run meets them as new compounds."""
    rng = random.Random(seed)
    unique = list(dict.fromkeys(smiles))
    gone = rng.sample(unique, max(1, int(len(unique) * fraction)))
    path = cache / f"standardized-{cache_namespace(config)[:24]}.sqlite"
    with sqlite3.connect(path) as db:
        db.executemany("DELETE FROM records WHERE key = ?", [(smiles_key(s),) for s in gone])
    return len(gone)


def cpu_seconds() -> float:
    """CPU time of this process and its reaped children (pool workers are reaped when the pool closes)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def timed(run: Callable[[], Any]) -> tuple[float, float, Any, float]:
    """(wall seconds, peak RSS MB, result, CPU cores actually used = CPU seconds / wall seconds)."""
    with PeakRSS() as rss:
        cpu, start = cpu_seconds(), time.perf_counter()
        result = run()
        seconds = time.perf_counter() - start
        cores = (cpu_seconds() - cpu) / seconds
    return seconds, rss.peak_mb, result, cores


def bench(name: str, smiles: list[str], blocks: list[Callable[[], dict[str, Any]]], block_smiles: list[list[str]],
          run: Callable[[Path | bool, int], dict[str, Any]], jobs: int, workdir: Path
          ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Floor and cold 1-core pipeline interleaved block by block (so load changes on a shared machine hit
    both alike), then cold on `jobs` cores with a fresh cache, then warm re-runs on that cache."""
    config = PrepConfig()
    n = len(smiles)
    rows: list[dict[str, Any]] = []
    floor_s = cold1_s = cold1_cpu = 0.0
    n_floor = 0
    stages: dict[str, float] = {}
    console.print(f"[bold]{name}[/]: {n} molecules — floor and cold 1-core pipeline, {len(blocks)} interleaved blocks…")
    with PeakRSS() as rss1:
        for block, mols in zip(blocks, block_smiles, strict=True):
            f_s, f_n = floor(mols)
            floor_s += f_s
            n_floor += f_n
            cpu, start = cpu_seconds(), time.perf_counter()
            stats = block()
            cold1_s += time.perf_counter() - start
            cold1_cpu += cpu_seconds() - cpu
            for k, v in stats.get("worker_s", {}).items():
                stages[k] = stages.get(k, 0.0) + v
    floor_rate = n_floor / floor_s
    rows.append({"run": "floor: RDKit ChargeParent + Canonicalize", "cores": 1, "seconds": floor_s,
                 "mol_s": floor_rate, "per_core": floor_rate, "vs_floor": 1.0, "rss_mb": float("nan"),
                 "cpu": float("nan")})

    def add(label: str, cores: int, seconds: float, rss: float, cpu: float) -> None:
        rate = n / seconds
        rows.append({"run": label, "cores": cores, "seconds": seconds, "mol_s": rate, "per_core": rate / cores,
                     "vs_floor": rate / cores / floor_rate, "rss_mb": rss, "cpu": cpu})

    add("pipeline cold", 1, cold1_s, rss1.peak_mb, cold1_cpu / cold1_s)
    cache = workdir / f"{name}-cache"
    sN = float("nan")
    if jobs > 1:
        console.print(f"  cold, {jobs} cores…")
        sN, mN, _, cN = timed(lambda: run(cache, jobs))
        add("pipeline cold", jobs, sN, mN, cN)
    else:
        run(cache, 1)
    n_new = forget_fraction(cache, config, smiles, 0.01)
    console.print(f"  warm with {n_new} new compounds (1 %), 1 core…")
    sw, mw, statsw, cw = timed(lambda: run(cache, 1))
    add("pipeline warm, 1 % new", 1, sw, mw, cw)
    console.print("  warm, nothing new, 1 core…")
    s0, m0, _, c0 = timed(lambda: run(cache, 1))
    add("pipeline warm, 0 % new", 1, s0, m0, c0)
    ratios = {"floor_rate": floor_rate, "cold1_vs_floor": (n / cold1_s) / floor_rate,
              "speedup_n_cores": cold1_s / sN, "warm1pct_speedup": cold1_s / sw,
              "warm0pct_speedup": cold1_s / s0, "computed_warm": statsw.get("computed", 0),
              "stage_seconds": stages, "stages": {k: n / v for k, v in stages.items() if v > 0}}
    return rows, ratios


def machine() -> str:
    return (f"{cpu_name()}, {default_jobs()} cores usable, {psutil.virtual_memory().total / 2**30:.0f} GiB RAM, "
            f"Python {platform.python_version()}, RDKit {Chem.rdBase.rdkitVersion}; load average {load_average()}")


def render(title: str, rows: list[dict[str, Any]], ratios: dict[str, Any], md: list[str]) -> None:
    table = Table(title=title)
    columns = ("run", "cores", "seconds", "mol/s", "mol/s per core", "× floor (per core)", "CPU cores used",
               "peak RSS MB")
    for col in columns:
        table.add_column(col, justify="left" if col == "run" else "right")
    md += [f"### {title}", "", "| " + " | ".join(columns) + " |", "|---|" + "---:|" * (len(columns) - 1)]
    for r in rows:
        cells = [r["run"], str(r["cores"]), f"{r['seconds']:.1f}", f"{r['mol_s']:.0f}", f"{r['per_core']:.0f}",
                 f"{r['vs_floor']:.2f}", "–" if r["cpu"] != r["cpu"] else f"{r['cpu']:.2f}",
                 "–" if r["rss_mb"] != r["rss_mb"] else f"{r['rss_mb']:.0f}"]
        table.add_row(*cells)
        md.append("| " + " | ".join(cells) + " |")
    console.print(table)
    stage = Table(title=f"{title}: per stage, cold, 1 core (worker seconds)")
    stage.add_column("stage")
    stage.add_column("seconds", justify="right")
    stage.add_column("mol/s per core", justify="right")
    md += ["", "| stage (cold, 1 core) | seconds | mol/s per core |", "|---|---:|---:|"]
    for name, sec in ratios["stage_seconds"].items():
        stage.add_row(name, f"{sec:.2f}", f"{ratios['stages'][name]:.0f}")
        md.append(f"| {name} | {sec:.2f} | {ratios['stages'][name]:.0f} |")
    console.print(stage)
    summary = (f"cold 1 core = {ratios['cold1_vs_floor']:.2f}× floor (target ≥ 0.9); "
               f"{ratios['speedup_n_cores']:.2f}× faster on {default_jobs()} cores than 1 (target ≥ 1.8); "
               f"warm with 1 % new = {ratios['warm1pct_speedup']:.1f}× faster than cold (target ≥ 20; "
               f"{ratios['computed_warm']} recomputed); warm with none new = {ratios['warm0pct_speedup']:.1f}×")
    console.print(summary)
    md += ["", summary, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=10_000, help="MUV subsample size (default 10000)")
    parser.add_argument("--full", action="store_true", help="all 93 k MUV molecules")
    parser.add_argument("--chembl-limit", type=int, default=None, help="use only the first N compounds of P1")
    parser.add_argument("--blocks", type=int, default=8, help="interleaving blocks for floor vs cold 1 core")
    parser.add_argument("--jobs", type=int, default=default_jobs(), help="cores for the multi-core run")
    parser.add_argument("--skip", choices=["muv", "p1"], action="append", default=[])
    parser.add_argument("--markdown", type=Path, help="also write the tables as Markdown here")
    args = parser.parse_args()
    RDLogger.DisableLog("rdApp.*")
    if not SHARED.is_dir():
        sys.exit(f"public data not found at {SHARED} (the shared folder beside the repository)")
    md = ["## data_prep benchmark", "", f"Machine: {machine()}", ""]
    console.print(f"machine: {machine()}")
    work = Path(tempfile.mkdtemp(prefix="bench-data-prep-"))
    try:
        if "muv" not in args.skip:
            muv = pd.read_csv(SHARED / "raw" / "muv.csv.gz", usecols=["smiles"])["smiles"]
            if not args.full and args.limit < len(muv):
                muv = muv.sample(args.limit, random_state=0)
            smiles = muv.tolist()
            config = PrepConfig()
            parts = [smiles[i::args.blocks] for i in range(args.blocks)]
            blocks = [lambda part=part: featurize_pipeline(part, config, False, 1) for part in parts]
            rows, ratios = bench("muv", smiles, blocks, parts,
                                 lambda cache, jobs: featurize_pipeline(smiles, config, cache, jobs), args.jobs, work)
            render(f"MUV, {len(smiles)} molecules (featurization pipeline)", rows, ratios, md)
        if "p1" not in args.skip:
            folder = SHARED / "consortia" / "chembl-3" / "P1"
            if args.chembl_limit:
                folder = subset_partner(folder, pd.read_csv(folder / "T2.csv").head(args.chembl_limit), work / "P1")
            t2 = pd.read_csv(folder / "T2.csv")
            smiles = t2["smiles"].tolist()
            k = min(args.blocks, 4)  # each block is a complete partner directory, prepared on its own
            parts = [subset_partner(folder, t2.iloc[i::k], work / f"P1-block{i}") for i in range(k)]
            part_smiles = [pd.read_csv(p / "T2.csv")["smiles"].tolist() for p in parts]

            def prep(src: Path, cache: Path | bool, jobs: int, out: Path) -> dict[str, Any]:
                return prepare(PrepConfig(), KEY, src, out, cache_dir=cache, n_jobs=jobs,
                               progress=False)["standardization"]

            blocks = [lambda p=p: prep(p, False, 1, work / "P1-out-block") for p in parts]
            rows, ratios = bench("p1", smiles, blocks, part_smiles,
                                 lambda cache, jobs: prep(folder, cache, jobs, work / "P1-out"), args.jobs, work)
            render(f"chembl-3/P1, {len(smiles)} compounds (full `prepare`)", rows, ratios, md)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load = os.getloadavg()
    md.append(f"Load average at the end: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}")
    if args.markdown:
        args.markdown.write_text("\n".join(md) + "\n")
        console.print(f"wrote {args.markdown}")


def subset_partner(folder: Path, t2: pd.DataFrame, out: Path) -> Path:
    """A partner directory holding only the compounds of `t2` and their records."""
    out.mkdir(parents=True, exist_ok=True)
    t1 = pd.read_csv(folder / "T1.csv.gz")
    t1[t1["input_compound_id"].isin(set(t2["input_compound_id"]))].to_csv(out / "T1.csv.gz", index=False)
    t2.to_csv(out / "T2.csv", index=False)
    shutil.copy(folder / "T0.csv", out / "T0.csv")
    return out


if __name__ == "__main__":
    main()
