"""Training speed, memory and quality: this kit vs real SparseChem 1.0 (and a self-written reference), same data.

Variants, each in its own process (peak memory of the whole process tree is its own), on the same prepared
partner (toxcast-6/TOX21, a `make_industrial_partner.py` partner, ...), the same training rows (labelled rows
outside the validation fold 1 and the test fold 0), the same trunk (32000 -> [2000], ReLU, dropout 0.2), batch
2 % of the training rows, Adam lr 1e-3, the same task weights and the same number of epochs:

  fedqsar     partner_kit.training.LocalTrainer: embedding_bag forward over the rows present in a batch, sparse
              row gradient, lazy row-wise Adam, CSR slicing (the product).
  sparsechem  real SparseChem 1.0 (`../shared/tools/sparsechem`, commit 258c20f), its own `train.py` recipe from
              FEDQSAR-NOTE.md (8 + 4 data-loader workers, dense Adam over every weight), run from a scratch venv
              that `--setup-sparsechem` creates outside the repository: a benchmark-only tool, never a product
              dependency. It reads the same matrices, restricted to the same labelled rows, and the same task
              weights. Its per-epoch `train_time` is its training time.
  reference   the earlier self-written "SparseChem-like" loop (rows collated in Python into a sparse COO batch,
              dense gradients): kept only for continuity with older BENCHMARKS figures.

Runs are interleaved (fedqsar, sparsechem, fedqsar, ... with `--repeats`), so a change in machine load hits both.
Quality: per-task validation AUC-ROC and AUC-PR after every epoch, averaged over the classification tasks both
tools score (finite on the validation fold, aggregation weight > 0), at each variant's own best epoch.

Usage:
  .venv/bin/python benchmarks/bench_training.py --setup-sparsechem /tmp/sc        # once: the scratch venv
  .venv/bin/python benchmarks/bench_training.py --industrial 30000 --partners --profile-steps 20 --threads 1 \
      --work /tmp/bench                                                        # where the kit's step goes
  .venv/bin/python benchmarks/bench_training.py --sparsechem /tmp/sc --partners toxcast-6/TOX21 \
      --industrial 30000 --epochs 8 --work /tmp/bench
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SPARSECHEM_SRC = SHARED / "tools" / "sparsechem"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine_info import cpu_name, load_average  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

VARIANTS = ("fedqsar", "sparsechem", "reference")


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


def prepare_partners(partners: dict[str, Path], work: Path) -> dict[str, Path]:
    """Prepare each partner's input directory once (reused from `work` when already there with this plan)."""
    from data_prep.key import generate_key
    from data_prep.prepare import prepare

    plan = bench_plan()  # the hidden size does not change the data sections
    plan_path = work / "plan.toml"
    plan.save(plan_path)
    key = work / "secret.key"
    if not key.exists():
        generate_key(key)
    out = {}
    for partner, input_dir in partners.items():
        target = work / "prepared" / partner
        manifest = target / "manifest.json"
        if not (manifest.is_file() and json.loads(manifest.read_text()).get("plan_hash") == plan.hash):
            t0 = time.perf_counter()
            print(f"preparing {partner} ...", flush=True)
            prepare(plan_path, key, input_dir, target, progress=False)
            print(f"  prepared in {time.perf_counter() - t0:.0f} s", flush=True)
        out[partner] = target
    return out


def industrial_input(n: int, work: Path) -> Path:
    """T0/T1/T2 of a generated industrial partner of `n` compounds (seed 0), made once under `work`."""
    import make_industrial_partner as mip

    out = work / "raw" / f"industrial-{n}"
    if not (out / "generator.json").is_file():
        print(f"generating industrial-{n} ...", flush=True)
        mip.make_partner(n, out, seed=0)
    return out


