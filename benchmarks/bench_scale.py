#!/usr/bin/env python3
"""Every product stage at industrial size, each as its own child process, timed and peak-RSS'd (issue #11).

On a partner made by `make_industrial_partner.py --n N` (or an existing T0/T1/T2 directory given by --input):
  generate  the generator itself (seconds, peak RSS);
  floor     the RDKit floor alone, in one process and in --jobs processes at once (what prepare also measures);
  prepare   `data-prep prepare` cold (fresh cache): mol/s per core against the RDKit floor (ChargeParent +
            Canonicalize, the same function `bench_data_prep.py` uses) measured in the same run on a sample of the
            partner's SMILES, half before and half after the cold run, so load changes hit both alike, each half
            in one process and (with --jobs > 1) in --jobs processes at once, the cores as busy as prepare keeps
            them, and sampled *during* the run (10 molecules every 10 s, on this process's own thread CPU
            clock: the same contention as the workers); peak PSS and RSS sum;
  warm      1 % of the cache forgotten (as `bench_data_prep.py` does), `prepare` again: speed-up over cold;
  t1path    prepare's T1 path alone, as `prepare` runs it (read -> validate -> attach rows -> aggregate -> tasks),
            with standardization replaced by one matrix row per T2 compound: the peak RSS of each step on a big
            partner's activity records in minutes instead of the hours its structures take (issue #11's 6 GB);
  train     `partner-kit train` with the plan's trunk (default 32000 x [2000], 2 % batches) for --epochs
            epochs: samples/s and seconds per epoch from metrics.json, peak RSS;
  predict   `partner-kit predict` on the first --predict-n SMILES: mol/s (including start-up), peak RSS.
The federated 3 x 300 k round and the real-SparseChem comparison are printed as "not run here" rows with what
they need. Each child runs with OMP_NUM_THREADS=1 and `--jobs 1` / `--threads 1` unless --jobs says otherwise.

    .venv/bin/python benchmarks/bench_scale.py --n 10000 [--stages prepare,warm,train,predict] [--markdown out.md]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT))

from machine_info import cpu_name, load_average  # noqa: E402

BIN = Path(sys.executable).parent
STAGES = ("generate", "floor", "prepare", "warm", "t1path", "train", "predict")


@dataclass
class ChildRun:
    """What one child process cost: wall seconds, peak RSS and peak PSS (MiB) summed over it and its workers,
    CPU seconds, stdout. Forked workers share the parent's pages, so the RSS sum counts those pages once per
    process; the PSS sum (each shared page split among its sharers) is the memory the tree holds."""

    seconds: float
    peak_mb: float
    cpu_s: float
    stdout: str
    peak_pss_mb: float = float("nan")


def run_child(argv: list[str], env_extra: dict[str, str] | None = None) -> ChildRun:
    """Run `argv`, sampling the RSS of the child and its descendants every 50 ms and their PSS every 0.5 s
    (`/proc/PID/smaps_rollup`, costlier to read); fail loudly on exit != 0."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **(env_extra or {}))
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    ps = psutil.Process(proc.pid)
    peak = peak_pss = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak, peak_pss
        tick = 0
        while not done.is_set():
            try:
                procs = [ps, *ps.children(recursive=True)]
                total = pss = 0
                for p in procs:
                    with contextlib.suppress(psutil.Error):  # a worker may exit between listing and reading
                        if tick % 10 == 0:
                            full = p.memory_full_info()
                            total, pss = total + full.rss, pss + full.pss
                        else:
                            total += p.memory_info().rss
                peak, peak_pss = max(peak, total), max(peak_pss, pss)
            except psutil.Error:
                pass
            tick += 1
            done.wait(0.05)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    out, err = proc.communicate()
    seconds = time.perf_counter() - start
    done.set()
    thread.join()
    if proc.returncode != 0:
        raise SystemExit(f"error: {' '.join(map(str, argv[:3]))} … exited {proc.returncode}:\n{err[-2000:]}")
    cpu = _reaped_cpu()  # psutil cannot read a reaped child's CPU time; getrusage can
    return ChildRun(seconds, peak / 2**20, cpu, out, peak_pss / 2**20 if peak_pss else float("nan"))


