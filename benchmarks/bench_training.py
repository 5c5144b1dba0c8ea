"""Training speed, memory and quality: this kit's model vs a SparseChem-like reference, same data, same run.

Both train the same architecture (input 32000 -> hidden 2000, ReLU, dropout 0.2, batch 2 % of the training
rows, Adam, lr 1e-3) on the same prepared partner, the same training rows, the same batch order and the same
losses, for the same number of epochs; each runs in its own process so peak memory is its own.

  (a) fedqsar    partner_kit.training.LocalTrainer: rows of the input weight present in a batch only
                 (embedding_bag forward, sparse row gradient), lazy row-wise Adam, CSR slicing
  (b) reference  what SparseChem does: rows collated one by one in Python into a sparse COO batch,
                 torch.mm(sparse batch, dense W), dense gradients, torch.optim.Adam over every weight

Usage:
  .venv/bin/python benchmarks/bench_training.py                       # TOX21 and chembl-3/P1, 3 epochs each
  .venv/bin/python benchmarks/bench_training.py --epochs 10 --work /tmp/bench   # keep prepared data
Prints samples/s (training only), seconds per epoch, peak RSS, and validation AUC-PR (best and last epoch),
with ratios fedqsar / reference.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))

from machine_info import cpu_name, load_average  # noqa: E402  (benchmarks/ is on sys.path when run as a script)


def machine() -> str:
    import torch

    return (f"{cpu_name()}, {os.cpu_count()} logical cores, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), Python {platform.python_version()}, load average {load_average()}")


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def bench_plan(hidden: int = 2000):
    from consortium.plan import Plan, TrainingSpec, TrunkSpec

    return Plan(name="bench", trunk=TrunkSpec(hidden_sizes=[hidden], dropout=0.2, activation="relu"),
                training=TrainingSpec(learning_rate=1e-3, batch_fraction=0.02, min_batch_size=32,
                                      max_batch_size=4096, seed=0))


def prepare_partners(partners: list[str], work: Path) -> dict[str, Path]:
    """Prepare each partner once (reused from `work` when already there with this plan)."""
    from data_prep.key import generate_key
    from data_prep.prepare import prepare

    plan = bench_plan()  # the hidden size does not change the data sections
    plan_path = work / "plan.toml"
    plan.save(plan_path)
    key = work / "secret.key"
    if not key.exists():
        generate_key(key)
    out = {}
    for partner in partners:
        target = work / "prepared" / partner
        manifest = target / "manifest.json"
        if not (manifest.is_file() and json.loads(manifest.read_text()).get("plan_hash") == plan.hash):
            t0 = time.perf_counter()
            print(f"preparing {partner} ...", flush=True)
            prepare(plan_path, key, SHARED / "data" / "consortia" / partner, target, progress=False)
            print(f"  prepared in {time.perf_counter() - t0:.0f} s", flush=True)
        out[partner] = target
    return out


# ---- the SparseChem-like reference -------------------------------------------------------------------------
def run_reference(plan, data, epochs: int, seed: int) -> dict:
    import torch
    from torch import nn

    from partner_kit.batching import epoch_batches
    from partner_kit.losses import censored_mse, masked_bce
    from partner_kit.metrics import evaluate_predictions
    from partner_kit.training import LocalTrainer, derive_seed, selection_score

    # The trainer only supplies the shared bookkeeping (train rows, batch size, task weights, regression
    # standardization), so both variants optimise exactly the same objective on the same batches.
    setup = LocalTrainer(plan, data, seed=seed)
    heads = setup.model.heads
    hidden = plan.trunk.hidden_sizes[0]
    n_features = plan.n_features

    class SparseChemLike(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            bound = 1.0 / np.sqrt(n_features)
            self.W = nn.Parameter(torch.empty(n_features, hidden).uniform_(-bound, bound))
            self.b = nn.Parameter(torch.empty(hidden).uniform_(-bound, bound))
            self.drop = nn.Dropout(plan.trunk.dropout)
            self.cls = nn.Linear(hidden, heads.n_class) if heads.n_class else None
            self.reg = nn.Linear(hidden, heads.n_regr) if heads.n_regr else None

        def forward(self, x):
            h = self.drop(torch.relu(torch.mm(x, self.W) + self.b))
            n = h.shape[0]
            return (self.cls(h) if self.cls else h.new_zeros(n, 0), self.reg(h) if self.reg else h.new_zeros(n, 0))

    x = data.x.tocsr()
    yc, yr, yz = data.y_class.tocsr(), data.y_regr.tocsr(), data.y_censor.tocsr()

    def getitem(i: int) -> dict:   # SparseChem's dataset: one row at a time
        s, e = x.indptr[i], x.indptr[i + 1]
        return {"x_ind": x.indices[s:e], "x_data": x.data[s:e],
                "yc_ind": yc.indices[yc.indptr[i]:yc.indptr[i + 1]], "yc": yc.data[yc.indptr[i]:yc.indptr[i + 1]],
                "yr_ind": yr.indices[yr.indptr[i]:yr.indptr[i + 1]], "yr": yr.data[yr.indptr[i]:yr.indptr[i + 1]],
                "cz": yz[i].toarray().ravel()}

    def collate(items: list[dict]):  # SparseChem's sparse_collate: per-row Python loops
        rows = np.concatenate([np.full(len(it["x_ind"]), k) for k, it in enumerate(items)])
        cols = np.concatenate([it["x_ind"] for it in items])
        vals = np.concatenate([it["x_data"] for it in items])
        xb = torch.sparse_coo_tensor(torch.from_numpy(np.vstack([rows, cols]).astype(np.int64)),
                                     torch.from_numpy(vals.astype(np.float32)), (len(items), n_features))
        n = len(items)
        y_c = torch.zeros(n, heads.n_class)
        y_r = torch.zeros(n, heads.n_regr)
        m_c = torch.zeros(n, heads.n_class, dtype=torch.bool)
        m_r = torch.zeros(n, heads.n_regr, dtype=torch.bool)
        cz = torch.zeros(n, heads.n_regr, dtype=torch.int8)
        for k, it in enumerate(items):
            y_c[k, it["yc_ind"]] = torch.from_numpy(it["yc"].astype(np.float32))
            m_c[k, it["yc_ind"]] = True
            y_r[k, it["yr_ind"]] = torch.from_numpy(it["yr"].astype(np.float32))
            m_r[k, it["yr_ind"]] = True
            cz[k] = torch.from_numpy(it["cz"].astype(np.int8))
        return xb, y_c, m_c, y_r, m_r, cz

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = SparseChemLike()
    opt = torch.optim.Adam(net.parameters(), lr=plan.training.learning_rate)
    valid_rows = setup.fold_rows(setup.valid_fold)
    baseline = rss_mb()
    history = []
    for epoch in range(epochs):
        net.train()
        epoch_seed = derive_seed(setup.seed, epoch)
        rng = np.random.default_rng(epoch_seed)
        torch.manual_seed(epoch_seed)
        t0 = time.perf_counter()
        for rows in epoch_batches(setup.train_rows, setup.batch_size, rng):
            xb, y_c, m_c, y_r, m_r, cz = collate([getitem(int(i)) for i in rows])
            opt.zero_grad()
            logits, regr = net(xb)
            loss = masked_bce(logits, y_c, m_c, setup.class_weight)
            if heads.n_regr:
                loss = loss + censored_mse(regr, heads.standardize(y_r), m_r, cz, setup.regr_weight,
                                           setup.censored_weight)
            loss.backward()
            opt.step()
        seconds = time.perf_counter() - t0
        net.eval()
        with torch.no_grad():
            xs = x[valid_rows].tocoo()
            xv = torch.sparse_coo_tensor(torch.from_numpy(np.vstack([xs.row, xs.col]).astype(np.int64)),
                                         torch.from_numpy(xs.data), xs.shape)
            logits, regr = net(xv)
        ev = evaluate_predictions(data.tasks, yc[valid_rows], torch.sigmoid(logits).numpy(), yr[valid_rows],
                                  yz[valid_rows], heads.regression_values(regr).numpy())
        history.append({"seconds": seconds, "valid_auc_pr": ev.aggregate["auc_pr"], "score": selection_score(ev)})
        print(f"    reference epoch {epoch}: {seconds:.1f} s, valid AUC-PR {ev.aggregate['auc_pr']:.4f}", flush=True)
    return {"n_train": setup.n_train, "batch_size": setup.batch_size, "history": history, "rss_loaded_mb": baseline}


def run_fedqsar(plan, data, epochs: int, seed: int) -> dict:
    from partner_kit.training import LocalTrainer, derive_seed, selection_score

    trainer = LocalTrainer(plan, data, seed=seed)
    baseline = rss_mb()
    history = []
    for epoch in range(epochs):
        t0 = time.perf_counter()
        trainer.train_epoch(derive_seed(trainer.seed, epoch))
        seconds = time.perf_counter() - t0
        ev = trainer.evaluate(trainer.valid_fold)
        history.append({"seconds": seconds, "valid_auc_pr": ev.aggregate["auc_pr"], "score": selection_score(ev)})
        print(f"    fedqsar   epoch {epoch}: {seconds:.1f} s, valid AUC-PR {ev.aggregate['auc_pr']:.4f}", flush=True)
    return {"n_train": trainer.n_train, "batch_size": trainer.batch_size, "history": history,
            "rss_loaded_mb": baseline}


def worker(args: argparse.Namespace) -> None:
    import torch

    from data_prep.prepared import PreparedData

    if args.threads:
        torch.set_num_threads(args.threads)
    plan = bench_plan(args.hidden)
    data = PreparedData.load(args.prepared)
    # Prepared with the default-hidden plan; only the trunk differs, the data sections are identical.
    data.manifest["plan_hash"] = plan.hash
    run = run_fedqsar if args.worker == "fedqsar" else run_reference
    result = run(plan, data, args.epochs, seed=0)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    Path(args.result).write_text(json.dumps(result))


def summarise(result: dict) -> dict:
    hist = result["history"]
    seconds = sum(h["seconds"] for h in hist)
    return {
        "samples_s": result["n_train"] * len(hist) / seconds,
        "s_epoch": seconds / len(hist),
        "peak_mb": result["peak_rss_mb"],
        "train_mb": result["peak_rss_mb"] - result["rss_loaded_mb"],
        "best_auc_pr": max(h["valid_auc_pr"] for h in hist),
        "last_auc_pr": hist[-1]["valid_auc_pr"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--partners", nargs="+", default=["toxcast-6/TOX21", "chembl-3/P1"])
    ap.add_argument("--epochs", type=int, default=3, help="epochs per variant (same for both)")
    ap.add_argument("--work", type=Path, default=None, help="keep prepared data here (default: a temp dir)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads for both variants")
    ap.add_argument("--variants", nargs="+", default=["fedqsar", "reference"])
    ap.add_argument("--hidden", type=int, default=2000, help="trunk hidden size (the issue's setting: 2000)")
    ap.add_argument("--worker", choices=["fedqsar", "reference"], help=argparse.SUPPRESS)
    ap.add_argument("--prepared", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return

    with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        prepared = prepare_partners(args.partners, work)
        print(f"machine: {machine()}\n", flush=True)
        rows = []
        for partner, path in prepared.items():
            summary = {}
            for variant in args.variants:
                print(f"  {partner}: {variant} ({args.epochs} epochs)", flush=True)
                result_path = work / f"result-{partner.replace('/', '_')}-{variant}.json"
                cmd = [sys.executable, __file__, "--worker", variant, "--prepared", str(path),
                       "--epochs", str(args.epochs), "--result", str(result_path), "--hidden", str(args.hidden)]
                if args.threads:
                    cmd += ["--threads", str(args.threads)]
                subprocess.run(cmd, check=True)
                result = json.loads(result_path.read_text())
                summary[variant] = summarise(result)
                n_train, batch = result["n_train"], result["batch_size"]
            rows.append((partner, n_train, batch, summary))

        print(f"\nmachine: {machine()}")
        print(f"{'partner':<18} {'variant':<10} {'samples/s':>10} {'s/epoch':>8} {'peak MB':>8} {'train MB':>9} "
              f"{'best AUC-PR':>11} {'last AUC-PR':>11}")
        for partner, n_train, batch, summary in rows:
            for variant, s in summary.items():
                print(f"{partner:<18} {variant:<10} {s['samples_s']:>10.0f} {s['s_epoch']:>8.1f} {s['peak_mb']:>8.0f} "
                      f"{s['train_mb']:>9.0f} {s['best_auc_pr']:>11.4f} {s['last_auc_pr']:>11.4f}")
            if {"fedqsar", "reference"} <= summary.keys():
                a, b = summary["fedqsar"], summary["reference"]
                print(f"{partner:<18} {'ratio':<10} {a['samples_s'] / b['samples_s']:>9.1f}x "
                      f"{a['s_epoch'] / b['s_epoch']:>7.2f}x {a['peak_mb'] / b['peak_mb']:>7.2f}x "
                      f"{a['train_mb'] / max(b['train_mb'], 1):>8.2f}x {a['best_auc_pr'] - b['best_auc_pr']:>+11.4f} "
                      f"{a['last_auc_pr'] - b['last_auc_pr']:>+11.4f}")
            print(f"{'':<18} ({n_train} training rows, batch {batch}, hidden {args.hidden}, {args.epochs} epochs)")


if __name__ == "__main__":
    main()