# ---- process-tree memory ---------------------------------------------------------------------------------------
def run_tree(argv: list[str], env: dict[str, str] | None = None) -> dict[str, float]:
    """Run `argv`; sample every 50 ms the RSS summed over it and all its descendants, and the largest process.

    SparseChem forks 8 + 4 data-loader workers; their copy-on-write pages are shared with the parent, so the RSS
    sum over-counts and the largest process under-counts. The summed PSS (each shared page divided among the
    processes sharing it, read from smaps every 0.2 s) is the tree's real footprint: `tree_mb` is that.
    """
    import psutil

    proc = subprocess.Popen(argv, env=env)
    ps = psutil.Process(proc.pid)
    peak = {"tree_mb": 0.0, "tree_rss_mb": 0.0, "largest_mb": 0.0, "max_procs": 0}
    done = threading.Event()

    def sample() -> None:
        tick = 0
        while not done.is_set():
            with contextlib.suppress(psutil.Error):
                rss, pss = [], []
                for p in [ps, *ps.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):  # a worker may exit between listing and reading
                        rss.append(p.memory_info().rss / 2**20)
                        if tick % 4 == 0:
                            pss.append(p.memory_full_info().pss / 2**20)
                peak["tree_rss_mb"] = max(peak["tree_rss_mb"], sum(rss))
                peak["tree_mb"] = max(peak["tree_mb"], sum(pss))
                peak["largest_mb"] = max(peak["largest_mb"], max(rss, default=0.0))
                peak["max_procs"] = max(peak["max_procs"], len(rss))
            tick += 1
            done.wait(0.05)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    code = proc.wait()
    done.set()
    thread.join()
    if code != 0:
        raise SystemExit(f"error: {' '.join(argv[:4])} ... exited {code}")
    return peak


# ---- the SparseChem-like reference -------------------------------------------------------------------------
def run_reference(plan, data, epochs: int, seed: int) -> dict:
    import torch
    from torch import nn

    from partner_kit.batching import epoch_batches
    from partner_kit.losses import censored_mse, masked_bce
    from partner_kit.metrics import evaluate_predictions
    from partner_kit.training import LocalTrainer, derive_seed

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
        history.append({"seconds": seconds, **_class_scores(ev.per_task, data.tasks)})
        print(f"    reference epoch {epoch}: {seconds:.1f} s, valid AUC-PR {ev.aggregate['auc_pr']:.4f}", flush=True)
    return {"n_train": setup.n_train, "batch_size": setup.batch_size, "history": history, "rss_loaded_mb": baseline}


def _class_scores(per_task, tasks) -> dict[str, list[float]]:
    """Per classification task (in y_class column order): AUC-ROC, AUC-PR, and whether it is aggregated."""
    cls = per_task[per_task["kind"] == "classification"]
    weight = cls["task_index"].map(tasks.set_index("task_index")["aggregation_weight"]).astype(float)
    return {"auc_roc": cls["auc_roc"].astype(float).tolist(), "auc_pr": cls["auc_pr"].astype(float).tolist(),
            "aggregated": (weight > 0).tolist()}


def run_fedqsar(plan, data, epochs: int, seed: int, device: str = "cpu") -> dict:
    from partner_kit.training import LocalTrainer, derive_seed

    trainer = LocalTrainer(plan, data, seed=seed, device=device)
    baseline = rss_mb()
    history = []
    for epoch in range(epochs):
        t0 = time.perf_counter()
        trainer.train_epoch(derive_seed(trainer.seed, epoch))
        seconds = time.perf_counter() - t0
        ev = trainer.evaluate(trainer.valid_fold)
        history.append({"seconds": seconds, **_class_scores(ev.per_task, data.tasks)})
        print(f"    fedqsar    epoch {epoch}: {seconds:.1f} s, valid AUC-ROC {ev.aggregate['auc_roc']:.4f}, "
              f"AUC-PR {ev.aggregate['auc_pr']:.4f}", flush=True)
    return {"n_train": trainer.n_train, "batch_size": trainer.batch_size, "history": history,
            "rss_loaded_mb": baseline}