_last_cpu = [0.0]


def _reaped_cpu() -> float:
    """CPU seconds of reaped children since the previous call (getrusage accumulates over all of them)."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = ru.ru_utime + ru.ru_stime
    delta, _last_cpu[0] = total - _last_cpu[0], total
    return delta


def rdkit_floor(smiles: list[str]) -> tuple[float, float, int]:
    """bench_data_prep's floor (ChargeParent + Canonicalize on pre-parsed molecules): wall seconds, CPU seconds
    of this process for it (load-proof on a shared machine; its parsing step measured apart and taken off), count."""
    from bench_data_prep import floor
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    cpu = time.process_time()
    [Chem.MolFromSmiles(s) for s in smiles]  # floor() parses first: take that CPU time off again
    parse_cpu = time.process_time() - cpu
    cpu = time.process_time()
    seconds, n = floor(smiles)
    return seconds, max(time.process_time() - cpu - parse_cpu, 1e-9), n


def rdkit_floor_parallel(smiles: list[str], jobs: int) -> tuple[float, float, int]:
    """`rdkit_floor` in `jobs` forked processes at once, each on its own slice: (longest wall s, summed CPU s,
    count). With every core busy, as the command's workers keep them, a core's rate is what the command can hope
    for; a one-process floor runs beside idle cores and measures a faster core than the command gets."""
    if jobs <= 1:
        return rdkit_floor(smiles)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    slices = [smiles[i::jobs] for i in range(jobs)]
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("fork")) as pool:
        parts = list(pool.map(rdkit_floor, slices))
    return max(p[0] for p in parts), sum(p[1] for p in parts), sum(p[2] for p in parts)


def floor_rates(parts: list[tuple[float, float, int]], jobs: int = 1) -> tuple[float, float]:
    """(mol/s per core, mol/CPU-s) over `rdkit_floor` / `rdkit_floor_parallel` results of `jobs` processes."""
    n = sum(p[2] for p in parts)
    return n / sum(p[0] for p in parts) / jobs, n / sum(p[1] for p in parts)


class FloorDuringRun:
    """The RDKit floor sampled *while* a command runs: `batch` molecules every `every` seconds in a thread of
    this process, timed by that thread's own CPU clock. Its CPU-second rate meets the same contention as the
    command's workers, at a duty cycle of ≈ 1 %, where a floor timed before and after meets other loads."""

    def __init__(self, smiles: list[str], every: float = 10.0, batch: int = 10) -> None:
        from bench_data_prep import floor_enumerator
        from rdkit import Chem, RDLogger

        RDLogger.DisableLog("rdApp.*")
        self.mols = [m for m in (Chem.MolFromSmiles(x) for x in smiles) if m is not None]  # parsed up front
        self.enumerator = floor_enumerator()
        self.every, self.batch = every, batch
        self.n, self.cpu = 0, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        from bench_data_prep import floor_step

        i = 0
        while self.mols and not self._stop.wait(self.every):
            chunk = [self.mols[(i + k) % len(self.mols)] for k in range(self.batch)]
            i += self.batch
            start = time.thread_time()
            for mol in chunk:
                floor_step(mol, self.enumerator)
            self.cpu += time.thread_time() - start
            self.n += len(chunk)

    def __enter__(self) -> FloorDuringRun:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def t2_smiles(input_dir: Path) -> list[str]:
    import pandas as pd

    path = next(p for p in (input_dir / "T2.csv.gz", input_dir / "T2.csv", input_dir / "T2.parquet") if p.exists())
    frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, dtype=str)
    return frame["smiles"].tolist()


