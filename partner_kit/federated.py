"""A partner's side of a federated round, shared by the embedded simulation and the deployed SuperNode.

The computation of round r depends only on (trunk received, private state of round r-1 on disk, plan,
round number, partner seed): heads and the head and trunk optimizers' moments are reloaded from
`model/federated/round-NNN/` in both modes (the trunk moments are the partner's own gradient history, private,
never sent; `federation.trunk_optimizer = "reset"` restarts them every round instead), and batches and dropout
are seeded from the round seed the server sends. So an embedded run and a deployed run
(a fresh ClientApp process per message) produce the same trunks, and a resumed run continues exactly.

Model selection is the partner's own: when round r's averaged trunk arrives (with round r+1, or with the
final evaluate message) it is scored with the partner's round-r heads on its validation fold, and the best
pair is kept in `model/federated/best/`. After the last round that best pair becomes the partner's model
(`model/trunk.safetensors`, `heads.safetensors`, `model.json`, `metrics.json`, test fold evaluated locally).
Only the trunk, the example count and a loss leave this module.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from consortium.plan import Plan, trunk_shapes
from data_prep.atomic import write_atomic, write_text_atomic
from data_prep.errors import InputError
from data_prep.prepared import PreparedData
from partner_kit.model import MultitaskModel
from partner_kit.model_outputs import write_model_outputs
from partner_kit.training import LocalTrainer, derive_seed, evaluate_rows, train_early_stopping
from partner_kit.weights import HEADS_FILE, load_model, save_model

log = logging.getLogger("partner_kit.federated")

FEDERATED_DIR = "federated"
SELECTION_JSON = "selection.json"
ROUNDS_LOG = "rounds.jsonl"
FINETUNE_SEED = 7919  # mixed into the partner seed for the local fine-tuning epochs
WARMUP_SEED = 7907  # mixed into the partner seed for the heads' warm-up before round 1
STREAM_SEED = 7901  # mixed into the partner seed for the epoch stream of `federation.batches = "epochs"`
_MATRICES = ("x", "y_class", "y_regr", "y_censor")


class PlanMismatch(InputError):
    """The consortium's plan, the partner's plan and the prepared data's plan are not one plan."""


@dataclass(frozen=True)
class PartnerConfig:
    """Where a partner's files are; given to a SuperNode as `--node-config` (the name never leaves it)."""

    plan: Path
    prepared: Path
    model: Path
    name: str = "partner"
    seed: int | None = None
    valid_fold: int = 1
    test_fold: int = 0
    score_every: int = 1
    #: This partner's `data-prep reference-hash` (plan + key + kit), sent with every trunk reply so the
    #: consortium can refuse a partner whose key or kit differs; "" = not computed (embedded demos).
    reference_hash: str = ""
    #: torch device this partner trains on ("cpu", "cuda", "auto"): private, never sent.
    device: str = "cpu"
    #: Write each round's private state in a background thread while the run goes on (embedded runs, where the
    #: partner lives across rounds and the process outlives the write). A deployed ClientApp may exit right
    #: after its reply, so it writes before replying.
    write_behind: bool = False

    @classmethod
    def from_node_config(cls, cfg: Mapping[str, Any]) -> PartnerConfig:
        missing = [k for k in ("plan", "prepared", "model") if k not in cfg]
        if missing:
            raise InputError(f"node config lacks {missing}; start the partner with `partner-kit join`")
        seed = cfg.get("seed")
        return cls(plan=Path(str(cfg["plan"])), prepared=Path(str(cfg["prepared"])), model=Path(str(cfg["model"])),
                   name=str(cfg.get("name", "partner")), seed=None if seed in (None, "", -1) else int(seed),
                   valid_fold=int(cfg.get("valid-fold", 1)), test_fold=int(cfg.get("test-fold", 0)),
                   score_every=int(cfg.get("score-every", 1)),
                   reference_hash=str(cfg.get("reference-hash", "")), device=str(cfg.get("device", "cpu")),
                   write_behind=bool(cfg.get("write-behind", False)))

    def to_node_config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {"plan": str(self.plan), "prepared": str(self.prepared), "model": str(self.model),
                               "name": self.name, "valid-fold": self.valid_fold, "test-fold": self.test_fold,
                               "score-every": self.score_every}
        if self.seed is not None:
            cfg["seed"] = self.seed
        if self.reference_hash:
            cfg["reference-hash"] = self.reference_hash
        if self.device != "cpu":
            cfg["device"] = self.device
        if self.write_behind:
            cfg["write-behind"] = True
        return cfg