def profile_steps(plan, data, n_steps: int, modes: tuple[str, ...] = ("fused", "gathered") * 2,
                  warmup: int = 5) -> list[dict]:
    """Per-phase thread CPU time (ms) of the kit's training step, for each LazyAdam mode in turn on one trainer.

    CPU time rather than wall time: on a shared machine it says where a step goes whatever the load. The modes
    alternate on the same trainer (their updates are the same maths), so load drift hits both.
    """
    from partner_kit.batching import step_batches
    from partner_kit.training import LocalTrainer

    trainer = LocalTrainer(plan, data, seed=0)
    rng = np.random.default_rng(0)
    phases = ("batch", "forward", "backward", "input_adam", "other_optimizers")
    out = []
    for mode in modes:
        trainer.trunk_optimizers[0].fused = None if mode == "fused" else False
        total, wall, unique = dict.fromkeys(phases, 0.0), 0.0, []
        for i, rows in enumerate(step_batches(trainer.train_rows, trainer.batch_size, warmup + n_steps, rng)):
            w0, marks = time.perf_counter(), [time.thread_time()]
            batch = trainer.batcher.batch(rows)
            marks.append(time.thread_time())
            optimizers = [*trainer.trunk_optimizers, trainer.head_optimizer]
            for opt in optimizers:
                opt.zero_grad(set_to_none=True)
            loss = trainer.loss(batch)
            marks.append(time.thread_time())
            loss.backward()
            marks.append(time.thread_time())
            optimizers[0].step()
            marks.append(time.thread_time())
            for opt in optimizers[1:]:
                opt.step()
            marks.append(time.thread_time())
            if i >= warmup:
                wall += time.perf_counter() - w0
                for name, a, b in zip(phases, marks, marks[1:], strict=False):
                    total[name] += b - a
                unique.append(int(batch.x.cols.numel()))
        row = {"mode": mode, **{k: 1000 * v / n_steps for k, v in total.items()}}
        row.update(cpu_total=sum(row[k] for k in phases), wall=1000 * wall / n_steps,
                   unique_rows=float(np.mean(unique)), load=load_average())
        out.append(row)
        print(f"  {mode:<9} " + "  ".join(f"{k} {row[k]:.1f}" for k in (*phases, "cpu_total", "wall"))
              + f" ms/step; {row['unique_rows']:.0f} of {plan.n_features} input rows; load {row['load']}",
              flush=True)
    return out


# ---- real SparseChem ----------------------------------------------------------------------------------------
def setup_sparsechem(target: Path) -> Path:
    """A scratch venv at `target` running SparseChem from a copy of ../shared/tools/sparsechem.

    It reuses this project's installed torch/scipy/pandas/scikit-learn/tqdm (a .pth line, so nothing large is
    downloaded and both tools run the same torch build) and adds pynvml, which SparseChem imports.
    """
    target = Path(target).resolve()
    if ROOT in target.parents or target == ROOT:
        raise SystemExit("error: --setup-sparsechem must point outside the repository (a scratch directory)")
    src = target / "src"
    if not src.exists():
        shutil.copytree(SPARSECHEM_SRC, src)
    venv = target / "venv"
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    project_site = next((Path(sys.prefix) / "lib").glob("python3*/site-packages"))
    (site / "fedqsar_project_packages.pth").write_text(f"{project_site}\n")
    (site / "sparsechem_src.pth").write_text(f"{src}\n")
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "pynvml"], check=True)
    subprocess.run([str(venv / "bin" / "python"), "-W", "ignore", "-c", "import sparsechem"], check=True, cwd="/")
    print(f"SparseChem ready: {venv / 'bin' / 'python'}")
    return venv / "bin" / "python"


def sparsechem_inputs(plan, data, work: Path) -> tuple[Path, int]:
    """The prepared matrices restricted to the kit's training/validation/test rows, plus task-weight CSVs."""
    import pandas as pd
    import scipy.sparse as sp

    from partner_kit.training import LocalTrainer

    setup = LocalTrainer(plan, data, seed=0)
    rows = np.flatnonzero(setup.labelled)  # the kit never trains on rows without a label: neither does SparseChem
    work.mkdir(parents=True, exist_ok=True)
    sp.save_npz(work / "x.npz", sp.csr_matrix(data.x)[rows].astype(np.float32))
    sp.save_npz(work / "y_class.npz", sp.csr_matrix(data.y_class)[rows].astype(np.float32))
    np.save(work / "folds.npy", np.asarray(data.folds)[rows].astype(np.int64))
    ct, rt = data.class_tasks, data.regr_tasks
    pd.DataFrame({"task_id": np.arange(len(ct)), "training_weight": ct["training_weight"].to_numpy(float),
                  "aggregation_weight": ct["aggregation_weight"].to_numpy(float)}).to_csv(work / "w_class.csv",
                                                                                       index=False)
    if len(rt):
        sp.save_npz(work / "y_regr.npz", sp.csr_matrix(data.y_regr)[rows].astype(np.float32))
        sp.save_npz(work / "y_censor.npz", sp.csr_matrix(data.y_censor)[rows].astype(np.float32))
        pd.DataFrame({"task_id": np.arange(len(rt)), "training_weight": rt["training_weight"].to_numpy(float),
                      "censored_weight": rt["censored_weight"].to_numpy(float),
                      "aggregation_weight": rt["aggregation_weight"].to_numpy(float)}).to_csv(work / "w_regr.csv",
                                                                                           index=False)
    return work, setup.n_train