class Bench:
    """Runs the stages in order on one work directory and collects the table rows."""

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args, self.work = args, work
        self.rows: list[dict[str, Any]] = []
        self.input = args.input or work / "partner"
        self.plan, self.key = work / "plan.toml", work / "secret.key"
        self.cache, self.prepared, self.model = work / "cache", work / "prepared", work / "model"
        self.cold_s = float("nan")

    def row(self, stage: str, figure: str, value: str, goal: str = "", ratio: str = "") -> None:
        self.rows.append({"stage": stage, "figure": figure, "value": value, "goal": goal, "ratio": ratio})
        print(f"  {stage} | {figure} | {value} | {goal} | {ratio}", flush=True)  # kept if a long run is stopped

    def setup(self) -> None:
        hidden = self.args.hidden
        run_child([str(BIN / "consortium"), "init", "--out", str(self.plan), "--hidden", hidden, "--force"])
        run_child([str(BIN / "data-prep"), "keygen", "--out", str(self.key), "--force"])

    def generate(self) -> None:
        r = run_child([sys.executable, str(BENCH / "make_industrial_partner.py"), "--n", str(self.args.n),
                       "--out", str(self.input), "--seed", str(self.args.seed)])
        summary = json.loads(r.stdout)
        self.row("generate", "assays / T1 records / compounds",
                 f"{summary['n_assays']} / {summary['t1_rows']} / {summary['n_compounds']}")
        self.row("generate", "seconds; peak RSS", f"{r.seconds:.1f} s; {r.peak_mb:.0f} MiB")

    def prepare(self, out: Path, cache_fresh: bool) -> tuple[ChildRun, dict[str, Any]]:
        if cache_fresh:
            shutil.rmtree(self.cache, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)
        r = run_child([str(BIN / "data-prep"), "prepare", "--plan", str(self.plan), "--key", str(self.key),
                       "--input", str(self.input), "--out", str(out), "--cache", str(self.cache),
                       "--jobs", str(self.args.jobs), "--quiet"])
        return r, json.loads(r.stdout)

    def stage_floor(self) -> None:
        """The RDKit floor alone on the partner's SMILES, in one process and in --jobs at once (interleaved), to
        set beside a `prepare` measured earlier."""
        import random

        smiles = t2_smiles(self.input)
        sample = random.Random(1).sample(smiles, min(self.args.floor_sample, len(smiles)))
        quarters = [sample[i::4] for i in range(4)]
        jobs = self.args.jobs
        one = floor_rates([rdkit_floor(quarters[0]), rdkit_floor(quarters[3])])
        busy = floor_rates([rdkit_floor_parallel(quarters[1], jobs), rdkit_floor_parallel(quarters[2], jobs)], jobs)
        self.row("floor", "RDKit floor, 1 process", f"{one[0]:.0f} mol/s, {one[1]:.0f} mol/CPU-s")
        self.row("floor", f"RDKit floor, {jobs} processes at once",
                 f"{busy[0]:.0f} mol/s per core, {busy[1]:.0f} mol/CPU-s")

    def stage_prepare(self) -> None:
        import random

        smiles = t2_smiles(self.input)
        sample = random.Random(0).sample(smiles, min(self.args.floor_sample, len(smiles)))
        jobs = self.args.jobs
        half = len(sample) // 2
        one1 = rdkit_floor(sample[: half // 2])
        busy1 = rdkit_floor_parallel(sample[half // 2: half], jobs)
        with FloorDuringRun(random.Random(2).sample(smiles, min(2000, len(smiles)))) as during:
            r, summary = self.prepare(self.prepared, cache_fresh=True)
        busy2 = rdkit_floor_parallel(sample[half: half + half // 2], jobs)
        one2 = rdkit_floor(sample[half + half // 2:])
        floor_rate, floor_cpu_rate = floor_rates([one1, one2])
        busy_rate, busy_cpu_rate = floor_rates([busy1, busy2], jobs)
        n = summary["counts"]["t2_rows"]
        per_core = n / r.seconds / jobs
        std_rate = n / summary["timings_s"]["standardize"] / jobs
        self.cold_s = r.seconds
        c = summary["counts"]
        self.row("prepare cold", "RDKit floor (same run, 1 core)", f"{floor_rate:.0f} mol/s")
        self.row("prepare cold", f"whole command, {jobs} core(s)", f"{r.seconds:.1f} s, {per_core:.0f} mol/s per core",
                 "≥ 0.9 × floor per core", f"{per_core / floor_rate:.2f} ×")
        self.row("prepare cold", "standardize step alone", f"{std_rate:.0f} mol/s per core", "",
                 f"{std_rate / floor_rate:.2f} ×")
        self.row("prepare cold", "per CPU second (load-proof): command vs floor",
                 f"{n / r.cpu_s:.0f} vs {floor_cpu_rate:.0f} mol/CPU-s", "≥ 0.9 × floor",
                 f"{n / r.cpu_s / floor_cpu_rate:.2f} ×")
        if during.n:
            self.row("prepare cold", f"RDKit floor during the run ({during.n} molecules, {during.batch} every "
                     f"{during.every:.0f} s)", f"{during.n / during.cpu:.0f} mol/CPU-s")
            self.row("prepare cold", "per CPU second: command vs the floor during the run",
                     f"{n / r.cpu_s:.0f} vs {during.n / during.cpu:.0f} mol/CPU-s", "≥ 0.9 × floor",
                     f"{n / r.cpu_s / (during.n / during.cpu):.2f} ×")
        if jobs > 1:  # the floor with every core busy, as the command's workers keep them
            self.row("prepare cold", f"RDKit floor in {jobs} processes at once", f"{busy_rate:.0f} mol/s per core, "
                     f"{busy_cpu_rate:.0f} mol/CPU-s")
            self.row("prepare cold", f"whole command vs the {jobs}-process floor, per core",
                     f"{per_core:.0f} vs {busy_rate:.0f} mol/s", "≥ 0.9 × floor per core",
                     f"{per_core / busy_rate:.2f} ×")
            self.row("prepare cold", f"per CPU second: command vs the {jobs}-process floor",
                     f"{n / r.cpu_s:.0f} vs {busy_cpu_rate:.0f} mol/CPU-s", "≥ 0.9 × floor",
                     f"{n / r.cpu_s / busy_cpu_rate:.2f} ×")
        self.row("prepare cold", "CPU cores used (CPU s / wall s)", f"{r.cpu_s / r.seconds:.2f}")
        self.prepare_rate = n / r.seconds / jobs
        self.row("prepare cold", "peak PSS (command + workers: the memory the tree holds)",
                 f"{r.peak_pss_mb:.0f} MiB", "≤ 6 GB at 1 M", f"{r.peak_pss_mb / 6144:.2f} of goal")
        self.row("prepare cold", "peak RSS summed (counts the forked workers' shared pages once each)",
                 f"{r.peak_mb:.0f} MiB")
        self.row("prepare cold", "T1 rows used / rejected / total",
                 f"{c['t1_rows_used']} / {c['t1_rows'] - c['t1_rows_used']} / {c['t1_rows']}")
        self.row("prepare cold", "tasks (class / regr / dropped)",
                 f"{c['classification_tasks']} / {c['regression_tasks']} / {c['dropped_tasks']}")
        steps = ", ".join(f"{k} {v:.1f}" for k, v in summary["timings_s"].items() if k != "total")
        self.row("prepare cold", "seconds per step", steps)
        if jobs == 1:
            self.row("prepare cold", "2 cores vs 1", "not run here (one core allowed)", "≥ 1.8 ×")

    def stage_warm(self) -> None:
        from bench_data_prep import forget_fraction

        from consortium.plan import Plan

        if not (self.cache.exists() and any(self.cache.iterdir())):
            self.prepare(self.prepared, cache_fresh=True)  # warm needs a filled cache (and a cold time)
        config = Plan.load(self.plan).data
        n_new = forget_fraction(self.cache, config, t2_smiles(self.input), 0.01)
        r, summary = self.prepare(self.work / "prepared-warm", cache_fresh=False)
        computed = summary["standardization"]["computed"]
        ratio = f"{self.cold_s / r.seconds:.1f} ×" if self.cold_s == self.cold_s else "(no cold run)"
        self.row("prepare warm", f"1 % new ({n_new} forgotten, {computed} recomputed)",
                 f"{r.seconds:.1f} s; peak PSS {r.peak_pss_mb:.0f} MiB (RSS sum {r.peak_mb:.0f})",
                 "≥ 20 × faster than cold", ratio)

    def stage_t1path(self) -> None:
        r = run_child([sys.executable, str(Path(__file__).resolve()), "--t1path-child", str(self.input)])
        out = json.loads(r.stdout.strip().splitlines()[-1])
        n, peak = out["t1_rows"], out["peak_mib"]
        self.row("T1 path", "T1 rows / merged groups / tasks (class, regr, dropped)",
                 f"{n} / {out['groups']} / {', '.join(map(str, out['tasks']))}")
        self.row("T1 path", "peak RSS per step (MiB)", ", ".join(f"{k} {v:.0f}" for k, v in peak.items()))
        top = max(peak.values())
        per_record = (top - out["start_mib"]) * 1024 / max(n, 1)
        self.row("T1 path", "peak RSS; per T1 record above the interpreter", f"{top:.0f} MiB; {per_record:.3f} KiB",
                 "≤ 6 GB at 1 M (whole prepare)", f"{top / 6144:.2f} of 6 GiB")
        self.row("T1 path", "seconds per step; CPU s",
                 ", ".join(f"{k} {v:.1f}" for k, v in out["seconds"].items()) + f"; {out['cpu_s']:.0f}")

    def stage_train(self) -> None:
        if not (self.prepared / "manifest.json").exists():
            self.prepare(self.prepared, cache_fresh=True)
        shutil.rmtree(self.model, ignore_errors=True)
        r = run_child([str(BIN / "partner-kit"), "train", "--plan", str(self.plan), "--prepared",
                       str(self.prepared), "--out", str(self.model), "--max-epochs", str(self.args.epochs),
                       "--threads", str(self.args.jobs), "--quiet"])
        metrics = json.loads((self.model / "metrics.json").read_text())
        epochs = [h for h in metrics["history"] if h["epoch"] >= 0]
        per_epoch = sum(h["seconds"] for h in epochs) / len(epochs)
        rate = metrics["n_train"] / per_epoch
        from consortium.plan import Plan

        plan = Plan.load(self.plan)
        shape = f"{plan.n_features} × {list(plan.trunk.hidden_sizes)}"
        self.row("train", f"trunk {shape}, {metrics['n_train']} train rows, {len(epochs)} epoch(s)",
                 f"{rate:.0f} samples/s; {per_epoch:.1f} s/epoch", "≥ 10 × real SparseChem",
                 "SparseChem not run here")
        self.row("train", "whole command; peak RSS", f"{r.seconds:.1f} s; {r.peak_mb:.0f} MiB",
                 "≤ SparseChem's peak", "SparseChem not run here")
        best = metrics["valid"]
        self.row("train", f"valid AUC-ROC / AUC-PR at best epoch {metrics['best_epoch']}",
                 f"{best.get('auc_roc', float('nan')):.3f} / {best.get('auc_pr', float('nan')):.3f}",
                 "≥ SparseChem's", "learnable if AUC-ROC > 0.5")

    def stage_predict(self) -> None:
        if not (self.model / "trunk.safetensors").exists():
            self.stage_train()
        smiles = t2_smiles(self.input)[: self.args.predict_n]
        runs = []
        for size in (max(1, len(smiles) // 4), len(smiles)):  # two sizes: marginal rate and memory growth
            slice_path = self.work / f"slice-{size}.smi"
            slice_path.write_text("".join(f"{s} m{i}\n" for i, s in enumerate(smiles[:size])))
            runs.append((size, run_child([str(BIN / "partner-kit"), "predict", "--model", str(self.model),
                                          "--key", str(self.key), "--input", str(slice_path),
                                          "--out", str(self.work / f"predictions-{size}.csv")])))
        (n_small, small), (n_big, big) = runs
        marginal = (n_big - n_small) / max(big.seconds - small.seconds, 1e-9)
        ratio = ""
        if getattr(self, "prepare_rate", None):
            ratio = f"predict takes {self.prepare_rate / marginal:.2f} × prepare's time per molecule"
        self.row("predict", f"{n_big} SMILES, whole command (start-up included)", f"{big.seconds:.1f} s, "
                 f"{n_big / big.seconds:.0f} mol/s")
        self.row("predict", f"marginal rate ({n_small} → {n_big} SMILES)", f"{marginal:.0f} mol/s",
                 "≤ 1.2 × data-prep's time per molecule", ratio)
        self.row("predict", f"peak RSS at {n_small} → {n_big} SMILES",
                 f"{small.peak_mb:.0f} → {big.peak_mb:.0f} MiB", "flat in the input size",
                 f"+{(big.peak_mb - small.peak_mb) / max(n_big - n_small, 1) * 1024:.0f} KiB per molecule")

    def not_run(self) -> None:
        self.row("federated round", "3 partners × 300 k, 64 M-param trunk, loopback", "not run here",
                 "≤ 1.2 × slowest compute + 5 s; server ≤ 4 × one trunk",
                 "needs 3 × 300 k prepared partners (~3 × 1.5 h prepare on one core) and ~3 × 1 GB trunk+Adam")
        self.row("train vs SparseChem", "real SparseChem 1.0 on the same data", "see bench_training.py",
                 "≥ 10 × samples/s", "`bench_training.py --setup-sparsechem DIR`, then `--sparsechem DIR "
                 f"--industrial {self.args.n}` (its own process tree, interleaved runs)")
        self.row("GPU", "`--device cuda` figures", "not measured", "",
                 "no GPU on this machine; `partner-kit train/join/predict --device cuda` runs on one")


def t1path_child(input_dir: Path) -> dict[str, Any]:
    """Run prepare's T1 path in this process (see the module docstring), sampling RSS every 20 ms per step."""
    import gc
    import resource

    import numpy as np

    from data_prep import prepare as P
    from data_prep.aggregate import aggregate
    from data_prep.config import PrepConfig
    from data_prep.io import read_inputs
    from data_prep.losses import AssayLosses
    from data_prep.tasks import build_tasks
    from data_prep.validate import Rejects, assay_record_counts, validate_t0, validate_t1, validate_t2

    me = psutil.Process()
    start_mib = me.memory_info().rss / 2**20
    step, peak, seconds, done = ["read"], {}, {}, threading.Event()

    def sample() -> None:
        while not done.is_set():
            rss = me.memory_info().rss / 2**20
            peak[step[0]] = max(peak.get(step[0], 0.0), rss)
            done.wait(0.02)

    def begin(name: str) -> None:
        rss = me.memory_info().rss / 2**20  # a step shorter than the sampling period still gets its figure
        peak[step[0]] = max(peak.get(step[0], 0.0), rss)
        seconds[step[0]] = time.perf_counter() - seconds[step[0]]
        step[0], seconds[name] = name, time.perf_counter()

    threading.Thread(target=sample, daemon=True).start()
    cpu = time.process_time()
    seconds["read"] = time.perf_counter()
    tables = read_inputs(input_dir)
    t0, t1, t2 = tables["T0"], tables["T1"], tables["T2"]
    begin("validate")
    rejects, rules = Rejects(), PrepConfig().tasks
    losses = AssayLosses(assay_record_counts(t1))
    assays = validate_t0(t0, rules, rejects)
    compounds, rejected_ids = validate_t2(t2, rejects)
    records = validate_t1(t1, assays, compounds, rejected_ids, rejects, losses)
    n_t1 = len(t1.frame)
    t1.frame = t1.frame.iloc[:0]
    P._release_freed_arrow_memory()
    begin("rows")
    ids = compounds["input_compound_id"].tolist()
    rows = P._Rows([""] * len(ids), [], (np.arange(len(ids)) % 5).astype(np.int8),
                   {c: i for i, c in enumerate(ids)}, [[c] for c in ids], [[int(r)] for r in compounds["t2_row"]], {})
    records = P._attach_rows(records, rows, rejects, t1.label)
    begin("aggregate")
    groups = aggregate(records, set(assays.index[assays["is_binary"]]), rejects, t1.label)
    begin("tasks")
    tasks = build_tasks(groups, assays, rows.folds, rules, 5)
    P._account_for_unused(tasks, groups, records, assays, rows, rejects, t0.label, t1.label, t2.label, losses)
    used = int(records["used"].sum())
    del records
    gc.collect()
    begin("rejects")
    rejected = rejects.frame()
    begin("end")
    done.set()
    if used + int((rejected["file"] == t1.label).sum()) != n_t1:
        raise SystemExit("error: T1 path lost records")
    return {"t1_rows": n_t1, "used": used, "groups": len(groups), "start_mib": start_mib,
            "tasks": [len(tasks.class_rows), len(tasks.regr_rows), len(tasks.dropped)],
            "peak_mib": {k: round(v, 1) for k, v in peak.items() if k != "end"},
            "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "seconds": {k: round(v, 2) for k, v in seconds.items() if k != "end"},
            "cpu_s": round(time.process_time() - cpu, 1)}


def machine() -> str:
    return (f"{cpu_name()}, {psutil.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB RAM, "
            f"Python {platform.python_version()}; load average {load_average()}")


def render(title: str, rows: list[dict[str, Any]], markdown: Path | None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=200)
    table = Table(title=title)
    cols = ("stage", "figure", "value", "goal", "ratio")
    for col in cols:
        table.add_column(col)
    for r in rows:
        table.add_row(*(r[c] for c in cols))
    console.print(table)
    if markdown is not None:
        lines = [f"#### {title}", "", "| " + " | ".join(cols) + " |", "|---|---|---|---|---|"]
        lines += ["| " + " | ".join(r[c] for c in cols) + " |" for r in rows]
        markdown.write_text("\n".join(lines) + "\n")
        console.print(f"wrote {markdown}")


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000, help="compounds of the generated partner (default 10 k)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--input", type=Path, help="use this T0/T1/T2 directory instead of generating one")
    parser.add_argument("--stages", default="prepare,warm,train,predict",
                        help=f"comma-separated, from {', '.join(STAGES)} (generate runs whenever --input is absent)")
    parser.add_argument("--jobs", type=int, default=1, help="cores for prepare / threads for train (default 1)")
    parser.add_argument("--hidden", default="2000", help="trunk hidden sizes for the plan (default 2000)")
    parser.add_argument("--epochs", type=int, default=2, help="training epochs (default 2)")
    parser.add_argument("--predict-n", type=int, default=1000, help="SMILES in the predict slice (default 1000)")
    parser.add_argument("--floor-sample", type=int, default=2000, help="molecules for the RDKit floor")
    parser.add_argument("--work", type=Path, help="work directory (default: a temporary one, removed at the end)")
    parser.add_argument("--markdown", type=Path, help="also write the table as Markdown here")
    parser.add_argument("--t1path-child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.t1path_child is not None:  # the t1path stage's own process (one clean RSS per measurement)
        print(json.dumps(t1path_child(args.t1path_child)))
        return []
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        raise SystemExit(f"error: unknown stage(s) {unknown}; use {', '.join(STAGES)}")
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    bench = Bench(args, work)
    title = f"scale, N = {args.input or args.n} ({machine()})"
    print(f"machine: {machine()}", flush=True)
    try:
        bench.setup()
        if args.input is None:
            bench.generate()
        for stage in ("floor", "prepare", "warm", "t1path", "train", "predict"):
            if stage in stages:
                print(f"stage {stage}…", flush=True)
                getattr(bench, f"stage_{stage}")()
        bench.not_run()
        bench.row("end", "load average", load_average())
        render(title, bench.rows, args.markdown)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    return bench.rows


if __name__ == "__main__":
    main()