# ---- prepared data, loaded once -----------------------------------------------------------------------------
def load_prepared_cached(prepared: Path, cache_dir: Path) -> PreparedData:
    """Load a prepared directory through an uncompressed, memory-mapped copy of its matrices.

    A deployed ClientApp starts a fresh process per message; decompressing the npz files each round is the
    part that grows with the data, so the first round writes raw .npy parts under `cache_dir` (keyed by the
    manifest, i.e. by the exact preparation) and later rounds map them instead of reading them.
    """
    prepared = Path(prepared)
    manifest_path = prepared / "manifest.json"
    if not manifest_path.is_file():
        return PreparedData.load(prepared)  # raises the contract's own clear error
    key = hashlib.sha256(manifest_path.read_bytes()).hexdigest()[:16]
    folder = Path(cache_dir) / key
    if not (folder / "done").is_file():
        data = PreparedData.load(prepared)
        folder.mkdir(parents=True, exist_ok=True)
        for name in _MATRICES:
            m: sp.csr_matrix = getattr(data, name)
            for part in ("data", "indices", "indptr"):
                _save_npy(folder / f"{name}.{part}.npy", getattr(m, part))
            write_text_atomic(folder / f"{name}.shape.json", json.dumps(list(m.shape)))
        _save_npy(folder / "folds.npy", np.asarray(data.folds))
        for old in folder.parent.iterdir():
            if old != folder and old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
        write_text_atomic(folder / "done", key + "\n")
        return data
    import pandas as pd

    def csr(name: str) -> sp.csr_matrix:
        parts = [np.load(folder / f"{name}.{p}.npy", mmap_mode="r", allow_pickle=False)
                 for p in ("data", "indices", "indptr")]
        shape = tuple(json.loads((folder / f"{name}.shape.json").read_text()))
        return sp.csr_matrix(tuple(parts), shape=shape, copy=False)

    data = PreparedData(x=csr("x"), folds=np.load(folder / "folds.npy", allow_pickle=False),
                        y_class=csr("y_class"), y_regr=csr("y_regr"), y_censor=csr("y_censor"),
                        tasks=pd.read_parquet(prepared / "tasks.parquet"),
                        manifest=json.loads(manifest_path.read_text()))
    data.validate(source=str(prepared))
    return data


