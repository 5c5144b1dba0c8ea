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
   `GET /molecule/map.png`; p50 / p95. Goals: p95 ≤ 100 ms (API), ≤ 300 ms (detail view).
3. Memory: the server process's RSS with the model loaded, and after the requests.

    .venv/bin/python benchmarks/bench_predict.py [--limit 10000] [--tasks 2000] [--requests 200] [--markdown FILE]
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


def serve(app) -> tuple[str, object]:
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}", server


def latency(call, items: list[str]) -> dict[str, float]:
    times = []
    for item in items:
        t0 = time.perf_counter()
        call(item)
        times.append(1000 * (time.perf_counter() - t0))
    arr = np.array(times)
    return {"p50": float(np.percentile(arr, 50)), "p95": float(np.percentile(arr, 95)), "n": len(arr)}


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=10_000)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--block", type=int, default=500)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()

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