# Runs inside the scratch venv: SparseChem's own train(), with its per-epoch metric print also recorded as JSON.
SPARSECHEM_DRIVER = r"""
import json, sys, time
import sparsechem as sc
import sparsechem.train as sct
result, argv = sys.argv[1], sys.argv[2:]
history = []
printer = sc.print_metrics_cr
def record(epoch, train_time, results_tr, results_va, header):
    cls = results_va["classification"]
    history.append({"seconds": float(train_time), "auc_roc": [float(v) for v in cls["roc_auc_score"]],
                    "auc_pr": [float(v) for v in cls["auc_pr"]]})
    print(f"    sparsechem epoch {epoch}: {train_time:.1f} s, valid AUC-ROC "
          f"{results_va['classification_agg']['roc_auc_score']:.4f}", flush=True)
sc.print_metrics_cr = sct.sc.print_metrics_cr = record
sys.argv = ["train.py", *argv]
sct.train()
json.dump({"history": history}, open(result, "w"))
"""


def run_sparsechem(python: Path, inputs: Path, n_train: int, epochs: int, hidden: int, result: Path,
                   out_dir: Path, threads: int | None) -> dict:
    argv = [str(python), "-W", "ignore", "-c", SPARSECHEM_DRIVER, str(result),
            "--x", str(inputs / "x.npz"), "--y_class", str(inputs / "y_class.npz"),
            "--weights_class", str(inputs / "w_class.csv"), "--folding", str(inputs / "folds.npy"),
            "--fold_va", "1", "--fold_te", "0", "--hidden_sizes", str(hidden), "--dropouts_trunk", "0.2",
            "--batch_ratio", "0.02", "--epochs", str(epochs), "--lr", "1e-3", "--dev", "cpu", "--verbose", "1",
            "--save_model", "0", "--output_dir", str(out_dir), "--min_samples_class", "1"]
    if (inputs / "y_regr.npz").is_file():
        argv += ["--y_regr", str(inputs / "y_regr.npz"), "--y_censor", str(inputs / "y_censor.npz"),
                 "--weights_regr", str(inputs / "w_regr.csv"), "--normalize_regression", "1"]
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    peak = run_tree(argv, env)
    run = json.loads(result.read_text())
    return {"n_train": n_train, "batch_size": int(np.ceil(0.02 * n_train)), **run, **peak}


def worker(args: argparse.Namespace) -> None:
    import torch

    from data_prep.prepared import PreparedData

    if args.threads:
        torch.set_num_threads(args.threads)
    plan = bench_plan(args.hidden)
    data = PreparedData.load(args.prepared)
    # Prepared with the default-hidden plan; only the trunk differs, the data sections are identical.
    data.manifest["plan_hash"] = plan.hash
    if args.worker == "fedqsar":
        result = run_fedqsar(plan, data, args.epochs, seed=0, device=args.device)
    else:
        result = run_reference(plan, data, args.epochs, seed=0)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    Path(args.result).write_text(json.dumps(result))


def common_tasks(runs: dict[str, dict]) -> np.ndarray:
    """Classification tasks every variant scored at every epoch (finite AUC-ROC) and that are aggregated."""
    ok = None
    for run in runs.values():
        for h in run["history"]:
            finite = np.isfinite(np.asarray(h["auc_roc"], dtype=float)) & np.isfinite(
                np.asarray(h["auc_pr"], dtype=float))
            ok = finite if ok is None else ok & finite
    aggregated = next((r["history"][0]["aggregated"] for r in runs.values() if "aggregated" in r["history"][0]),
                      None)
    if aggregated is not None:
        ok = ok & np.asarray(aggregated, dtype=bool)
    return np.flatnonzero(ok)


