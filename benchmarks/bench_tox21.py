"""Tox21 quality: the multitask network vs a per-task random forest, same scaffold folds and fingerprints.

`../shared/data/raw/tox21.csv.gz` goes through `data_prep.wide.import_wide` and `data_prep.prepare.prepare`
(ECFP6 32000 bits, 5 keyed scaffold folds), then each fold in turn is the test fold:
  network  partner_kit LocalTrainer (plan below), validation fold = next fold, early stopping on validation
           AUC-PR, best epoch kept; optionally an ensemble of several seeds (mean probability)
  forest   scikit-learn RandomForestClassifier, 200 trees, one per task, trained on all non-test rows
           (training + validation folds: the forest needs no early stopping, so it gets the extra rows)
Reports test AUC-ROC per task and the mean over the 12 tasks, per fold and averaged over the folds.

Usage:
  .venv/bin/python benchmarks/bench_tox21.py                    # 5 folds, network + forest
  .venv/bin/python benchmarks/bench_tox21.py --folds 0 --no-forest --seeds 3
  .venv/bin/python benchmarks/bench_tox21.py --no-network --jobs 2          # the forest only
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def tox21_plan(args: argparse.Namespace):
    from consortium.plan import Plan, TrainingSpec, TrunkSpec

    return Plan(
        name="tox21-bench",
        trunk=TrunkSpec(hidden_sizes=[int(h) for h in args.hidden.split(",")], dropout=args.dropout,
                        input_dropout=args.input_dropout),
        training=TrainingSpec(learning_rate=args.lr, weight_decay=args.weight_decay, batch_fraction=0.02,
                              min_batch_size=32, max_batch_size=4096, max_epochs=args.max_epochs,
                              patience=args.patience, seed=0),
    )


def prepare_tox21(plan, work: Path) -> Path:
    from data_prep.config import plan_hash
    from data_prep.key import generate_key
    from data_prep.prepare import prepare
    from data_prep.wide import import_wide

    inputs, out = work / "tox21-input", work / "tox21-prepared"
    manifest = out / "manifest.json"
    # Reuse earlier preparations made with the same data sections (trunk/training settings do not matter).
    if manifest.is_file() and json.loads(manifest.read_text()).get("data_config_hash") == plan_hash(
            plan.data.to_dict()):
        return out
    plan.save(work / "plan.toml")
    key = work / "secret.key"
    if not key.exists():
        generate_key(key)
    t0 = time.perf_counter()
    import_wide(SHARED / "data" / "raw" / "tox21.csv.gz", "smiles", inputs, id_col="mol_id")
    prepare(work / "plan.toml", key, inputs, out, progress=False)
    print(f"imported and prepared Tox21 in {time.perf_counter() - t0:.0f} s", flush=True)
    return out


def network_probs(plan, data, test_fold: int, n_folds: int, seeds: list[int]) -> tuple[np.ndarray, dict]:
    from partner_kit.training import LocalTrainer, train_early_stopping

    rows = np.flatnonzero(data.folds == test_fold)
    probs, info = [], []
    for seed in seeds:
        t0 = time.perf_counter()
        trainer = LocalTrainer(plan, data, valid_fold=(test_fold + 1) % n_folds, test_fold=test_fold, seed=seed)
        run = train_early_stopping(trainer, plan.training.max_epochs, plan.training.patience)
        probs.append(trainer.predict_rows(rows)[0])
        info.append({"seed": seed, "best_epoch": run["best_epoch"], "seconds": time.perf_counter() - t0})
    return np.mean(probs, axis=0), {"runs": info}


def forest_probs(data, test_fold: int, trees: int, jobs: int) -> tuple[np.ndarray, dict]:
    from sklearn.ensemble import RandomForestClassifier

    t0 = time.perf_counter()
    test = np.flatnonzero(data.folds == test_fold)
    train = np.flatnonzero(data.folds != test_fold)
    yc = data.y_class.tocsc()
    x_train, x_test = data.x[train], data.x[test]
    out = np.full((test.size, yc.shape[1]), np.nan)
    for j in range(yc.shape[1]):
        col = yc[:, j].toarray().ravel()
        labelled = train[col[train] != 0]
        pos = np.searchsorted(train, labelled)
        rf = RandomForestClassifier(n_estimators=trees, n_jobs=jobs, random_state=0)
        rf.fit(x_train[pos], col[labelled] > 0)
        out[:, j] = rf.predict_proba(x_test)[:, 1]
    return out, {"seconds": time.perf_counter() - t0}


def test_auc(data, test_fold: int, probs: np.ndarray) -> np.ndarray:
    from partner_kit.metrics import classification_metrics

    rows = np.flatnonzero(data.folds == test_fold)
    yc = data.y_class[rows].tocsc()
    aucs = []
    for j in range(yc.shape[1]):
        s, e = yc.indptr[j], yc.indptr[j + 1]
        aucs.append(classification_metrics(yc.data[s:e], probs[yc.indices[s:e], j])["auc_roc"])
    return np.array(aucs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folds", type=int, nargs="+", default=None, help="test folds (default: all)")
    ap.add_argument("--seeds", type=int, default=1, help="network ensemble size (seeds 0..n-1)")
    ap.add_argument("--hidden", default="2000")
    ap.add_argument("--dropout", type=float, default=0.5)
    ap.add_argument("--input-dropout", type=float, default=0.2)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--weight-decay", type=float, default=0.0)
    ap.add_argument("--max-epochs", type=int, default=40)
    ap.add_argument("--patience", type=int, default=5)
    ap.add_argument("--trees", type=int, default=200)
    ap.add_argument("--jobs", type=int, default=-1, help="forest worker threads")
    ap.add_argument("--no-forest", action="store_true")
    ap.add_argument("--no-network", action="store_true")
    ap.add_argument("--work", type=Path, default=None, help="keep imported/prepared data here")
    ap.add_argument("--threads", type=int, default=None, help="torch threads")
    args = ap.parse_args()

    import torch
    from bench_training import machine

    from data_prep.prepared import PreparedData

    if args.threads:
        torch.set_num_threads(args.threads)
    plan = tox21_plan(args)
    with tempfile.TemporaryDirectory(prefix="bench-tox21-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        data = PreparedData.load(prepare_tox21(plan, work))
        data.manifest["plan_hash"] = plan.hash   # same data sections; only trunk/training settings vary
        n_folds = plan.data.folds.n_folds
        folds = args.folds if args.folds is not None else list(range(n_folds))
        names = data.tasks["input_assay_id"].astype(str).tolist()
        print(f"machine: {machine()}")
        print(f"Tox21: {data.n_rows} structures, {len(names)} tasks; network plan: hidden {plan.trunk.hidden_sizes}, "
              f"dropout {plan.trunk.dropout}, input dropout {plan.trunk.input_dropout}, lr "
              f"{plan.training.learning_rate}, {args.seeds} seed(s)\n", flush=True)
        results = {"network": [], "forest": []}
        for fold in folds:
            line = f"fold {fold}:"
            if not args.no_network:
                probs, info = network_probs(plan, data, fold, n_folds, list(range(args.seeds)))
                net = test_auc(data, fold, probs)
                results["network"].append(net)
                line += f" network mean AUC-ROC {np.nanmean(net):.4f} ({info['runs']})"
            if not args.no_forest:
                probs, finfo = forest_probs(data, fold, args.trees, args.jobs)
                rf = test_auc(data, fold, probs)
                results["forest"].append(rf)
                line += f" | forest {np.nanmean(rf):.4f} ({finfo['seconds']:.0f} s)"
            print(line, flush=True)

        print(f"\nmachine: {machine()}")
        print(f"{'task':<28}" + "".join(f"{m:>10}" for m in results if results[m]))
        table = {m: np.vstack(v) for m, v in results.items() if v}
        assay_names = _assay_names(work, names)
        for j, name in enumerate(assay_names):
            print(f"{name:<28}" + "".join(f"{np.nanmean(t[:, j]):>10.4f}" for t in table.values()))
        print(f"{'mean over tasks, ' + str(len(folds)) + ' fold(s)':<28}"
              + "".join(f"{np.nanmean(t):>10.4f}" for t in table.values()))
        for m, t in table.items():
            per_fold = ", ".join(f"{np.nanmean(row):.4f}" for row in t)
            print(f"  {m}: per test fold {per_fold}")


def _assay_names(work: Path, ids: list[str]) -> list[str]:
    import pandas as pd

    t0 = work / "tox21-input" / "T0.csv"
    if not t0.is_file():
        return ids
    meta = pd.read_csv(t0, dtype=str).set_index("input_assay_id")["assay_name_META"].to_dict()
    return [meta.get(i, i) for i in ids]


if __name__ == "__main__":
    main()
