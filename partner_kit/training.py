"""Local training of one partner's model: seeded mini-batch steps, evaluation, early stopping, private state.

`LocalTrainer` is the unit the federated client drives (steps or epochs, get/set trunk, reset trunk moments,
persist heads); `fit` is the single-partner baseline built on it (`partner-kit train`).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from consortium.plan import Plan
from data_prep.atomic import write_text_atomic
from data_prep.console import console
from data_prep.errors import InputError
from data_prep.prepared import PreparedData
from partner_kit.batching import Batch, CsrBatcher, batch_size_for, epoch_batches, step_batches, stream_batches
from partner_kit.device import resolve_device, uses_native_sparse
from partner_kit.losses import censored_mse, masked_bce
from partner_kit.metrics import Evaluation, evaluate_predictions
from partner_kit.model import MultitaskModel, build_model
from partner_kit.model_outputs import write_model_outputs
from partner_kit.sparse_input import LazyAdam
from partner_kit.weights import (
    HEADS_FILE,
    HEADS_OPTIMIZER_FILE,
    TRUNK_OPTIMIZER_FILE,
    check_trunk_arrays,
    load_heads,
    load_tensors,
    save_model,
    save_tensors,
)

EVAL_BATCH_ROWS = 4096
PRIVATE_STATE_JSON = "private_state.json"


def _check_data(plan: Plan, data: PreparedData, source: str) -> None:
    if data.n_features != plan.n_features:
        raise InputError(f"{source} has fingerprint size {data.n_features} but the plan says "
                         f"{plan.n_features}; prepare the data with this plan")
    data_hash = data.manifest.get("plan_hash")
    if data_hash and data_hash != plan.hash:
        raise InputError(f"{source} was prepared with plan hash {data_hash[:16]}… but the plan's hash is "
                         f"{plan.hash[:16]}…; prepare the data with this plan (or pass the plan it was made with)")
    if len(data.tasks) == 0:
        raise InputError(f"{source} has no tasks; check the task rules in the plan and rejected.parquet")


def derive_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers (base seed, epoch, round, ...)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> np.uint64(1))


class LocalTrainer:
    """Trains one partner's model on its prepared data; train rows are those outside the valid/test folds.

    `device` ("cpu", "cuda", "auto"; see `partner_kit.device`): model, batches and optimizer state live there;
    the matrices stay in host memory and each batch is copied over. The CPU path is unchanged by it.
    """

    def __init__(self, plan: Plan, data: PreparedData, *, valid_fold: int = 1, test_fold: int = 0,
                 seed: int | None = None, freeze_trunk: bool = False, source: str = "prepared data",
                 device: str = "cpu", trunk_step: str = "adam") -> None:
        _check_data(plan, data, source)
        n_folds = plan.data.folds.n_folds
        for name, fold in (("validation", valid_fold), ("test", test_fold)):
            if not 0 <= fold < n_folds:
                raise InputError(f"{name} fold {fold} is out of range; the plan has folds 0..{n_folds - 1}")
        if valid_fold == test_fold:
            raise InputError(f"validation and test fold are both {valid_fold}; choose two different folds")
        self.plan, self.data = plan, data
        self.valid_fold, self.test_fold = int(valid_fold), int(test_fold)
        self.seed = int(plan.training.seed if seed is None else seed)
        self.freeze_trunk = freeze_trunk
        if trunk_step not in ("adam", "gradient"):
            raise ValueError(f"trunk_step must be 'adam' or 'gradient', got {trunk_step!r}")
        #: "adam": the trunk trains with (lazy) Adam here; "gradient": one plain step `trunk - grad` (lr 1, no
        #: momentum or decay), for a federation whose server runs the trunk's Adam (`consortium.server_optimizer`).
        self.trunk_step = trunk_step
        self.device = resolve_device(device)
        self.batcher = CsrBatcher(data)
        tasks = data.tasks
        self.class_tasks, self.regr_tasks = data.class_tasks, data.regr_tasks

        folds = np.asarray(data.folds)
        self.labelled = (np.diff(self.batcher.y_class.indptr) > 0) | (np.diff(self.batcher.y_regr.indptr) > 0)
        self.train_rows = np.flatnonzero(self.labelled & (folds != self.valid_fold) & (folds != self.test_fold))
        self.n_train = int(self.train_rows.size)
        if self.n_train == 0:
            raise InputError(f"{source}: no labelled rows outside folds {self.valid_fold} and {self.test_fold}")
        t = plan.training
        self.batch_size = batch_size_for(self.n_train, t.batch_fraction, t.min_batch_size, t.max_batch_size)

        with torch.random.fork_rng():
            torch.manual_seed(self.seed)
            self.model: MultitaskModel = build_model(plan, tasks)
        self.model.to(self.device)  # seeded on the CPU first, so every device starts from the same weights
        self.model.trunk.input.native = uses_native_sparse(device, self.device)
        self._set_regression_scale()
        dev = self.device
        self.class_weight = torch.tensor(self.class_tasks["training_weight"].to_numpy(np.float32), device=dev)
        self.regr_weight = torch.tensor(self.regr_tasks["training_weight"].to_numpy(np.float32), device=dev)
        self.censored_weight = torch.tensor(self.regr_tasks["censored_weight"].to_numpy(np.float32), device=dev)
        if freeze_trunk:
            self.model.trunk.requires_grad_(False)
        self.trunk_optimizers: list[torch.optim.Optimizer] = []
        self.reset_trunk_optimizer()
        self.head_optimizer = torch.optim.Adam(self.model.heads.parameters(), lr=t.learning_rate,
                                               weight_decay=t.weight_decay)
        self.steps_done = 0

    # ---- setup ---------------------------------------------------------------------------------------------
    def _set_regression_scale(self) -> None:
        """Per-task mean/std of the training rows' uncensored values, so regression heads learn unit scale."""
        n_regr = self.model.heads.n_regr
        if not n_regr:
            return
        yr = self.batcher.y_regr[self.train_rows].tocsc()
        cz = self.batcher.y_censor[self.train_rows].tocsc()
        mean, std = np.zeros(n_regr, np.float32), np.ones(n_regr, np.float32)
        for j in range(n_regr):
            values = yr.data[yr.indptr[j]:yr.indptr[j + 1]]
            rows = yr.indices[yr.indptr[j]:yr.indptr[j + 1]]
            flags = cz[:, j].toarray().ravel()[rows] if cz.nnz else np.zeros(rows.size)
            exact = values[flags == 0] if (flags == 0).any() else values
            if exact.size:
                mean[j] = exact.mean()
                sd = exact.std()
                std[j] = sd if sd > 1e-6 else 1.0
        self.model.heads.regr_mean.copy_(torch.from_numpy(mean))
        self.model.heads.regr_std.copy_(torch.from_numpy(std))

    def reset_trunk_optimizer(self) -> None:
        """Fresh trunk optimizer state (e.g. after a federated average replaced the trunk)."""
        if self.freeze_trunk:
            self.trunk_optimizers = []
            return
        t = self.plan.training
        trunk = self.model.trunk
        if self.trunk_step == "gradient":
            self.trunk_optimizers = [torch.optim.SGD(trunk.parameters(), lr=1.0)]  # no state: nothing to keep
            return
        dense = [p for name, p in trunk.named_parameters() if name != "input.weight"]
        self.trunk_optimizers = [
            # The device-generic path (any GPU, or the cpu-native hook) keeps the gathered row update.
            LazyAdam([trunk.input.weight], lr=t.learning_rate, weight_decay=t.weight_decay,
                     fused=False if trunk.input.native else None),
            torch.optim.Adam(dense, lr=t.learning_rate, weight_decay=t.weight_decay),
        ]

    # ---- training ------------------------------------------------------------------------------------------
    def loss(self, batch: Batch) -> torch.Tensor:
        logits, regr = self.model(batch.x)
        loss = masked_bce(logits, batch.y_class, batch.class_mask, self.class_weight)
        if self.model.heads.n_regr:
            heads = self.model.heads
            loss = loss + censored_mse(regr, heads.standardize(batch.y_regr), batch.regr_mask, batch.censor,
                                       self.regr_weight, self.censored_weight)
        return loss

    def _step(self, rows: np.ndarray) -> float:
        batch = self.batcher.batch(rows).to(self.device)
        optimizers = [*self.trunk_optimizers, self.head_optimizer]
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        loss = self.loss(batch)
        loss.backward()
        for opt in optimizers:
            opt.step()
        self.steps_done += 1
        return float(loss.detach())

    def _run(self, batches: Iterable[np.ndarray], seed: int) -> float:
        self.model.train()
        total, n = 0.0, 0
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            for rows in batches:
                total += self._step(rows) * len(rows)
                n += len(rows)
        return total / max(n, 1)

    def train_steps(self, n_steps: int, seed: int) -> float:
        """`n_steps` optimizer steps on batches (and dropout) drawn from `seed`; returns the mean batch loss."""
        rng = np.random.default_rng(seed)
        return self._run(step_batches(self.train_rows, self.batch_size, n_steps, rng), seed)

    def train_stream(self, first_step: int, n_steps: int, stream_seed: int, seed: int) -> float:
        """`n_steps` steps from `first_step` of the epoch stream of `stream_seed` (`stream_batches`); dropout
        from `seed`. Returns the mean batch loss."""
        return self._run(stream_batches(self.train_rows, self.batch_size, first_step, n_steps, stream_seed), seed)

    def train_epoch(self, seed: int) -> float:
        """One pass over the training rows shuffled by `seed`; returns the mean loss per row."""
        rng = np.random.default_rng(seed)
        return self._run(epoch_batches(self.train_rows, self.batch_size, rng), seed)

    # ---- prediction and evaluation ---------------------------------------------------------------------------
    @torch.no_grad()
    def predict_rows(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(class probabilities, regression values) for the given rows, dropout off."""
        return predict_rows(self.model, self.batcher, rows)

    def fold_rows(self, fold: int) -> np.ndarray:
        return np.flatnonzero(np.asarray(self.data.folds) == fold)

    def evaluate(self, fold: int) -> Evaluation:
        """Metrics of the current model on one fold (per task + aggregation-weighted)."""
        return evaluate_rows(self.model, self.batcher, self.data, self.fold_rows(fold), self.plan)

    @torch.no_grad()
    def fold_loss(self, fold: int) -> float:
        """Mean training loss (dropout off) over the labelled rows of one fold; NaN if it has none."""
        rows = self.fold_rows(fold)
        rows = rows[self.labelled[rows]]
        if rows.size == 0:
            return math.nan
        was = self.model.training
        self.model.eval()
        try:
            total = 0.0
            for start in range(0, rows.size, EVAL_BATCH_ROWS):
                chunk = rows[start:start + EVAL_BATCH_ROWS]
                total += float(self.loss(self.batcher.batch(chunk).to(self.device))) * chunk.size
            return total / rows.size
        finally:
            self.model.train(was)

    def selection(self, fold: int) -> tuple[float, str, Evaluation]:
        """(score, metric name, evaluation) used to pick an epoch or round on `fold` (never the test fold)."""
        ev = self.evaluate(fold)
        score, metric = selection_score(ev)
        if metric == "valid_loss":
            score = -self.fold_loss(fold)
        return score, metric, ev

    # ---- trunk exchange --------------------------------------------------------------------------------------
    def get_trunk(self) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy().astype(np.float32, copy=True)
                for k, v in self.model.trunk.state_dict().items()}

    def set_trunk(self, arrays: dict[str, np.ndarray]) -> None:
        check_trunk_arrays(arrays, self.plan)
        with torch.no_grad():
            for name, tensor in self.model.trunk.state_dict().items():
                tensor.copy_(torch.as_tensor(np.asarray(arrays[name], dtype=np.float32)))

    # ---- private state (heads never leave the partner) -----------------------------------------------------
    def save_private_state(self, model_dir: Path) -> None:
        """Heads, head and trunk optimizer moments (safetensors) and step count (json), each written atomically.

        The trunk optimizer's moments are private too: they are the partner's own gradient history. Keeping them
        across rounds matters: Adam restarted from zero moves every touched weight by about the learning rate on
        its first steps, whatever the gradient's size, so a restart each round undoes much of the average.
        """
        model_dir = Path(model_dir)
        model_dir.mkdir(parents=True, exist_ok=True)
        save_tensors(model_dir / HEADS_FILE, self.model.heads.state_dict(), {"plan_hash": self.plan.hash})
        tensors, groups = _optimizer_tensors(self.head_optimizer)
        save_tensors(model_dir / HEADS_OPTIMIZER_FILE, tensors)
        trunk_tensors: dict[str, torch.Tensor] = {}
        trunk_groups = []
        for i, opt in enumerate(self.trunk_optimizers):
            t_tensors, t_groups = _optimizer_tensors(opt)
            trunk_tensors.update({f"{i}.{k}": v for k, v in t_tensors.items()})
            trunk_groups.append(t_groups)
        save_tensors(model_dir / TRUNK_OPTIMIZER_FILE, trunk_tensors)
        write_text_atomic(model_dir / PRIVATE_STATE_JSON, json.dumps({
            "plan_hash": self.plan.hash, "steps_done": self.steps_done, "param_groups": groups,
            "trunk_param_groups": trunk_groups,
        }, indent=2) + "\n")

    def load_private_state(self, model_dir: Path, trunk_optimizer: bool = True) -> bool:
        """Restore heads and the optimizers' moments as saved; False when `model_dir` has no heads yet.

        The trunk optimizer starts fresh when `trunk_optimizer` is False or nothing of it was saved.
        """
        model_dir = Path(model_dir)
        if not (model_dir / HEADS_FILE).is_file():
            return False
        load_heads(self.model, model_dir / HEADS_FILE)
        self.reset_trunk_optimizer()
        opt_path, meta_path = model_dir / HEADS_OPTIMIZER_FILE, model_dir / PRIVATE_STATE_JSON
        if opt_path.is_file() and meta_path.is_file():
            meta = json.loads(meta_path.read_text())
            _load_optimizer_tensors(self.head_optimizer, load_tensors(opt_path), meta["param_groups"])
            self.steps_done = int(meta.get("steps_done", 0))
            trunk_path, trunk_groups = model_dir / TRUNK_OPTIMIZER_FILE, meta.get("trunk_param_groups")
            if trunk_optimizer and trunk_path.is_file() and trunk_groups is not None:
                if len(trunk_groups) != len(self.trunk_optimizers):
                    raise InputError(f"{trunk_path}: saved trunk optimizer state does not fit this model")
                saved = load_tensors(trunk_path)
                for i, (opt, opt_groups) in enumerate(zip(self.trunk_optimizers, trunk_groups, strict=True)):
                    own = {k.split(".", 1)[1]: v for k, v in saved.items() if k.split(".", 1)[0] == str(i)}
                    _load_optimizer_tensors(opt, own, opt_groups, what="trunk")
        return True

    # ---- snapshots for early stopping ------------------------------------------------------------------------
    def snapshot(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def restore(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    sd = opt.state_dict()
    tensors = {}
    for idx, st in sd["state"].items():
        for key, value in st.items():
            tensors[f"state.{idx}.{key}"] = torch.as_tensor(value).reshape(-1) if key == "step" else value
    groups = [{k: v for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, groups


def _load_optimizer_tensors(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                            groups: list[dict[str, Any]], what: str = "head") -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        _, idx, key = name.split(".", 2)
        state.setdefault(int(idx), {})[key] = value.reshape(()) if key == "step" else value
    for g in groups:
        if "betas" in g:  # json made the tuple a list (SGD groups have none)
            g["betas"] = tuple(g["betas"])
    try:
        opt.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError) as exc:
        raise InputError(f"saved {what} optimizer state does not fit this model ({exc})") from None
    own = {id(p): p for g in opt.param_groups for p in g["params"]}
    for p, st in opt.state.items():
        if id(p) in own and "exp_avg" in st and st["exp_avg"].shape != p.shape:
            raise InputError(f"saved {what} optimizer state does not fit this partner's model (shapes differ)")


@torch.no_grad()
def predict_rows(model: MultitaskModel, batcher: CsrBatcher, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probs, regrs = [], []
    for start in range(0, len(rows), EVAL_BATCH_ROWS):
        p, r = model.predict(batcher.inputs(rows[start:start + EVAL_BATCH_ROWS]))
        probs.append(p.cpu().numpy())
        regrs.append(r.cpu().numpy())
    if not probs:
        return (np.zeros((0, model.heads.n_class), np.float32), np.zeros((0, model.heads.n_regr), np.float32))
    return np.concatenate(probs), np.concatenate(regrs)


def evaluate_rows(model: MultitaskModel, batcher: CsrBatcher, data: PreparedData, rows: np.ndarray,
                  plan: Plan | None = None) -> Evaluation:
    prob, regr = predict_rows(model, batcher, rows)
    return score_rows(data, batcher, rows, prob, regr, plan)


def score_rows(data: PreparedData, batcher: CsrBatcher, rows: np.ndarray, prob: np.ndarray, regr: np.ndarray,
               plan: Plan | None = None) -> Evaluation:
    """Metrics of given predictions for `rows` of `data` (labels from `batcher`), with the plan's regression
    evaluation quorum: `evaluate_rows` without the forward pass, for predictions made elsewhere."""
    rules = plan.data.tasks if plan is not None else None
    quorum = ({"min_values": rules.min_eval_regression_values_per_fold, "min_std": rules.min_eval_regression_std}
              if rules is not None else {})
    return evaluate_predictions(data.tasks, batcher.y_class[rows], prob, batcher.y_regr[rows],
                                batcher.y_censor[rows], regr, **quorum)


def selection_score(ev: Evaluation) -> tuple[float, str]:
    """The model-selection signal of a validation evaluation, and its name; it always has one.

    Every task that enters the aggregates counts, of both kinds: the task-count-weighted mean of the aggregated
    AUC-PR (classification) and R² (regression), so a hybrid partner's twenty regression tasks are not ignored
    for one classification task. With no such task the caller falls back to the validation loss
    ("valid_loss": the score returned here is NaN and `LocalTrainer.selection` fills in −loss).
    """
    agg = ev.aggregate
    n_class, n_regr = int(agg.get("n_class_scored", 0)), int(agg.get("n_regr_scored", 0))
    if n_class and n_regr:
        return (n_class * agg["auc_pr"] + n_regr * agg["r2"]) / (n_class + n_regr), "auc_pr+r2"
    if n_class:
        return agg["auc_pr"], "auc_pr"
    if n_regr:
        return agg["r2"], "r2"
    return math.nan, "valid_loss"


def train_early_stopping(trainer: LocalTrainer, max_epochs: int, patience: int,
                         progress: bool = False, keep_start: bool = False) -> dict[str, Any]:
    """Train epochs until the validation score has not improved for `patience` epochs; restore the best one.

    Returns {"best_epoch", "best_score", "history"}; epoch e is shuffled by `derive_seed(trainer.seed, e)`.
    `keep_start`: the model as it is counts as a candidate too (epoch -1), so fine-tuning a given model can only
    replace it with one that scores better on the validation fold.
    """
    best_score, best_epoch, best_state, history, metric = -math.inf, -1, None, [], "none"
    if keep_start:
        score, metric, valid = trainer.selection(trainer.valid_fold)
        best_score, best_state = (score if not math.isnan(score) else -math.inf), trainer.snapshot()
        history.append({"epoch": -1, "loss": None, "valid_auc_pr": valid.aggregate["auc_pr"],
                        "valid_r2": valid.aggregate["r2"], "valid_score": score, "seconds": 0.0})
    columns = [TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
               TimeElapsedColumn()]
    with Progress(*columns, console=console, disable=not progress, transient=False) as bar:
        task = bar.add_task("epochs", total=max_epochs, info="")
        for epoch in range(max_epochs):
            t0 = time.perf_counter()
            loss = trainer.train_epoch(derive_seed(trainer.seed, epoch))
            seconds = time.perf_counter() - t0
            score, metric, valid = trainer.selection(trainer.valid_fold)
            history.append({"epoch": epoch, "loss": loss, "valid_auc_pr": valid.aggregate["auc_pr"],
                            "valid_r2": valid.aggregate["r2"], "valid_score": score, "seconds": seconds})
            if best_state is None or (not math.isnan(score) and score > best_score):
                best_score = score if not math.isnan(score) else best_score
                best_epoch, best_state = epoch, trainer.snapshot()
            bar.update(task, advance=1, info=f"loss {loss:.4f}  valid {metric} {score:.4f}  "
                                             f"best {best_score:.4f} @ {best_epoch}")
            if epoch - best_epoch >= patience:
                break
    if best_state is not None:
        trainer.restore(best_state)
    return {"best_epoch": best_epoch, "best_score": best_score, "selection_metric": metric, "history": history}


def fit(plan: Plan, data: PreparedData, out_dir: Path, *, valid_fold: int = 1, test_fold: int = 0,
        seed: int | None = None, init_trunk: dict[str, np.ndarray] | None = None, freeze_trunk: bool = False,
        progress: bool = True, max_epochs: int | None = None, source: str = "prepared data",
        device: str = "cpu") -> dict[str, Any]:
    """Train with early stopping on the validation AUC-PR, keep the best epoch, save it to `out_dir`.

    Returns the metrics written to `metrics.json`: best epoch, validation and test aggregates, history.
    """
    trainer = LocalTrainer(plan, data, valid_fold=valid_fold, test_fold=test_fold, seed=seed,
                           freeze_trunk=freeze_trunk, source=source, device=device)
    if init_trunk is not None:
        trainer.set_trunk(init_trunk)
    started = time.perf_counter()
    epochs = int(max_epochs if max_epochs is not None else plan.training.max_epochs)
    run = train_early_stopping(trainer, epochs, plan.training.patience, progress=progress)
    valid, test = trainer.evaluate(valid_fold), trainer.evaluate(test_fold)
    best_epoch = run["best_epoch"]
    metrics = {
        "best_epoch": best_epoch,
        "epochs_run": len(run["history"]),
        "selection_metric": run["selection_metric"],
        "valid_fold": valid_fold,
        "test_fold": test_fold,
        "n_train": trainer.n_train,
        "valid": valid.aggregate,
        "test": test.aggregate,
        "test_per_task": test.to_dict()["per_task"],
        "history": run["history"],
        "train_seconds": time.perf_counter() - started,
    }
    extra = {"seed": trainer.seed, "valid_fold": valid_fold, "test_fold": test_fold, "n_train": trainer.n_train,
             "batch_size": trainer.batch_size, "freeze_trunk": freeze_trunk,
             "init_trunk": init_trunk is not None, "best_epoch": best_epoch,
             "prepared_manifest": {k: data.manifest.get(k) for k in ("plan_hash", "key_check_hash")}}
    save_model(out_dir, trainer, plan=plan, tasks=data.tasks, metrics=metrics, extra=extra)
    write_model_outputs(out_dir, trainer.model, trainer.batcher, data, trainer.fold_rows(valid_fold),
                        trainer.fold_rows(test_fold))
    return metrics
