#!/usr/bin/env python3
"""Prediction speed: batch `Predictor.predict` vs data-prep's per-molecule cost, warm web API latency, memory.

Model: the default plan's shape (32000-bit ECFP6 counts → trunk [2000]) with --tasks heads (90 % classification,
10 % regression) and a conformal calibration, all with random weights: the network's cost does not depend on the
weight values, and no trained model of that size is needed to measure it.

1. Batch: MUV SMILES (../shared/data/raw/muv.csv.gz, a seeded --limit subsample; the bundled examples if
   ../shared is absent), one core, no cache. In interleaved blocks, alternating which goes first (so a shared
   machine's load and warm caches favour neither):
   data-prep's featurization alone (`compute_records` + keyed rows, what `prepare` does per molecule) and the
   whole `Predictor.predict` (the same featurization + size checks + network + conformal p-values + table).
   Goal: predict ≤ 1.2 × data-prep's time per molecule.
2. Web: `partner-kit serve`'s Flask app on a loopback port (werkzeug, threaded), one molecule per request
   (different molecules): `POST /api/predict`, `GET /molecule` (detail HTML) and one contribution map
   `GET /molecule/map.png`; p50 / p95, and the server thread's CPU time per request (what a quiet core would take,
   less HTTP: load-proof). Goals: p95 ≤ 100 ms (API), ≤ 300 ms (detail view).
3. Memory: the server process's RSS with the model loaded, and after the requests.
4. Streaming (`--stream 10000,100000`, issue #11): the whole `partner-kit predict` command as a child process on
   .smi files of those sizes (half MUV, half MOSES, ../shared/data/raw), RSS of the child sampled every 50 ms:
   peak RSS per size (goal: flat in the input size), wall and CPU seconds, the marginal rate between the sizes
   (start-up taken off) against data-prep's CPU time per molecule on a sample of the same SMILES in this run.

    .venv/bin/python benchmarks/bench_predict.py [--limit 10000] [--tasks 2000] [--requests 200] [--markdown FILE]
    .venv/bin/python benchmarks/bench_predict.py --only stream --stream 10000,100000 [--tasks 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from machine_info import cpu_name, load_average  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

MUV = ROOT / ".." / "shared" / "data" / "raw" / "muv.csv.gz"
MOSES = ROOT / ".." / "shared" / "data" / "raw" / "moses_train.csv.gz"
EXAMPLES = ROOT / "examples" / "tox21-3"


def load_smiles(limit: int, seed: int = 0) -> tuple[list[str], str]:
    if MUV.is_file():
        smiles = pd.read_csv(MUV, usecols=["smiles"])["smiles"].dropna().tolist()
        source = "MUV"
    else:
        smiles = pd.concat([pd.read_csv(EXAMPLES / p / "T2.csv") for p in "ABC"])["smiles"].dropna().tolist()
        source = "tox21-3 examples (../shared absent)"
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(smiles), size=min(limit, len(smiles)), replace=False)
    return [smiles[i] for i in sorted(pick)], source


def make_model(out: Path, n_tasks: int) -> tuple[Path, Path]:
    """A default-plan model directory with random weights, n_tasks heads and a conformal calibration."""
    import torch

    from consortium.plan import Plan
    from data_prep.key import generate_key, key_check_hash, load_key
    from partner_kit.conformal import calibrate
    from partner_kit.model import build_model
    from partner_kit.weights import save_model

    plan = Plan(name="bench")
    n_class = int(round(n_tasks * 0.9))
    tasks = pd.DataFrame({
        "task_index": np.arange(n_tasks), "kind": ["classification"] * n_class + ["regression"] * (n_tasks - n_class),
        "input_assay_id": [f"A{i:04d}" for i in range(n_tasks)],
        "threshold": [6.0] * n_class + [np.nan] * (n_tasks - n_class), "direction": ["high"] * n_tasks,
        "training_weight": 1.0, "aggregation_weight": 1.0, "censored_weight": 1.0,
    })
    torch.manual_seed(0)
    model = build_model(plan, tasks)
    key_path = generate_key(out / "secret.key")
    manifest = {"plan_hash": plan.hash, "key_check_hash": key_check_hash(load_key(key_path))}
    save_model(out / "model", model, plan=plan, tasks=tasks, metrics={}, extra={"prepared_manifest": manifest})
    rng = np.random.default_rng(0)
    n_cal = 200  # calibration compounds per task (a realistic validation fold)
    frame = pd.DataFrame({
        "row": np.tile(np.arange(n_cal), n_tasks), "task_index": np.repeat(np.arange(n_tasks), n_cal),
        "kind": np.repeat(tasks["kind"].to_numpy(), n_cal), "y": rng.integers(0, 2, n_cal * n_tasks).astype(float),
        "censor": 0, "pred": rng.random(n_cal * n_tasks)})
    calibrate(frame, tasks).save(out / "model")
    return out / "model", key_path


def batch_benchmark(predictor, smiles: list[str], block: int) -> dict[str, float]:
    from data_prep.fingerprint import keyed_csr
    from data_prep.parallel import compute_records

    config = predictor.plan.data
    prep_s, predict_s = 0.0, 0.0
    def prep(part: list[str]) -> float:
        t0 = time.perf_counter()
        records = compute_records(part, config, n_jobs=1, cache_dir=False, progress=False)
        keyed_csr([r.indices() for r in records], [r.counts() for r in records], config.fingerprint, predictor.key)
        return time.perf_counter() - t0

    def predict(part: list[str]) -> float:
        t0 = time.perf_counter()
        predictor.predict(part)
        return time.perf_counter() - t0

    for number, start in enumerate(range(0, len(smiles), block)):
        part = smiles[start:start + block]
        if number % 2 == 0:  # alternate which runs first, so neither gains from the other's warm caches
            prep_s += prep(part)
            predict_s += predict(part)
        else:
            predict_s += predict(part)
            prep_s += prep(part)
    n = len(smiles)
    return {"n": n, "prep_ms": 1000 * prep_s / n, "predict_ms": 1000 * predict_s / n,
            "prep_per_s": n / prep_s, "predict_per_s": n / predict_s, "ratio": predict_s / prep_s}


SERVER_CPU_MS: list[float] = []  # CPU time of each request's server thread (load-proof: no waiting counted)


def serve(app) -> tuple[str, object]:
    from werkzeug.serving import make_server

    inner = app.wsgi_app

    def timed(environ, start_response):  # the app's whole work for one request, on the thread serving it
        start = time.thread_time()
        body = b"".join(inner(environ, start_response))
        SERVER_CPU_MS.append(1000 * (time.thread_time() - start))
        return [body]

    app.wsgi_app = timed
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}", server


def latency(call, items: list[str]) -> dict[str, float]:
    """Wall p50/p95 seen by the client, and the server thread's CPU p50/p95 for the same requests."""
    times = []
    SERVER_CPU_MS.clear()
    for item in items:
        t0 = time.perf_counter()
        call(item)
        times.append(1000 * (time.perf_counter() - t0))
    arr, cpu = np.array(times), np.array(SERVER_CPU_MS)
    return {"p50": float(np.percentile(arr, 50)), "p95": float(np.percentile(arr, 95)), "n": len(arr),
            "cpu_p50": float(np.percentile(cpu, 50)), "cpu_p95": float(np.percentile(cpu, 95))}


