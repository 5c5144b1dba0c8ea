"""The cost of differential privacy in AUC-PR: `consortium simulate` without DP and at several noise levels.

One plan per variant (same data, trunk, rounds and seed; only `federation.dp_*` differ), each run as its own
`consortium simulate` process (one thread, `nice`), one after another. Prints a Markdown table: the consortium's
mean Δ AUC-PR (federated − single, mean over partners of each partner's aggregated test-fold Δ), the mean
federated AUC-PR, the ε reached at the plan's δ (last ledger line), wall time and the load average around the run.

    .venv/bin/python benchmarks/bench_dp.py --partners /work/shared/data/consortia/toxcast-6/* \
        --out /tmp/dp-bench --sigmas 0.01 0.3 3.0 --clip 1.0
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from consortium.plan import FederationSpec, Plan, TrunkSpec  # noqa: E402
from data_prep.config import FingerprintConfig, PrepConfig  # noqa: E402


def make_plan(args: argparse.Namespace, sigma: float) -> Plan:
    fed = FederationSpec(rounds=args.rounds, local_steps=args.local_steps, min_partners=len(args.partners),
                         dp_enabled=sigma > 0, dp_noise_multiplier=sigma if sigma > 0 else 1.0,
                         dp_clipping_norm=args.clip, dp_delta=args.delta)
    return Plan(name="dp-bench", data=PrepConfig(fingerprint=FingerprintConfig(size=args.fp_size)),
                trunk=TrunkSpec(hidden_sizes=[args.hidden]), federation=fed)


def run_variant(args: argparse.Namespace, sigma: float) -> dict[str, object]:
    name = "no-dp" if sigma == 0 else f"sigma-{sigma:g}"
    out = args.out / name
    out.mkdir(parents=True, exist_ok=True)
    plan_path = make_plan(args, sigma).save(out / "plan.toml")
    cmd = ["nice", str(ROOT / ".venv/bin/consortium"), "simulate", "--plan", str(plan_path), "--key", str(args.key),
           "--out", str(out / "run"), "--partners", *map(str, args.partners)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    with open(out / "simulate.log", "w") as log:
        subprocess.run(cmd, check=True, env=env, stdout=log, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    summary = json.loads((out / "run" / "summary.json").read_text())
    rows = summary["partners"]
    report = json.loads((out / "run" / "report.json").read_text())
    per_task = report["consortium"]["pairs"]["federated-single"]["auc_pr"]["mean_delta"]
    ledger = [json.loads(line) for line in (out / "run" / "ledger.jsonl").read_text().splitlines() if line]
    return {
        "variant": name, "sigma": sigma,
        "delta_auc_pr": statistics.mean(r["delta_auc_pr"] for r in rows),
        "federated_auc_pr": statistics.mean(r["federated_auc_pr"] for r in rows),
        "single_auc_pr": statistics.mean(r["single_auc_pr"] for r in rows),
        "task_delta_auc_pr": [per_task["estimate"], per_task["low"], per_task["high"]],
        "per_partner": {r["partner"]: round(r["delta_auc_pr"], 4) for r in rows},
        "best_rounds": {r["partner"]: r.get("best_round") for r in rows},
        "epsilon": ledger[-1].get("dp_epsilon"), "rounds": len(ledger),
        "wall_s": round(wall, 1), "load_before": round(load0, 2), "load_after": round(os.getloadavg()[0], 2),
    }


def lo_hi(v: list[float] | None) -> str:
    return "–" if not v else f"{v[0]:+.3f} [{v[1]:+.3f}, {v[2]:+.3f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--partners", type=Path, nargs="+", required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--key", type=Path, default=ROOT / "examples" / "demo-secret.key")
    ap.add_argument("--sigmas", type=float, nargs="*", default=[0.01, 0.3, 3.0], help="noise multipliers (0 = off)")
    ap.add_argument("--no-baseline-run", action="store_true", help="skip the run without DP")
    ap.add_argument("--clip", type=float, default=1.0, help="federation.dp_clipping_norm")
    ap.add_argument("--delta", type=float, default=1e-5)
    ap.add_argument("--fp-size", type=int, default=4096)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--local-steps", type=int, default=10)
    args = ap.parse_args()
    sigmas = ([] if args.no_baseline_run else [0.0]) + list(args.sigmas)
    saved = args.out / "results.json"  # earlier variants of the same --out are kept (rerun one: same name)
    results = json.loads(saved.read_text()) if saved.is_file() else []
    for sigma in sigmas:
        result = run_variant(args, sigma)
        results = [r for r in results if r["variant"] != result["variant"]] + [result]
        print(json.dumps(result), flush=True)
        (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"\n| variant | σ | ε at δ = {args.delta:g} after {args.rounds} rounds | mean AUC-PR single | federated | "
          "Δ fed − single (partners) | Δ per task [95 % CI] | wall s | load before / after |")
    print("|---|---:|---:|---:|---:|---:|---|---:|---|")
    for r in results:
        eps = "–" if r["epsilon"] is None else f"{r['epsilon']:.3g}"
        print(f"| {r['variant']} | {r['sigma']:g} | {eps} | {r['single_auc_pr']:.3f} | {r['federated_auc_pr']:.3f} | "
              f"{r['delta_auc_pr']:+.3f} | {lo_hi(r.get('task_delta_auc_pr'))} | {r['wall_s']:.0f} | "
              f"{r['load_before']} / {r['load_after']} |")


if __name__ == "__main__":
    main()