def summarise(result: dict, tasks: np.ndarray) -> dict:
    hist = result["history"]
    seconds = sum(h["seconds"] for h in hist)
    roc = [float(np.mean(np.asarray(h["auc_roc"])[tasks])) for h in hist]
    pr = [float(np.mean(np.asarray(h["auc_pr"])[tasks])) for h in hist]
    best = int(np.argmax(roc))
    peak = result.get("tree_mb", result.get("peak_rss_mb"))
    return {
        "samples_s": result["n_train"] * len(hist) / seconds,
        "s_epoch": seconds / len(hist),
        "peak_mb": peak,
        "largest_mb": result.get("largest_mb", peak),
        "rss_sum_mb": result.get("tree_rss_mb", peak),
        "procs": result.get("max_procs", 1),
        "best_epoch": best,
        "best_auc_roc": roc[best],
        "best_auc_pr": max(pr),
        "auc_pr_at_best": pr[best],
        "last_auc_roc": roc[-1],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--partners", nargs="*", default=["toxcast-6/TOX21"], help="shared consortia partners")
    ap.add_argument("--industrial", type=int, nargs="*", default=[],
                    help="also a make_industrial_partner.py partner of N compounds (e.g. 30000)")
    ap.add_argument("--epochs", type=int, default=5, help="epochs per variant (same for all)")
    ap.add_argument("--repeats", type=int, default=1, help="interleaved runs of each variant")
    ap.add_argument("--work", type=Path, default=None, help="keep prepared data here (default: a temp dir)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads for every variant")
    ap.add_argument("--variants", nargs="+", default=["fedqsar", "sparsechem"], choices=VARIANTS)
    ap.add_argument("--hidden", type=int, default=2000, help="trunk hidden size (the issue's setting: 2000)")
    ap.add_argument("--device", default="cpu", help="fedqsar's --device (cpu here; cuda on a GPU machine)")
    ap.add_argument("--sparsechem", type=Path, default=None, help="the scratch dir made by --setup-sparsechem")
    ap.add_argument("--setup-sparsechem", type=Path, default=None, metavar="DIR",
                    help="create SparseChem's scratch venv in DIR (outside the repo) and exit")
    ap.add_argument("--json", type=Path, default=None, help="also write the summary rows as JSON")
    ap.add_argument("--profile-steps", type=int, default=0, metavar="N",
                    help="instead of the comparison: the kit's per-phase CPU time over N steps per partner, "
                         "fused and gathered LazyAdam alternating")
    ap.add_argument("--worker", choices=["fedqsar", "reference"], help=argparse.SUPPRESS)
    ap.add_argument("--prepared", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    if args.setup_sparsechem:
        setup_sparsechem(args.setup_sparsechem)
        return
    sc_python = None
    if "sparsechem" in args.variants and not args.profile_steps:
        sc_python = (args.sparsechem or Path("/nonexistent")) / "venv" / "bin" / "python"
        if not sc_python.exists():
            raise SystemExit("error: the sparsechem variant needs its scratch venv: run "
                             "`bench_training.py --setup-sparsechem DIR` once and pass --sparsechem DIR")

    with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        inputs = {p: SHARED / "data" / "consortia" / p for p in args.partners}
        inputs.update({f"industrial-{n // 1000}k": industrial_input(n, work) for n in args.industrial})
        prepared = prepare_partners(inputs, work)
        print(f"machine: {machine()}\n", flush=True)
        if args.profile_steps:
            import torch

            from data_prep.prepared import PreparedData

            if args.threads:
                torch.set_num_threads(args.threads)
            profiles = {}
            for partner, path in prepared.items():
                data = PreparedData.load(path)
                data.manifest["plan_hash"] = bench_plan(args.hidden).hash
                print(f"{partner}: {args.profile_steps} steps per mode (thread CPU time per phase)", flush=True)
                profiles[partner] = profile_steps(bench_plan(args.hidden), data, args.profile_steps)
            if args.json:
                args.json.write_text(json.dumps(profiles, indent=2))
            return
        rows = []
        for partner, path in prepared.items():
            runs: dict[str, list[dict]] = {v: [] for v in args.variants}
            tag = partner.replace("/", "_")
            sc_inputs = None
            for rep in range(args.repeats):
                order = args.variants if rep % 2 == 0 else args.variants[::-1]
                for variant in order:
                    print(f"  {partner}: {variant} ({args.epochs} epochs, run {rep + 1}/{args.repeats}, "
                          f"load {load_average()})", flush=True)
                    result_path = work / f"result-{tag}-{variant}-{rep}.json"
                    if variant == "sparsechem":
                        if sc_inputs is None:
                            from data_prep.prepared import PreparedData

                            data = PreparedData.load(path)
                            data.manifest["plan_hash"] = bench_plan(args.hidden).hash
                            sc_inputs = sparsechem_inputs(bench_plan(args.hidden), data, work / f"sc-{tag}")
                        result = run_sparsechem(sc_python, sc_inputs[0], sc_inputs[1], args.epochs, args.hidden,
                                                result_path, work / f"sc-{tag}" / "out", args.threads)
                    else:
                        cmd = [sys.executable, __file__, "--worker", variant, "--prepared", str(path),
                               "--epochs", str(args.epochs), "--result", str(result_path), "--hidden",
                               str(args.hidden), "--device", args.device]
                        if args.threads:
                            cmd += ["--threads", str(args.threads)]
                        peak = run_tree(cmd)
                        result = {**json.loads(result_path.read_text()), **peak}
                    result["load_after"] = load_average()
                    result_path.write_text(json.dumps(result))  # with its memory peaks: a run survives a stop
                    runs[variant].append(result)
            first = {v: r[0] for v, r in runs.items()}
            tasks = common_tasks({f"{v}{i}": run for v, rs in runs.items() for i, run in enumerate(rs)})
            summary = {v: [summarise(r, tasks) for r in rs] for v, rs in runs.items()}
            n_train = first[args.variants[0]]["n_train"]
            rows.append({"partner": partner, "n_train": n_train, "tasks_compared": int(tasks.size),
                         "batch": {v: r["batch_size"] for v, r in first.items()}, "summary": summary})

        print(f"\nmachine: {machine()}")
        print(f"{'partner':<20} {'variant':<11} {'samples/s':>10} {'s/epoch':>8} {'PSS MB':>8} {'largest':>8} "
              f"{'procs':>5} {'best ep':>7} {'AUC-ROC':>8} {'AUC-PR':>8} {'RSS sum':>8}")
        for row in rows:
            for variant, ss in row["summary"].items():
                for s in ss:
                    print(f"{row['partner']:<20} {variant:<11} {s['samples_s']:>10.0f} {s['s_epoch']:>8.1f} "
                          f"{s['peak_mb']:>8.0f} {s['largest_mb']:>8.0f} {s['procs']:>5} {s['best_epoch']:>7} "
                          f"{s['best_auc_roc']:>8.4f} {s['auc_pr_at_best']:>8.4f} {s['rss_sum_mb']:>8.0f}")
            if {"fedqsar", "sparsechem"} <= row["summary"].keys():
                a = {k: float(np.median([s[k] for s in row["summary"]["fedqsar"]])) for k in
                     ("samples_s", "peak_mb", "best_auc_roc", "auc_pr_at_best")}
                b = {k: float(np.median([s[k] for s in row["summary"]["sparsechem"]])) for k in
                     ("samples_s", "peak_mb", "largest_mb", "best_auc_roc", "auc_pr_at_best")}
                d_roc, d_pr = a["best_auc_roc"] - b["best_auc_roc"], a["auc_pr_at_best"] - b["auc_pr_at_best"]
                print(f"{row['partner']:<20} {'ratio':<11} {a['samples_s'] / b['samples_s']:>9.1f}x {'':>8} "
                      f"{a['peak_mb'] / b['peak_mb']:>7.2f}x {a['peak_mb'] / b['largest_mb']:>7.2f}x {'':>5} "
                      f"{'':>7} {d_roc:>+8.4f} {d_pr:>+8.4f}")
            print(f"{'':<20} ({row['n_train']} training rows, batch {row['batch']}, hidden {args.hidden}, "
                  f"{args.epochs} epochs, {row['tasks_compared']} classification tasks compared)")
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
