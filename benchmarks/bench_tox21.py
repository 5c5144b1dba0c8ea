"""Tox21 quality: the multitask network vs a per-task random forest, same scaffold folds and fingerprints.

`../shared/data/raw/tox21.csv.gz` goes through `data_prep.wide.import_wide` and `data_prep.prepare.prepare`
(ECFP, by default radius 3 / 32000 bits / binary, 5 keyed scaffold folds), then each fold in turn is the test fold:
  network  partner_kit LocalTrainer (plan below), validation fold = next fold, early stopping on validation
           AUC-PR, best epoch kept; optionally an ensemble of several seeds (mean probability) and a refit of
           each seed on training + validation rows for the chosen number of epochs (`--refit`)
  forest   scikit-learn RandomForestClassifier, 200 trees, one per task, trained on all non-test rows
           (training + validation folds: the forest needs no early stopping, so it gets the extra rows)
  chemprop (`--chemprop`) chemprop v2 D-MPNN with its defaults (50 epochs, best epoch by validation loss), trained
           on the training folds, validated on the validation fold, predicting the test fold: the standardized
           SMILES of exactly the rows the network sees (see benchmarks/chemprop_tox21.py; benchmark-only, own venv:
             python3.11 -m venv /tmp/chemprop-venv && /tmp/chemprop-venv/bin/pip install torch==2.13.0 && \
                 /tmp/chemprop-venv/bin/pip install 'chemprop>=2,<3'
           then `--chemprop --chemprop-python /tmp/chemprop-venv/bin/python`)
  network + aux (`--aux CSV`) the network pooled with another partner's wide CSV (e.g. ToxCast), prepared with the
           same plan and key, so both partners' scaffold folds agree: rows stacked, each partner its own heads
           (`partner_kit.pooled.pool`, the bound a federation of the two approaches); the aux partner's test-fold
           rows are never trained on, and the epoch is chosen on Tox21's own validation tasks (`--aux-select`)
Reports test AUC-ROC per task and the mean over the 12 tasks, per fold and averaged over the folds, all
models scored by the same code (`test_auc`).
The scaffold folds depend on the secret key: pass one `--key` to compare fingerprint settings on the same folds.

Usage:
  .venv/bin/python benchmarks/bench_tox21.py                    # 5 folds, network + forest
  .venv/bin/python benchmarks/bench_tox21.py --folds 0 --no-forest --seeds 3
  .venv/bin/python benchmarks/bench_tox21.py --no-network --jobs 2          # the forest only
  .venv/bin/python benchmarks/bench_tox21.py --threads 1 --jobs 1 --key KEY --work DIR \
      --radius 2 --seeds 5 --refit                                          # the best setting found (ECFP4)
  .venv/bin/python benchmarks/bench_tox21.py --threads 1 --key KEY --work DIR --radius 2 --refit --no-forest \
      --aux ../shared/data/raw/toxcast_data.csv.gz                          # Tox21 with a ToxCast partner
  .venv/bin/python benchmarks/bench_tox21.py --split random ...             # random folds: context only
  .venv/bin/python benchmarks/bench_tox21.py --no-network --no-forest --chemprop \
      --chemprop-python /tmp/chemprop-venv/bin/python --key KEY --work DIR --radius 2   # chemprop only
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
    from data_prep.config import FingerprintConfig, PrepConfig

    return Plan(
        name="tox21-bench",
        data=PrepConfig(fingerprint=FingerprintConfig(radius=args.radius, size=args.fp_size,
                                                      binary=not args.counts)),
        trunk=TrunkSpec(hidden_sizes=[int(h) for h in args.hidden.split(",")], dropout=args.dropout,
                        input_dropout=args.input_dropout),
        training=TrainingSpec(learning_rate=args.lr, weight_decay=args.weight_decay, batch_fraction=0.02,
                              min_batch_size=32, max_batch_size=4096, max_epochs=args.max_epochs,
                              patience=args.patience, seed=0),
    )


def prepare_tox21(plan, work: Path, key_file: Path | None = None) -> Path:
    return prepare_wide(plan, work, SHARED / "data" / "raw" / "tox21.csv.gz", "tox21", key_file, id_col="mol_id")


def prepare_wide(plan, work: Path, source: Path, name: str, key_file: Path | None = None,
                 id_col: str | None = None) -> Path:
    """A wide CSV (smiles + one column per assay) imported and prepared under `plan` and the key, in WORK/NAME-*."""
    from data_prep.config import plan_hash
    from data_prep.key import generate_key, key_check_hash, load_key
    from data_prep.prepare import prepare
    from data_prep.wide import import_wide

    inputs, out = work / f"{name}-input", work / f"{name}-prepared"
    manifest = out / "manifest.json"
    # The scaffold folds are keyed: the same key gives the same folds, whatever the fingerprint settings.
    key = key_file or work / "secret.key"
    if not key.exists():
        generate_key(key)
    # Reuse an earlier preparation made with the same data sections and key (trunk/training settings do not matter).
    if manifest.is_file():
        made = json.loads(manifest.read_text())
        if (made.get("data_config_hash") == plan_hash(plan.data.to_dict())
                and made.get("key_check_hash") == key_check_hash(load_key(key))):
            return out
    plan.save(work / "plan.toml")
    t0 = time.perf_counter()
    import_wide(source, "smiles", inputs, id_col=id_col)
    prepare(work / "plan.toml", key, inputs, out, progress=False)
    print(f"imported and prepared {source.name} in {time.perf_counter() - t0:.0f} s", flush=True)
    return out


def random_folds(data, n_folds: int, seed: int) -> np.ndarray:
    """A seeded random assignment of the rows to `n_folds` folds of equal size (context only, not the protocol)."""
    rng = np.random.default_rng(seed)
    return (rng.permutation(data.n_rows) % n_folds).astype(np.int8)


def without_validation_fold(data, valid_fold: int, test_fold: int, n_folds: int):
    """A shallow copy of `data` whose validation-fold rows join a training fold (the validation fold is empty)."""
    import copy

    folds = np.asarray(data.folds).copy()
    folds[folds == valid_fold] = next(f for f in range(n_folds) if f not in (valid_fold, test_fold))
    merged = copy.copy(data)
    merged.folds = folds
    return merged


def network_probs(plan, data, test_fold: int, n_folds: int, seeds: list[int],
                  refit: bool = False, cv_ensemble: bool = False, aux=None,
                  own_selection: bool = True) -> tuple[np.ndarray, dict]:
    """Test-fold probabilities, mean over seeds. Each seed: early stopping on the validation fold (next fold);
    with `refit`, a fresh model with the same seed is then trained on training + validation rows for the number
    of epochs early stopping chose; with `cv_ensemble`, one model per non-test fold as the validation fold, so
    every non-test row trains most of the members (the test fold is never used for training or selection).
    With `aux` (another partner's prepared data, same plan and key, so the same scaffold folds), the network is
    the pooled model of the two (`partner_kit.pooled.pool`: rows stacked, each partner its own heads; the bound
    federation approaches): the aux partner's test- and validation-fold rows play the same roles as Tox21's.
    `own_selection`: the epoch is chosen on Tox21's validation tasks alone, as a federated partner chooses its
    round on its own validation fold (otherwise on the pooled validation fold, the aux partner's tasks included)."""
    from partner_kit.training import LocalTrainer, derive_seed, train_early_stopping

    rows = np.flatnonzero(data.folds == test_fold)
    cols = np.arange(len(data.class_tasks))
    train_data = data
    if aux is not None:
        from partner_kit.pooled import pool

        train_data, slices = pool({"tox21": data, "aux": aux})
        part = slices["tox21"]
        rows, cols = rows + part.rows.start, part.class_cols
    valid_folds = ([f for f in range(n_folds) if f != test_fold] if cv_ensemble
                   else [(test_fold + 1) % n_folds])
    probs, info = [], []
    for seed in seeds:
        for valid_fold in valid_folds:
            t0 = time.perf_counter()
            trainer = LocalTrainer(plan, train_data, valid_fold=valid_fold, test_fold=test_fold, seed=seed)
            if aux is not None and own_selection:
                trainer.selection = own_tasks_selection(trainer, data, part)
            run = train_early_stopping(trainer, plan.training.max_epochs, plan.training.patience)
            if refit:
                merged = without_validation_fold(train_data, valid_fold, test_fold, n_folds)
                trainer = LocalTrainer(plan, merged, valid_fold=valid_fold, test_fold=test_fold, seed=seed)
                for epoch in range(run["best_epoch"] + 1):
                    trainer.train_epoch(derive_seed(seed, epoch))
            probs.append(trainer.predict_rows(rows)[0][:, cols])
            info.append({"seed": seed, "valid_fold": valid_fold, "best_epoch": run["best_epoch"],
                         "seconds": round(time.perf_counter() - t0, 1),
                         "auc_roc": round(float(np.nanmean(test_auc(data, test_fold, probs[-1]))), 4)})
    return np.mean(probs, axis=0), {"runs": info}


def own_tasks_selection(trainer, data, part):
    """`trainer.selection` on `data`'s own rows and tasks only (`part`: where they sit in the pooled data)."""
    from partner_kit.batching import CsrBatcher
    from partner_kit.training import score_rows, selection_score

    own = CsrBatcher(data)

    def selection(fold: int):
        rows = np.flatnonzero(np.asarray(data.folds) == fold)
        prob, regr = trainer.predict_rows(rows + part.rows.start)
        ev = score_rows(data, own, rows, prob[:, part.class_cols], regr[:, part.regr_cols], trainer.plan)
        score, metric = selection_score(ev)
        return score, f"own {metric}", ev

    return selection


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
    ap.add_argument("--first-seed", type=int, default=0,
                    help="network seeds FIRST..FIRST+n-1 (with --save-probs: grow an ensemble run by run)")
    ap.add_argument("--hidden", default="2000", help="hidden sizes, comma-separated (e.g. 2000,1000)")
    ap.add_argument("--dropout", type=float, default=0.5)
    ap.add_argument("--input-dropout", type=float, default=0.2)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--weight-decay", type=float, default=0.0)
    ap.add_argument("--max-epochs", type=int, default=40)
    ap.add_argument("--patience", type=int, default=5)
    ap.add_argument("--refit", action="store_true",
                    help="after early stopping, retrain each seed on training + validation rows for the chosen "
                         "number of epochs (the forest also trains on both)")
    ap.add_argument("--radius", type=int, default=3, help="ECFP radius (3 = ECFP6, 2 = ECFP4)")
    ap.add_argument("--fp-size", type=int, default=32000, help="folded fingerprint size")
    ap.add_argument("--counts", action="store_true", help="count fingerprints instead of binary")
    ap.add_argument("--log-counts", action="store_true",
                    help="with --counts: feed log1p(count) to the network and the forest (bench-side transform)")
    ap.add_argument("--cv-ensemble", action="store_true",
                    help="network: per seed, one model early-stopped on each non-test fold (trained on the "
                         "others), test probabilities averaged over all of them (instead of --refit)")
    ap.add_argument("--split", choices=("scaffold", "random"), default="scaffold",
                    help="scaffold: the prepared keyed scaffold folds (the protocol); random: rows reassigned "
                         "to folds at random (seeded; for comparison with random-split literature only)")
    ap.add_argument("--aux", type=Path, default=None,
                    help="network: pool Tox21 with this wide CSV (smiles + assay columns, e.g. ../shared/data/raw/"
                         "toxcast_data.csv.gz), prepared with the same plan and key (so the same scaffold folds); "
                         "its own heads, its test-fold rows never trained on; Tox21 is scored as before")
    ap.add_argument("--aux-weight", type=float, default=1.0,
                    help="with --aux: scale the aux partner's task training weights (MELLODDY down-weighted "
                         "auxiliary tasks); 1 = every label counts alike")
    ap.add_argument("--aux-select", choices=("own", "pooled"), default="own",
                    help="with --aux: choose the epoch on Tox21's validation tasks (own, as a federated partner "
                         "chooses its round) or on the pooled validation fold (pooled, as `simulate --pooled`)")
    ap.add_argument("--trees", type=int, default=200)
    ap.add_argument("--jobs", type=int, default=-1, help="forest worker threads")
    ap.add_argument("--no-forest", action="store_true")
    ap.add_argument("--no-network", action="store_true")
    ap.add_argument("--chemprop", action="store_true", help="also train and score chemprop v2 (own venv)")
    ap.add_argument("--chemprop-python", type=Path, default=Path("/tmp/chemprop-venv/bin/python"),
                    help="python of the venv chemprop is installed in (its `chemprop` script sits beside it)")
    ap.add_argument("--chemprop-epochs", type=int, default=None, help="default: chemprop's own (50)")
    ap.add_argument("--chemprop-dir", type=Path, default=None,
                    help="keep chemprop's CSVs, checkpoints and logs here (default: WORK/chemprop)")
    ap.add_argument("--work", type=Path, default=None, help="keep imported/prepared data here")
    ap.add_argument("--key", type=Path, default=None,
                    help="secret key file for preparation (created if missing; default: WORK/secret.key); "
                         "share one key between fingerprint settings so their scaffold folds are identical")
    ap.add_argument("--json", type=Path, default=None, help="also write the per-fold, per-task AUC-ROCs here")
    ap.add_argument("--threads", type=int, default=None, help="torch threads")
    ap.add_argument("--average-probs", type=Path, nargs="+", default=None,
                    help="train nothing: score the mean of the probabilities saved by --save-probs in these DIRs")
    ap.add_argument("--save-probs", type=Path, default=None,
                    help="write each model's test-fold probabilities to DIR/<model>-fold<k>.npy, so runs of "
                         "other seeds can be averaged into a larger ensemble later")
    args = ap.parse_args()
    if args.aux is not None and args.split == "random":
        ap.error("--aux needs the scaffold folds (the two partners' folds must agree)")

    import torch
    from bench_training import machine

    from data_prep.prepared import PreparedData

    if args.threads:
        torch.set_num_threads(args.threads)
    plan = tox21_plan(args)
    with tempfile.TemporaryDirectory(prefix="bench-tox21-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        data = PreparedData.load(prepare_tox21(plan, work, args.key), with_compounds=args.chemprop)
        if args.log_counts:
            if not args.counts:
                ap.error("--log-counts needs --counts")
            data.x.data = np.log1p(data.x.data)
        data.manifest["plan_hash"] = plan.hash   # same data sections; only trunk/training settings vary
        aux = None
        if args.aux is not None and not args.no_network:
            aux = PreparedData.load(prepare_wide(plan, work, args.aux, "aux", args.key))
            if args.log_counts:
                aux.x.data = np.log1p(aux.x.data)
            aux.manifest["plan_hash"] = plan.hash
            aux.tasks["training_weight"] = aux.tasks["training_weight"] * args.aux_weight
        n_folds = plan.data.folds.n_folds
        if args.split == "random":
            data.folds = random_folds(data, n_folds, seed=0)
        folds = args.folds if args.folds is not None else list(range(n_folds))
        names = data.tasks["input_assay_id"].astype(str).tolist()
        print(f"machine: {machine()}")
        fp = plan.data.fingerprint
        pooled = (f", pooled with {args.aux.name} ({aux.n_rows} rows, {len(aux.class_tasks)} tasks, weight "
                  f"{args.aux_weight:g}; epoch chosen on "
                  f"{'Tox21' if args.aux_select == 'own' else 'the pooled'} validation tasks)") if aux else ""
        print(f"Tox21: {data.n_rows} structures, {len(names)} tasks, {args.split} folds; ECFP{2 * fp.radius} "
              f"{fp.size} bits {'binary' if fp.binary else 'counts'}; network plan: hidden "
              f"{plan.trunk.hidden_sizes}, dropout {plan.trunk.dropout}, input dropout {plan.trunk.input_dropout}, "
              f"lr {plan.training.learning_rate}, weight decay {plan.training.weight_decay}, patience "
              f"{plan.training.patience}, {args.seeds} seed(s){', refit on train + valid' if args.refit else ''}"
              f"{', cross-validation ensemble' if args.cv_ensemble else ''}{', log1p' if args.log_counts else ''}"
              f"{pooled}\n",
              flush=True)
        results = {"network": [], "forest": [], "chemprop": []}
        details: dict[str, list] = {"network": [], "forest": [], "chemprop": []}
        for fold in folds:
            line = f"fold {fold}:"
            if args.average_probs:   # score saved runs (e.g. one seed per run) as one ensemble; no training
                for model in results:
                    saved = [d / f"{model}-fold{fold}.npy" for d in args.average_probs]
                    if all(p.is_file() for p in saved):
                        auc = test_auc(data, fold, np.mean([np.load(p, allow_pickle=False) for p in saved], axis=0))
                        results[model].append(auc)
                        details[model].append({"averaged": [str(p) for p in saved]})
                        line += f" {model} {np.nanmean(auc):.4f} (mean of {len(saved)} runs)"
                print(line, flush=True)
                continue
            if not args.no_network:
                seeds = list(range(args.first_seed, args.first_seed + args.seeds))
                probs, info = network_probs(plan, data, fold, n_folds, seeds, args.refit, args.cv_ensemble, aux,
                                            own_selection=args.aux_select == "own")
                net = test_auc(data, fold, probs)
                results["network"].append(net)
                details["network"].append(info)
                _save_probs(args.save_probs, "network", fold, probs)
                line += f" network mean AUC-ROC {np.nanmean(net):.4f} ({info['runs']})"
            if not args.no_forest:
                probs, finfo = forest_probs(data, fold, args.trees, args.jobs)
                rf = test_auc(data, fold, probs)
                results["forest"].append(rf)
                details["forest"].append(finfo)
                _save_probs(args.save_probs, "forest", fold, probs)
                line += f" | forest {np.nanmean(rf):.4f} ({finfo['seconds']:.0f} s)"
            if args.chemprop:
                probs, cinfo = chemprop_probs(args, data, fold, n_folds, names, work)
                cp = test_auc(data, fold, probs)
                results["chemprop"].append(cp)
                details["chemprop"].append(cinfo)
                _save_probs(args.save_probs, "chemprop", fold, probs)
                line += (f" | chemprop {np.nanmean(cp):.4f} ({cinfo['seconds']:.0f} s, best epoch "
                         f"{cinfo['best_epoch']} of {len(cinfo['val_loss'])})")
            print(line, flush=True)
            if args.json:   # after every fold, so a run stopped part-way keeps the folds it finished
                _write_json(args, folds[:len(details['network'] or details['forest'] or details['chemprop'])],
                            names, results, details, machine())

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
        if args.json:
            _write_json(args, folds, assay_names, results, details, machine())


def _save_probs(out: Path | None, model: str, fold: int, probs: np.ndarray) -> None:
    if out is not None:
        from data_prep.atomic import write_atomic

        def save(tmp: Path) -> None:
            with open(tmp, "wb") as f:   # a file object: np.save would add ".npy" to the temporary name
                np.save(f, probs, allow_pickle=False)

        out.mkdir(parents=True, exist_ok=True)
        write_atomic(out / f"{model}-fold{fold}.npy", save)


def _write_json(args, folds: list[int], tasks: list[str], results: dict, details: dict, where: str) -> None:
    from data_prep.atomic import write_text_atomic

    table = {m: np.vstack(v) for m, v in results.items() if v}
    write_text_atomic(args.json, json.dumps({
        "args": {k: str(v) for k, v in vars(args).items()}, "machine": where, "folds": folds, "tasks": tasks,
        "auc_roc": {m: t.tolist() for m, t in table.items()},
        "per_fold": {m: [float(np.nanmean(r)) for r in t] for m, t in table.items()},
        "mean": {m: float(np.nanmean(t)) for m, t in table.items()},
        "details": {m: v for m, v in details.items() if v}}, indent=1, default=str))


def chemprop_probs(args, data, test_fold: int, n_folds: int, names: list[str], work: Path) -> tuple[np.ndarray, dict]:
    """chemprop v2 on this fold's train / validation / test rows (validation fold = next fold, as the network's)."""
    from chemprop_tox21 import run_chemprop, test_predictions, validation_curve, write_split_csvs

    base = (args.chemprop_dir or work / "chemprop") / f"fold{test_fold}"
    columns = [f"task{j}" for j in range(len(names))]   # plain column names; the order is the tasks' order
    paths = write_split_csvs(data, test_fold, (test_fold + 1) % n_folds, columns, base / "csv")
    info = run_chemprop(args.chemprop_python, paths, base / "train", epochs=args.chemprop_epochs,
                        log=base / "train.log")
    curve = validation_curve(base / "train")
    info.update(val_loss=curve, best_epoch=int(np.argmin(curve)) if curve else None,
                test_rows=int((data.folds == test_fold).sum()))
    return test_predictions(base / "train", paths["test"], columns), info


def _assay_names(work: Path, ids: list[str]) -> list[str]:
    import pandas as pd

    t0 = work / "tox21-input" / "T0.csv"
    if not t0.is_file():
        return ids
    meta = pd.read_csv(t0, dtype=str).set_index("input_assay_id")["assay_name_META"].to_dict()
    return [meta.get(i, i) for i in ids]


if __name__ == "__main__":
    main()
