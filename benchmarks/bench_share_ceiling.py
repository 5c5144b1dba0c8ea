"""How much of the pooled uplift a *second pooled model* captures: the ceiling of the "share" measure.

The share (federated − single) / (pooled − single) compares one federated draw with one pooled draw. Training
is random (initial weights, batches, dropout), so even a federation that trained exactly as the pooled model
does would not reproduce the pooled draw's test figures. This benchmark retrains the pooled model of every
replicate of a finished `consortium simulate --pooled` run with another training seed (same plan, key, folds,
selection) and scores it in the federated model's place against the run's own single-partner and pooled models,
with the report's own statistics (`consortium report`). What it prints is the share an algorithm identical to
pooling gets under this measure; a federation's share is read against it.

    .venv/bin/python benchmarks/bench_share_ceiling.py --run RUN --out OUT [--seed-offset 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from consortium.plan import Plan  # noqa: E402
from data_prep.prepared import PreparedData  # noqa: E402


def retrain(run: Path, out: Path, offset: int) -> list[dict[str, object]]:
    """Pooled models of every replicate, seed + offset; returns the comparison's model list (pooled as federated)."""
    from partner_kit.pooled import train_pooled

    meta = json.loads((run / "comparison.json").read_text())
    replicates = sorted({(m["seed"], m["test_fold"]) for m in meta["models"]})
    datas = {p: PreparedData.load(Path(info["prepared"])) for p, info in meta["partners"].items()}
    models = [dict(m, dir=str((run / m["dir"]).resolve())) for m in meta["models"] if m["variant"] != "federated"]
    for seed, test_fold in replicates:
        single = next(m for m in meta["models"] if m["seed"] == seed and m["test_fold"] == test_fold)
        fold_dir = (run / single["dir"]).parents[2]  # folds/N/partners/P/baseline -> folds/N
        plan = Plan.load(fold_dir / "plan.toml")
        valid_fold = json.loads((run / single["dir"] / "metrics.json").read_text())["valid_fold"]
        dirs = {p: out / fold_dir.name / p / "pooled-reseeded" for p in datas}
        t0 = time.perf_counter()
        train_pooled(plan, datas, dirs, seed=seed + offset, valid_fold=valid_fold, test_fold=test_fold)
        print(f"replicate seed {seed}, test fold {test_fold}: pooled retrained with seed {seed + offset} "
              f"in {time.perf_counter() - t0:.0f} s", flush=True)
        models += [{"seed": seed, "test_fold": test_fold, "partner": p, "variant": "federated", "dir": str(d)}
                   for p, d in dirs.items()]
    doc = dict(meta, models=models, selection=meta.get("selection", "") + "; the 'federated' column is the pooled "
               f"model retrained with training seed + {offset} (bench_share_ceiling.py)")
    (out / "comparison.json").write_text(json.dumps(doc, indent=2) + "\n")
    return models


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, required=True, help="finished `consortium simulate --pooled` run directory")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed-offset", type=int, default=1000)
    ap.add_argument("--replicates", type=int, default=1000, help="bootstrap replicates of the report")
    args = ap.parse_args()
    from consortium.report import json_path, write_report

    args.out.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    retrain(args.run, args.out, args.seed_offset)
    target = args.out / "report.html"
    write_report(args.out, target, n_boot=args.replicates, seed=0)
    data = json.loads(json_path(target).read_text())
    share = data["consortium"].get("pooled_uplift_share", {})
    pairs = data["consortium"]["pairs"]
    print(f"\nload average {load[0]:.1f} → {os.getloadavg()[0]:.1f}; run {args.run}")
    print("| compared | consortium Δ AUC-PR [95 % CI] | share of the pooled uplift [95 % CI] |")
    print("|---|---:|---:|")
    for name, label in (("federated-single", "pooled retrained − single"), ("pooled-single", "pooled − single")):
        d = pairs.get(name, {}).get("auc_pr", {}).get("mean_delta", {})
        extra = "" if name != "federated-single" else (
            f"{share.get('estimate', float('nan')):.0%} [{share.get('low', float('nan')):.0%}, "
            f"{share.get('high', float('nan')):.0%}]" if share.get("reported") else share.get("why", "not reported"))
        print(f"| {label} | {d.get('estimate', float('nan')):+.3f} [{d.get('low', float('nan')):+.3f}, "
              f"{d.get('high', float('nan')):+.3f}] | {extra} |")
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