def _save_npy(path: Path, array: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a file object: np.save would append ".npy" to a temporary name
            np.save(fh, np.ascontiguousarray(array), allow_pickle=False)

    write_atomic(path, write)


# ---- the partner ----------------------------------------------------------------------------------------------
def check_plans(server_plan_hash: str | None, plan: Plan, plan_path: Path, manifest: Mapping[str, Any],
                prepared: Path) -> None:
    """Fail with a message saying which plan differs: the consortium's, the partner's, or the prepared data's."""
    if server_plan_hash is not None and server_plan_hash != plan.hash:
        raise PlanMismatch(f"the consortium runs plan hash {server_plan_hash[:16]}… but your plan {plan_path} has "
                           f"hash {plan.hash[:16]}…; get the consortium's plan.toml and prepare your data with it")
    data_hash = manifest.get("plan_hash")
    if data_hash != plan.hash:
        raise PlanMismatch(f"prepared directory {prepared} was made under plan hash {str(data_hash)[:16]}… but your "
                           f"plan {plan_path} has hash {plan.hash[:16]}…; re-run `data-prep prepare` with this plan")


class FederatedPartner:
    """One partner's round logic. Holds the data and a trainer; all state that matters lives on disk.

    The trainer also holds the state of the last round it trained (`_live_round`): when the next round follows it
    in the same process (embedded runs, a warm SuperNode executor), the state is used as it is instead of read
    back from the files just written from it, which hold the same bits.
    """

    def __init__(self, cfg: PartnerConfig) -> None:
        self.cfg = cfg
        self.plan = Plan.load(cfg.plan)
        self.work = Path(cfg.model) / FEDERATED_DIR
        self.data = load_prepared_cached(cfg.prepared, self.work / "cache")
        check_plans(None, self.plan, cfg.plan, self.data.manifest, cfg.prepared)
        self.seed = int(self.plan.training.seed if cfg.seed is None else cfg.seed)
        self.trainer = LocalTrainer(self.plan, self.data, valid_fold=cfg.valid_fold, test_fold=cfg.test_fold,
                                    seed=self.seed, source=str(cfg.prepared), device=cfg.device,
                                    trunk_step="gradient" if self.plan.federation.server_optimizer == "adam"
                                    else "adam")
        # Fresh heads of this seed, so a partner restarting at round 1 starts exactly as the first time.
        self._initial_private = {k: v.clone() for k, v in self.trainer.model.heads.state_dict().items()}
        self._initial_head_opt = self.trainer.head_optimizer.state_dict()
        self._live_round: int | None = None  # the round whose private state the trainer holds, if any
        self._writer: ThreadPoolExecutor | None = None
        self._pending: Future[None] | None = None  # the background write of the last round's state

    # -- private state per round -----------------------------------------------------------------------------
    def round_dir(self, rnd: int) -> Path:
        return self.work / f"round-{int(rnd):03d}"

    def _restore_state(self, before: int) -> int:
        """Load the newest saved round < `before` (heads + head optimizer); 0 = fresh heads."""
        self.wait_for_writes()
        live, self._live_round = self._live_round, None
        if live is not None and live == before - 1 and (self.round_dir(live) / HEADS_FILE).is_file():
            if self.plan.federation.trunk_optimizer != "keep":
                self.trainer.reset_trunk_optimizer()  # as loading round-<live>/ would
            return live  # the trainer holds exactly what round-<live>/ holds
        done = sorted(int(p.name.split("-")[1]) for p in self.work.glob("round-*") if p.is_dir()
                      and p.name.split("-")[1].isdigit() and int(p.name.split("-")[1]) < before)
        t = self.trainer
        keep = self.plan.federation.trunk_optimizer == "keep"
        if done and t.load_private_state(self.round_dir(done[-1]), trunk_optimizer=keep):
            if done[-1] != before - 1:
                log.warning("%s: no private state of round %d; continuing from round %d", self.cfg.name,
                            before - 1, done[-1])
            return done[-1]
        t.model.heads.load_state_dict(self._initial_private)
        t.head_optimizer.load_state_dict(self._initial_head_opt)
        t.reset_trunk_optimizer()
        t.steps_done = 0
        return 0

    def _set_trunk(self, arrays: list[np.ndarray]) -> None:
        names = list(trunk_shapes(self.plan))
        if len(arrays) != len(names):
            raise InputError(f"the consortium sent {len(arrays)} arrays; the plan's trunk has {len(names)}")
        self.trainer.set_trunk({n: np.asarray(a, dtype=np.float32) for n, a in zip(names, arrays, strict=True)})

    # -- selection ------------------------------------------------------------------------------------------
    def _selection(self) -> dict[str, Any]:
        path = self.work / SELECTION_JSON
        return json.loads(path.read_text()) if path.is_file() else {"best_round": None, "best_score": None,
                                                                      "history": []}

    def _score(self, rnd: int) -> None:
        """Score (trunk of round rnd, heads of round rnd) on the validation fold; keep it if best so far."""
        sel = self._selection()
        if any(h["round"] == rnd for h in sel["history"]):
            return
        score, metric, valid = self.trainer.selection(self.cfg.valid_fold)
        sel["selection_metric"] = metric
        sel["history"].append({"round": rnd, "valid_score": None if math.isnan(score) else score,
                               "selection_metric": metric,
                               "valid_auc_pr": _clean(valid.aggregate.get("auc_pr")),
                               "valid_auc_roc": _clean(valid.aggregate.get("auc_roc")),
                               "valid_r2": _clean(valid.aggregate.get("r2"))})
        best = sel["best_score"]
        if sel["best_round"] is None or (not math.isnan(score) and (best is None or score > best)):
            save_model(self.work / "best", self.trainer, plan=self.plan, tasks=self.data.tasks,
                       metrics={"round": rnd, "valid": valid.aggregate},
                       extra={"federated_round": rnd, "seed": self.seed})
            sel["best_round"], sel["best_score"] = rnd, None if math.isnan(score) else score
        write_text_atomic(self.work / SELECTION_JSON, json.dumps(sel, indent=2) + "\n")

    def n_train(self, config: Mapping[str, Any]) -> int:
        check_plans(str(config.get("plan_hash")), self.plan, self.cfg.plan, self.data.manifest, self.cfg.prepared)
        return int(self.trainer.n_train)

    # -- the round --------------------------------------------------------------------------------------------
    def fit_round(self, arrays: list[np.ndarray], config: Mapping[str, Any]) -> tuple[list[np.ndarray], int, float]:
        """Train on the received trunk for one round; return (trunk arrays, training examples, mean loss)."""
        check_plans(str(config.get("plan_hash")), self.plan, self.cfg.plan, self.data.manifest, self.cfg.prepared)
        rnd = int(config["round"])
        started = time.perf_counter()
        restored = self._restore_state(rnd)
        self._set_trunk(arrays)
        if restored == 0 and rnd == 1 and self.plan.federation.head_warmup_epochs > 0:
            self.warm_up_heads(derive_seed(self.seed, WARMUP_SEED))
        if restored == rnd - 1 and restored >= 1 and restored % max(self.cfg.score_every, 1) == 0:
            self._score(restored)
        scored = time.perf_counter()
        t = self.trainer
        seed = derive_seed(self.seed, int(config["seed"]))
        fed = self.plan.federation
        if fed.schedule == "local_epochs":
            losses = [t.train_epoch(derive_seed(seed, e)) for e in range(max(fed.local_epochs, 1))]
            loss = float(np.mean(losses))
        elif fed.batches == "epochs":  # round r trains steps (r-1)*n .. r*n-1 of one epoch stream
            n = int(fed.steps_per_round or 1)
            loss = t.train_stream((rnd - 1) * n, n, derive_seed(self.seed, STREAM_SEED), seed)
        else:
            loss = t.train_steps(int(fed.steps_per_round or 1), seed)
        trained = time.perf_counter()
        if self.cfg.write_behind:
            self._writer = self._writer or ThreadPoolExecutor(1, thread_name_prefix=f"state-{self.cfg.name}")
            self._pending = self._writer.submit(self._save_round, rnd)
        else:
            self._save_round(rnd)
        self._live_round = rnd
        dtype = np.float16 if fed.wire_dtype == "float16" else np.float32
        trunk = t.get_trunk()
        self._log_round({"round": rnd, "loss": float(loss), "n_train": t.n_train,
                         "seconds_restore_score": round(scored - started, 4),
                         "seconds_train": round(trained - scored, 4),
                         "seconds_total": round(time.perf_counter() - started, 4)})
        return [trunk[n].astype(dtype, copy=False) for n in trunk_shapes(self.plan)], t.n_train, float(loss)

    def _save_round(self, rnd: int) -> None:
        """Write round `rnd`'s private state (atomically), then drop the rounds before the previous one."""
        self.trainer.save_private_state(self.round_dir(rnd))
        for p in self.work.glob("round-*"):
            if p.is_dir() and p.name.split("-")[1].isdigit() and int(p.name.split("-")[1]) < rnd - 1:
                shutil.rmtree(p, ignore_errors=True)

    def close(self) -> None:
        """Finish the background write, if any, and stop its thread."""
        self.wait_for_writes()
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            self._writer = None

    def wait_for_writes(self) -> None:
        """Block until the background write of the last round's state is on disk; re-raise its error."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def warm_up_heads(self, seed: int) -> None:
        """Train the fresh heads alone on the consortium's initial trunk (private, before the first update).

        Random heads would make round 1's trunk gradients noise; the trunk's optimizer sees none of these steps.
        """
        t = self.trainer
        trunk_optimizers, t.trunk_optimizers = t.trunk_optimizers, []
        params = list(t.model.trunk.parameters())
        steps_done = t.steps_done
        try:
            for p in params:
                p.requires_grad_(False)
            for e in range(self.plan.federation.head_warmup_epochs):
                t.train_epoch(derive_seed(seed, e))
        finally:
            for p in params:
                p.requires_grad_(True)
            t.trunk_optimizers = trunk_optimizers
            t.steps_done = steps_done

    def _log_round(self, entry: dict[str, Any]) -> None:
        """Local timing log (`federated/rounds.jsonl`): what each round cost this partner; never sent."""
        self.work.mkdir(parents=True, exist_ok=True)
        with open(self.work / ROUNDS_LOG, "a") as fh:
            fh.write(json.dumps(entry) + "\n")

    def finish(self, arrays: list[np.ndarray], config: Mapping[str, Any]) -> tuple[float, int]:
        """After the last round: score the final trunk, write the best round's model, evaluate it locally.

        Returns (validation loss of the final trunk, validation rows); per-task metrics stay in model/.
        """
        check_plans(str(config.get("plan_hash")), self.plan, self.cfg.plan, self.data.manifest, self.cfg.prepared)
        rnd = int(config["round"])
        restored = self._restore_state(rnd + 1)
        self._set_trunk(arrays)
        if restored == rnd:
            self._score(rnd)
        val_loss = self.trainer.fold_loss(self.cfg.valid_fold)
        sel = self._selection()
        self.write_model(sel, final_round=rnd)
        return val_loss, int(self.trainer.fold_rows(self.cfg.valid_fold).size)

    def finetune(self, model: MultitaskModel) -> tuple[MultitaskModel, dict[str, Any]]:
        """A last private step: train the chosen federated model on, locally, early-stopped on the validation fold.

        The federated model itself is a candidate (epoch −1), so the partner keeps whichever of the two scores
        better on its own validation fold — never the test fold. Trunk and heads both train; nothing is sent.
        """
        t = LocalTrainer(self.plan, self.data, valid_fold=self.cfg.valid_fold, test_fold=self.cfg.test_fold,
                         seed=derive_seed(self.seed, FINETUNE_SEED), source=str(self.cfg.prepared),
                         device=self.cfg.device)
        t.model.load_state_dict(model.state_dict())
        run = train_early_stopping(t, self.plan.federation.finetune_epochs, self.plan.training.patience,
                                   keep_start=True)
        t.model.eval()
        return t.model, {"epochs_kept": run["best_epoch"] + 1, "valid_score": run["best_score"],
                         "valid_score_federated": run["history"][0]["valid_score"], "history": run["history"]}

    def write_model(self, sel: dict[str, Any], final_round: int) -> dict[str, Any]:
        best_dir = self.work / "best"
        model, _ = load_model(best_dir, self.plan)
        finetune = None
        if self.plan.federation.finetune_epochs > 0:
            model, finetune = self.finetune(model)
        valid_rows, test_rows = (self.trainer.fold_rows(f) for f in (self.cfg.valid_fold, self.cfg.test_fold))
        valid = evaluate_rows(model, self.trainer.batcher, self.data, valid_rows, self.plan)
        test = evaluate_rows(model, self.trainer.batcher, self.data, test_rows, self.plan)
        metrics = {
            "federated": True, "best_round": sel["best_round"], "rounds": final_round,
            "selection_metric": sel.get("selection_metric", "none"),
            "variant": "federated" if not finetune or finetune["epochs_kept"] == 0 else "federated+finetune",
            "finetune": finetune,
            "valid_fold": self.cfg.valid_fold, "test_fold": self.cfg.test_fold,
            "valid": valid.aggregate, "test": test.aggregate, "test_per_task": test.to_dict()["per_task"],
            "history": sel["history"],
        }
        save_model(self.cfg.model, model, plan=self.plan, tasks=self.data.tasks, metrics=metrics,
                   extra={"federated": True, "best_round": sel["best_round"], "seed": self.seed,
                          "valid_fold": self.cfg.valid_fold, "test_fold": self.cfg.test_fold,
                          "n_train": self.trainer.n_train,
                          "prepared_manifest": {k: self.data.manifest.get(k) for k in ("plan_hash", "key_check_hash")}})
        write_model_outputs(self.cfg.model, model, self.trainer.batcher, self.data, valid_rows, test_rows)
        return metrics


def _clean(v: Any) -> Any:
    return None if isinstance(v, float) and math.isnan(v) else v


_PARTNERS: dict[PartnerConfig, FederatedPartner] = {}


def get_partner(cfg: PartnerConfig) -> FederatedPartner:
    """One FederatedPartner per config and process: an embedded run loads each partner's data once."""
    partner = _PARTNERS.get(cfg)
    if partner is None:
        partner = _PARTNERS[cfg] = FederatedPartner(cfg)
    return partner


def release_partners(configs: Iterable[PartnerConfig]) -> None:
    """Forget these partners once their run is over (their state written), so a multi-seed study holds one
    run's trainers at a time, not every run's."""
    for cfg in configs:
        partner = _PARTNERS.pop(cfg, None)
        if partner is not None:
            partner.close()
