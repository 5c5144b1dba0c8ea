"""float32 vs float16 trunks on the wire (`federation.wire_dtype`): bytes per partner and round, and AUC-PR.

Two plans that differ only in `federation.wire_dtype`, each run as `consortium simulate` (one thread, `nice`) on
the same partners (default: the README demo, `examples/tox21-3`). The embedded grid counts every message's
serialized bytes both ways (the same protobuf the deployed SuperLink carries).

    .venv/bin/python benchmarks/bench_wire.py --out /tmp/wire-bench [--rounds 20 --local-steps 10]
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


def run_variant(args: argparse.Namespace, dtype: str) -> dict[str, object]:
    out = args.out / dtype
    out.mkdir(parents=True, exist_ok=True)
    plan = Plan(name="wire-bench", data=PrepConfig(fingerprint=FingerprintConfig(size=args.fp_size)),
                trunk=TrunkSpec(hidden_sizes=[args.hidden]),
                federation=FederationSpec(rounds=args.rounds, local_steps=args.local_steps,
                                          min_partners=len(args.partners), wire_dtype=dtype))
    plan_path = plan.save(out / "plan.toml")
    cmd = ["nice", str(ROOT / ".venv/bin/consortium"), "simulate", "--plan", str(plan_path), "--key", str(args.key),
           "--out", str(out / "run"), "--partners", *map(str, args.partners)]
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    with open(out / "simulate.log", "w") as log:
        subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=log,
                       stderr=subprocess.STDOUT)
    summary = json.loads((out / "run" / "summary.json").read_text())
    rows = summary["partners"]
    report = json.loads((out / "run" / "report.json").read_text())
    per_task = report["consortium"]["pairs"]["federated-single"]["auc_pr"]["mean_delta"]
    messages = args.rounds  # fit replies per partner; the partner also receives the final evaluate message
    return {
        "wire_dtype": dtype,
        "mib_sent_per_partner_round": statistics.mean(summary["bytes_from_partner"].values()) / messages / 2**20,
        "mib_received_per_partner_round": statistics.mean(summary["bytes_to_partner"].values()) / messages / 2**20,
        "federated_auc_pr": statistics.mean(r["federated_auc_pr"] for r in rows),
        "single_auc_pr": statistics.mean(r["single_auc_pr"] for r in rows),
        "delta_auc_pr": statistics.mean(r["delta_auc_pr"] for r in rows),
        "task_delta_auc_pr": [per_task["estimate"], per_task["low"], per_task["high"]],
        "wall_s": round(time.perf_counter() - t0, 1), "load_before": round(load0, 2),
        "load_after": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--partners", type=Path, nargs="+",
                    default=[ROOT / "examples" / "tox21-3" / p for p in ("A", "B", "C")])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--key", type=Path, default=ROOT / "examples" / "demo-secret.key")
    ap.add_argument("--fp-size", type=int, default=4096)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--local-steps", type=int, default=10)
    args = ap.parse_args()
    results = []
    for dtype in ("float32", "float16"):
        results.append(run_variant(args, dtype))
        print(json.dumps(results[-1]), flush=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print("\n| wire dtype | MiB sent / partner / round | MiB received / partner / round | mean AUC-PR single | "
          "federated | Δ fed − single (partners) | Δ per task [95 % CI] | wall s | load before / after |")
    print("|---|---:|---:|---:|---:|---:|---|---:|---|")
    for r in results:
        t = r["task_delta_auc_pr"]
        print(f"| {r['wire_dtype']} | {r['mib_sent_per_partner_round']:.2f} | "
              f"{r['mib_received_per_partner_round']:.2f} | {r['single_auc_pr']:.3f} | "
              f"{r['federated_auc_pr']:.3f} | {r['delta_auc_pr']:+.3f} | "
              f"{t[0]:+.3f} [{t[1]:+.3f}, {t[2]:+.3f}] | {r['wall_s']:.0f} | {r['load_before']} / {r['load_after']} |")


if __name__ == "__main__":
    main()