def web_benchmark(url: str, smiles: list[str], n_requests: int) -> dict[str, dict[str, float]]:
    def post(s: str) -> None:
        body = json.dumps({"smiles": [s]}).encode()
        req = urllib.request.Request(f"{url}/api/predict", body, {"Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=60).read()

    def get(path: str) -> None:
        urllib.request.urlopen(f"{url}{path}", timeout=60).read()

    def quote(s: str) -> str:
        return urllib.parse.quote(s, safe="")

    for s in smiles[:5]:  # warm-up: lazy imports, first drawing
        post(s)
        get(f"/molecule?smiles={quote(s)}")
        get(f"/molecule/map.png?smiles={quote(s)}&task=0")
    items = smiles[5:5 + n_requests]
    return {
        "api": latency(post, items),
        "detail": latency(lambda s: get(f"/molecule?smiles={quote(s)}"), items),
        "map": latency(lambda s: get(f"/molecule/map.png?smiles={quote(s)}&task=0"), items),
    }


def stream_smiles(n: int, seed: int = 1) -> list[str]:
    """n SMILES: half a seeded MUV sample, half the first MOSES rows (drug-like, realistic for a partner)."""
    if not MOSES.is_file():
        raise SystemExit(f"error: --stream needs {MOSES} (the shared data beside the checkout)")
    muv, _ = load_smiles(n - n // 2, seed)
    moses = pd.read_csv(MOSES, usecols=["SMILES"], nrows=n // 2)["SMILES"].tolist()
    return muv + moses


def stream_benchmark(model_dir: Path, key: Path, work: Path, sizes: list[int], chunk: int) -> list[str]:
    """Table rows for `partner-kit predict` at each size: peak RSS, seconds, rates vs data-prep's CPU/molecule."""
    from bench_scale import BIN, run_child

    from consortium.plan import Plan
    from data_prep.parallel import compute_records

    smiles = stream_smiles(max(sizes))
    runs = []
    for size in sizes:
        path = work / f"stream-{size}.smi"
        path.write_text("".join(f"{s} m{i}\n" for i, s in enumerate(smiles[:size])))
        out = work / f"stream-{size}.csv"
        run = run_child([str(BIN / "partner-kit"), "predict", "--model", str(model_dir), "--key", str(key),
                         "--input", str(path), "--out", str(out), "--device", "cpu", "--chunk", str(chunk)])
        rows = sum(1 for _ in out.open()) - 1
        if rows != size:
            raise SystemExit(f"error: {out} has {rows} rows for {size} molecules")
        runs.append((size, run, out.stat().st_size))
        out.unlink()  # 2,000 tasks: ~50 kB per molecule
    sample = smiles[:: max(1, len(smiles) // 2000)][:2000]
    config = Plan(name="bench").data
    cpu = time.process_time()
    compute_records(sample, config, n_jobs=1, cache_dir=False, progress=False)
    prep_ms = 1000 * (time.process_time() - cpu) / len(sample)
    table = ["| SMILES | wall s | CPU s | mol/s (wall) | CPU ms / molecule | peak RSS MiB | output |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for size, run, nbytes in runs:
        table.append(f"| {size:,} | {run.seconds:.1f} | {run.cpu_s:.1f} | {size / run.seconds:.0f} | "
                     f"{1000 * run.cpu_s / size:.2f} | {run.peak_mb:.0f} | {nbytes / 2**30:.2f} GiB |")
    (n0, r0, _), (n1, r1, _) = runs[0], runs[-1]
    marginal_cpu_ms = 1000 * (r1.cpu_s - r0.cpu_s) / max(n1 - n0, 1)
    table += ["", f"- marginal CPU per molecule ({n0:,} → {n1:,}, start-up taken off): {marginal_cpu_ms:.2f} ms; "
              f"data-prep's featurization (`compute_records`, {len(sample)} of the same SMILES, this process): "
              f"{prep_ms:.2f} ms → **{marginal_cpu_ms / prep_ms:.2f} ×** (goal ≤ 1.2 ×)",
              f"- peak RSS {r0.peak_mb:.0f} → {r1.peak_mb:.0f} MiB for {n1 / n0:.0f} × the input "
              f"(**{(r1.peak_mb - r0.peak_mb) / max(n1 - n0, 1) * 1024:+.2f} KiB per molecule**; goal: flat)"]
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=10_000)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--block", type=int, default=500)
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--only", choices=["all", "stream"], default="all",
                        help="stream: only the streaming `partner-kit predict` table (needs --stream)")
    parser.add_argument("--stream", default="", help="comma-separated input sizes for the streaming table")
    parser.add_argument("--chunk", type=int, default=500, help="partner-kit predict --chunk for the streaming table")
    args = parser.parse_args()
    sizes = [int(n) for n in args.stream.split(",") if n.strip()]
    if args.only == "stream":
        if len(sizes) < 2:
            raise SystemExit("error: --only stream needs --stream with two sizes or more, e.g. 10000,100000")
        with tempfile.TemporaryDirectory(prefix="bench_predict_stream_") as tmp:
            model_dir, key = make_model(Path(tmp), args.tasks)
            load0 = load_average()
            table = stream_benchmark(model_dir, key, Path(tmp), sizes, args.chunk)
        text = (f"CPU: {cpu_name()}; load average before: {load0}, after: {load_average()}; model: 32000 x [2000] "
                f"trunk, {args.tasks} tasks; `partner-kit predict --chunk {args.chunk}` as a child process, "
                "OMP_NUM_THREADS=1\n\n" + "\n".join(table) + "\n")
        print(text)
        if args.markdown:
            args.markdown.write_text(text)
        return

    import torch

    torch.set_num_threads(1)
    from partner_kit.predict import Predictor
    from partner_kit.web import create_app

    process = psutil.Process(os.getpid())
    smiles, source = load_smiles(args.limit)
    lines = [f"CPU: {cpu_name()}; load average before: {load_average()}; one core (torch threads 1)",
             f"molecules: {len(smiles)} from {source}; model: 32000 x [2000] trunk, {args.tasks} tasks, random "
             "weights, conformal calibration of 200 compounds per task"]
    with tempfile.TemporaryDirectory(prefix="bench_predict_") as tmp:
        rss0 = process.memory_info().rss
        model_dir, key = make_model(Path(tmp), args.tasks)
        predictor = Predictor(model_dir, key)
        rss_loaded = process.memory_info().rss
        batch = batch_benchmark(predictor, smiles, args.block)
        url, server = serve(create_app(predictor))
        try:
            web = web_benchmark(url, smiles, args.requests)
        finally:
            server.shutdown()
        rss_after = process.memory_info().rss
    lines.append(f"load average after: {load_average()}")
    table = [
        "| measure | value | goal |", "|---|---|---|",
        f"| data-prep featurization, per molecule | {batch['prep_ms']:.2f} ms ({batch['prep_per_s']:.0f} mol/s) | |",
        f"| `Predictor.predict`, per molecule | {batch['predict_ms']:.2f} ms ({batch['predict_per_s']:.0f} mol/s) | |",
        f"| predict / data-prep | {batch['ratio']:.2f} × | ≤ 1.2 × |",
        f"| `POST /api/predict`, one molecule: p50 / p95 | {web['api']['p50']:.1f} / {web['api']['p95']:.1f} ms "
        "| p95 ≤ 100 ms |",
        f"| the same, server thread's CPU per request: p50 / p95 | {web['api']['cpu_p50']:.1f} / "
        f"{web['api']['cpu_p95']:.1f} ms | (a quiet core's latency, less HTTP) |",
        f"| `GET /molecule` detail HTML: p50 / p95 | {web['detail']['p50']:.1f} / {web['detail']['p95']:.1f} ms "
        "| p95 ≤ 300 ms |",
        f"| `GET /molecule/map.png`, one map: p50 / p95 | {web['map']['p50']:.1f} / {web['map']['p95']:.1f} ms | |",
        f"| server RSS: model loaded / after the requests | {(rss_loaded - rss0) / 2**20:.0f} MB over the "
        f"interpreter ({rss_loaded / 2**20:.0f} MB total) / {rss_after / 2**20:.0f} MB | |",
    ]
    text = "\n".join(lines) + "\n\n" + "\n".join(table) + "\n"
    print(text)
    if args.markdown:
        args.markdown.write_text(text)


if __name__ == "__main__":
    main()
