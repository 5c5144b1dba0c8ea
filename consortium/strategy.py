"""Trunk-only FedAvg: what the consortium accepts from a partner, and how it averages.

One strategy serves both settings. Plain: each partner's reply carries its trunk arrays, the server checks
them and averages weighted by training examples (float64, then float32). SecAgg+: Flower's
`SecAggPlusWorkflow` hands every result the same already-summed trunk; the strategy checks its shape and
uses it as is. Either way the reply messages themselves are checked first (`check_reply`): anything but the
trunk (or its masked shares), the example count and a loss is refused, so a head array or an extra key never
reaches aggregation.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

import numpy as np
from flwr.app import Message, RecordDict
from flwr.common import (
    EvaluateIns,
    EvaluateRes,
    FitIns,
    FitRes,
    Parameters,
    Scalar,
    parameters_to_ndarrays,
)
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedAvg

from consortium.admission import REFERENCE_KEY, Admission, AdmissionRefused, check_hash_format
from consortium.plan import Plan, trunk_shapes
from consortium.server_optimizer import ServerAdam
from consortium.trunk import WIRE_DTYPES, raw_bytes, to_dict, to_list

log = logging.getLogger("consortium")

#: What a partner may report besides its example count: one loss, and its reference hash (`admission`).
ALLOWED_METRICS = frozenset({"loss", REFERENCE_KEY})
SECAGG_CONFIGS = "secaggplus_configs"  # flwr.common.secure_aggregation.secaggplus_constants.RECORD_KEY_CONFIGS


class ReplyRefused(ValueError):
    """A partner reply carried something other than what may cross the network."""


@dataclass(frozen=True)
class PartnerUpdate:
    """One partner's contribution to a round, as the server may know it."""

    node_id: int
    examples: int
    loss: float
    arrays: list[np.ndarray] | None  # None under SecAgg+: the server never sees one partner's trunk


@dataclass
class RoundResult:
    round: int
    trunk: dict[str, np.ndarray]
    updates: list[PartnerUpdate]
    refused: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    #: Differential privacy: cumulative ε at the plan's δ after this round, and the noise std added (None: off).
    dp_epsilon: float | None = None
    dp_noise_std: float | None = None


class RoundFailed(RuntimeError):
    """Fewer valid replies than the plan's `min_partners`: the round is not aggregated."""


def round_seed(plan_seed: int, round: int) -> int:
    """The seed every partner uses for round `round`: a function of the plan seed and the round only."""
    digest = hashlib.sha256(f"fedqsar-round:{int(plan_seed)}:{int(round)}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def weighted_average(arrays: list[list[np.ndarray]], weights: list[int]) -> list[np.ndarray]:
    """Example-weighted mean per array, accumulated in float64 and returned as float32.

    Inputs are sorted by (weight, content hash) first, so the result does not depend on reply order
    (or on Flower's random node ids) down to the last bit; the hash only breaks ties, so it is computed only
    for partners with equal weights. The float64 sums run over blocks of `AVERAGE_BLOCK` elements: the
    accumulator's memory is two blocks, not two float64 copies of the largest array (4 x a float32 trunk at
    32000 x 2000), and each element gets exactly the same operations in the same order.
    """
    if not arrays:
        raise ValueError("nothing to average")
    if any(w <= 0 for w in weights):
        raise ValueError(f"example counts must be positive, got {weights}")
    tied = {w for w in weights if weights.count(w) > 1}
    keyed = sorted(zip(weights, arrays, strict=True),
                   key=lambda wa: (wa[0], _content_hash(wa[1]) if wa[0] in tied else ""))
    total = float(sum(weights))
    out = []
    for i in range(len(arrays[0])):
        result = np.empty(arrays[0][i].shape, dtype=np.float32)
        flat_out = result.reshape(-1)
        flats = [(w / total, np.asarray(arrs[i]).reshape(-1)) for w, arrs in keyed]
        size = flat_out.size
        acc = np.empty(min(size, AVERAGE_BLOCK), dtype=np.float64)
        term = np.empty_like(acc)  # reused for every partner and block: no fresh temporaries
        for start in range(0, size, AVERAGE_BLOCK):
            stop = min(start + AVERAGE_BLOCK, size)
            a, t = acc[:stop - start], term[:stop - start]
            a.fill(0.0)
            for share, flat in flats:
                np.multiply(flat[start:stop], share, out=t, dtype=np.float64)
                a += t
            flat_out[start:stop] = a  # float64 -> float32, rounded as astype rounds
        out.append(result)
    return out


def server_step(sent: list[np.ndarray], averaged: list[np.ndarray], lr: float) -> None:
    """In place: `averaged <- sent + lr * (averaged - sent)` (`federation.server_lr`; lr = 1 leaves it as is).

    float32 arithmetic on the averaged arrays themselves: no temporary the size of a trunk on the server.
    """
    if lr == 1.0:
        return
    for a, s in zip(averaged, sent, strict=True):
        s32 = np.asarray(s, dtype=np.float32)
        np.subtract(a, s32, out=a)
        a *= np.float32(lr)
        a += s32


#: Elements per float64 block in `weighted_average` (8 MiB per buffer).
AVERAGE_BLOCK = 1 << 20


def _content_hash(arrays: list[np.ndarray]) -> str:
    """sha256 of the arrays' bytes in order (the same digest as of their concatenation, without building it)."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(raw_bytes(a))
    return h.hexdigest()


def check_trunk(arrays: list[np.ndarray], plan: Plan, dtypes: Iterable[np.dtype] | None = None) -> None:
    """Refuse anything but the plan's trunk arrays (count, order, shapes, dtype, finite values)."""
    shapes = list(trunk_shapes(plan).items())
    allowed = set(dtypes) if dtypes is not None else {WIRE_DTYPES[plan.federation.wire_dtype]}
    if len(arrays) != len(shapes):
        raise ReplyRefused(f"{len(arrays)} arrays where the trunk has {len(shapes)} "
                           f"({', '.join(n for n, _ in shapes)}); heads or extra arrays never leave a partner")
    for arr, (name, shape) in zip(arrays, shapes, strict=True):
        if tuple(arr.shape) != tuple(shape):
            raise ReplyRefused(f"array for {name} has shape {tuple(arr.shape)}, the plan says {shape}")
        if arr.dtype not in allowed:
            raise ReplyRefused(f"array for {name} is {arr.dtype}, expected {sorted(map(str, allowed))}")
        if not _all_finite(arr):
            raise ReplyRefused(f"array for {name} holds NaN or infinite values")


#: Elements per block in the reply checks: their temporaries stay a few MiB whatever the trunk size.
CHECK_BLOCK = 1 << 20


def _all_finite(arr: np.ndarray) -> bool:
    flat = np.asarray(arr).reshape(-1)
    return all(bool(np.isfinite(flat[i:i + CHECK_BLOCK]).all()) for i in range(0, flat.size, CHECK_BLOCK))


def check_update(arrays: list[np.ndarray], sent: list[np.ndarray], plan: Plan) -> None:
    """Refuse an update larger than `federation.max_update_norm` times the sent trunk's norm.

    Finite but huge weights (1e30) or a scaled-up "model replacement" would otherwise dominate the average.
    """
    delta = 0.0
    base = 0.0
    diff = np.empty(CHECK_BLOCK, dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is an infinite norm: refused below
        for arr, ref in zip(arrays, sent, strict=True):
            new, old = np.asarray(arr).reshape(-1), np.asarray(ref).reshape(-1)
            # float32 BLAS dots over blocks: no full-size difference (or float32 copy of a float16 reply) of a
            # 32000 x 2000 trunk; precision is ample for a bound.
            for start in range(0, new.size, CHECK_BLOCK):
                ref32 = old[start:start + CHECK_BLOCK].astype(np.float32, copy=False)
                d = diff[:ref32.size]
                np.subtract(new[start:start + CHECK_BLOCK], ref32, out=d, dtype=np.float32)
                delta += float(np.dot(d, d))
                base += float(np.dot(ref32, ref32))
    bound = plan.federation.max_update_norm * max(math.sqrt(base), 1.0)
    norm = math.sqrt(delta) if math.isfinite(delta) else math.inf
    if not norm <= bound:
        raise ReplyRefused(f"update norm {norm:.4g} exceeds federation.max_update_norm "
                           f"{plan.federation.max_update_norm:g} x the sent trunk's norm ({bound:.4g})")


def check_clipped(arrays: list[np.ndarray], sent: list[np.ndarray], plan: Plan) -> None:
    """Under differential privacy, refuse an update its partner did not clip to `federation.dp_clipping_norm`.

    Only checkable in plain rounds; under SecAgg+ each partner's own ClientApp clips (`partner_kit.client_app`).
    """
    fed = plan.federation
    if not fed.dp_enabled:
        return
    from consortium.privacy import allowed_norm, update_norm

    norm, bound = update_norm(arrays, sent), allowed_norm(fed.dp_clipping_norm, sent)
    if not norm <= bound:
        raise ReplyRefused(f"update norm {norm:.6g} exceeds federation.dp_clipping_norm {fed.dp_clipping_norm:g}: "
                           "the partner did not clip its update (differential privacy needs every update clipped)")


def check_count(value: object, plan: Plan, what: str = "example count", minimum: int = 1) -> int:
    """An example count is a plain integer between `minimum` and the plan's `federation.max_examples`."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ReplyRefused(f"{what} is {type(value).__name__}, not an integer")
    cap = plan.federation.max_examples
    if not minimum <= int(value) <= cap:
        raise ReplyRefused(f"{what} {value} is outside {minimum}..{cap} (federation.max_examples)")
    return int(value)


def check_loss(value: object, what: str = "loss") -> float:
    """The one scalar a partner reports: a finite number, never text, bytes or NaN."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
        raise ReplyRefused(f"{what} is {type(value).__name__}, not a number; only one finite loss may leave "
                           "a partner")
    if not math.isfinite(float(value)):
        raise ReplyRefused(f"{what} is {value}, not a finite number")
    return float(value)


def npy_view(blob: bytes) -> np.ndarray:
    """The array in a `.npy` payload (Flower's legacy array encoding) as a read-only view of its bytes.

    What `np.load(allow_pickle=False)` returns, without copying: a partner's 256 MiB trunk reply is read in
    place instead of held twice. Object dtypes (pickles) and short payloads raise ValueError as np.load does.
    """
    fh = io.BytesIO(blob)
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    else:  # version 3 (utf-8 field names) never holds a plain float array
        raise ValueError(f"unsupported .npy version {version}")
    if dtype.hasobject:
        raise ValueError("object arrays cannot be loaded when allow_pickle=False")
    count = math.prod(shape)
    if len(blob) - fh.tell() < count * dtype.itemsize:
        raise ValueError(f"payload holds {len(blob) - fh.tell()} bytes, the header says {count * dtype.itemsize}")
    flat = np.frombuffer(blob, dtype=dtype, count=count, offset=fh.tell())
    return flat.reshape(shape, order="F" if fortran else "C")


def npy_bytes(arr: np.ndarray) -> bytes:
    """`np.save`'s bytes of `arr`, built in one allocation (Flower's `ndarray_to_bytes` grows a BytesIO and then
    copies it out: two 256 MiB copies of the aggregated trunk each round)."""
    from flwr.common import ndarray_to_bytes

    if arr.ndim == 0 or not arr.flags.c_contiguous or arr.dtype.hasobject:
        return ndarray_to_bytes(arr)
    head = io.BytesIO()
    try:
        np.lib.format.write_array_header_1_0(head, np.lib.format.header_data_from_array_1_0(arr))
    except ValueError:  # a header too long for format 1.0: np.save picks the version
        return ndarray_to_bytes(arr)
    return b"".join([head.getvalue(), raw_bytes(arr)])


def arrays_to_parameters(arrays: list[np.ndarray]) -> Parameters:
    """`flwr.common.ndarrays_to_parameters` with one copy per array (`npy_bytes`); the same bytes."""
    return Parameters(tensors=[npy_bytes(a) for a in arrays], tensor_type="numpy.ndarray")


def parameters_to_views(parameters: Parameters) -> list[np.ndarray]:
    """`flwr.common.parameters_to_ndarrays` without the copies: read-only views (`npy_view`)."""
    return [npy_view(t) for t in parameters.tensors]


def _decode(blobs: list[bytes]) -> list[np.ndarray]:
    try:
        return [npy_view(b) for b in blobs]
    except ValueError as exc:
        raise ReplyRefused(f"an array could not be read as a plain numpy array ({exc})") from None


def check_reply(content: RecordDict, plan: Plan, message_type: str) -> None:
    """Refuse a reply whose records are anything but trunk (or masked shares) + example count + loss."""
    arrays = dict(content.array_records)
    metrics = dict(content.metric_records)
    configs = dict(content.config_records)
    secagg = plan.federation.secure_aggregation
    if message_type == "get_properties":  # the SecAgg+ example-count probe: one count, nothing else
        if arrays or metrics or set(configs) != {"getpropertiesres.properties", "getpropertiesres.status"}:
            raise ReplyRefused(f"properties reply carries records {sorted([*arrays, *metrics, *configs])}")
        if set(configs["getpropertiesres.properties"]) != {"num_examples"}:
            raise ReplyRefused(f"properties reply reports {sorted(configs['getpropertiesres.properties'])}; "
                               "only num_examples may leave a partner")
        check_count(configs["getpropertiesres.properties"]["num_examples"], plan)
        return
    prefix = "evaluateres" if message_type.startswith("evaluate") else "fitres"
    is_result = f"{prefix}.num_examples" in metrics
    expect_configs = {SECAGG_CONFIGS} if secagg and prefix == "fitres" else set()
    if is_result:
        expect_configs |= {f"{prefix}.metrics", f"{prefix}.status"}
        expect_metrics = {f"{prefix}.num_examples"} | ({f"{prefix}.loss"} if prefix == "evaluateres" else set())
        expect_arrays = {"fitres.parameters"} if prefix == "fitres" else set()
    else:  # a SecAgg+ protocol step (keys, shares): only the protocol's own config record
        if not secagg:
            raise ReplyRefused("reply carries no example count")
        expect_metrics, expect_arrays = set(), set()
    for kind, got, want in (("array", arrays, expect_arrays), ("metric", metrics, expect_metrics),
                            ("config", configs, expect_configs)):
        if set(got) != want:
            extra, missing = sorted(set(got) - want), sorted(want - set(got))
            raise ReplyRefused(f"unexpected {kind} records {extra}" if extra else f"missing {kind} records {missing}")
    if not is_result:
        return
    status = configs[f"{prefix}.status"]
    if set(status) != {"code", "message"} or not isinstance(status["message"], str) or len(status["message"]) > 64:
        raise ReplyRefused("status record holds other keys or a long message (only a code and a short message "
                           "may leave a partner)")
    if set(metrics[f"{prefix}.num_examples"]) != {"num_examples"}:
        raise ReplyRefused("example-count record holds other keys")
    # evaluate: validation rows, which a partner may lack; fit: training examples, the FedAvg weight.
    check_count(metrics[f"{prefix}.num_examples"]["num_examples"], plan, minimum=int(prefix == "fitres"))
    reported = set(configs[f"{prefix}.metrics"])
    if not reported <= ALLOWED_METRICS:
        raise ReplyRefused(f"reply reports {sorted(reported - ALLOWED_METRICS)}; only {sorted(ALLOWED_METRICS)} "
                           "may leave a partner (per-task metrics stay local)")
    if prefix == "evaluateres":
        if set(metrics["evaluateres.loss"]) != {"loss"}:
            raise ReplyRefused("loss record holds other keys")
        check_loss(metrics["evaluateres.loss"]["loss"])
        return
    if "loss" not in reported:
        raise ReplyRefused("reply reports no loss")
    check_loss(configs["fitres.metrics"]["loss"])
    if REFERENCE_KEY in reported:
        try:
            check_hash_format(configs["fitres.metrics"][REFERENCE_KEY])
        except AdmissionRefused as exc:
            raise ReplyRefused(str(exc)) from None
    record = arrays["fitres.parameters"]
    if secagg:
        if len(record) != 0:
            raise ReplyRefused("plain trunk arrays in a secure-aggregation round")
        masked = _decode(list(configs[SECAGG_CONFIGS].get("masked_params", [])))
        if masked:  # stage 2: [weight factor] + the masked trunk
            check_trunk(masked[1:], plan, dtypes={a.dtype for a in masked[1:]})
            if tuple(masked[0].shape) != (1,):
                raise ReplyRefused("masked vector does not start with the weight factor")
        return
    check_trunk(_decode([record[k].data for k in record]), plan)


def reported_reference(content: RecordDict) -> object:
    """The reference hash a trunk reply reports (None when it reports none or is no trunk reply)."""
    metrics = content.config_records.get("fitres.metrics")
    return None if metrics is None else metrics.get(REFERENCE_KEY)


def reported_examples(content: RecordDict) -> object:
    """The training-example count a trunk reply (or the SecAgg+ count probe) reports; None if neither."""
    if "fitres.num_examples" in content.metric_records:
        return content.metric_records["fitres.num_examples"].get("num_examples")
    props = content.config_records.get("getpropertiesres.properties")
    return None if props is None else props.get("num_examples")


def refuse_invalid(messages: Iterable[Message], plan: Plan, on_refused: Callable[[int, str], None],
                   admission: Admission | None = None) -> list[Message]:
    """Replace each reply that fails `check_reply` (or admission) by an error reply, so the workflow counts it
    as failed and never reads it."""
    from flwr.app import Error

    messages = list(messages)

    def is_trunk_reply(msg: Message) -> bool:
        return (msg.has_content() and msg.metadata.message_type.startswith("train")
                and "fitres.num_examples" in msg.content.metric_records)

    if admission is not None:
        admission.settle([(m.metadata.src_node_id, reported_reference(m.content)) for m in messages
                          if is_trunk_reply(m)])
    out = []
    for msg in messages:
        if msg.has_content():
            try:
                check_reply(msg.content, plan, msg.metadata.message_type)
                if admission is not None and is_trunk_reply(msg):
                    try:
                        admission.check(reported_reference(msg.content))
                        admission.check_examples(msg.metadata.src_node_id, reported_examples(msg.content))
                    except AdmissionRefused as exc:
                        raise ReplyRefused(str(exc)) from None
                elif admission is not None and msg.metadata.message_type == "get_properties":
                    try:
                        admission.check_examples(msg.metadata.src_node_id, reported_examples(msg.content))
                    except AdmissionRefused as exc:
                        raise ReplyRefused(str(exc)) from None
            except ReplyRefused as exc:
                node = msg.metadata.src_node_id
                on_refused(node, str(exc))
                msg = Message(metadata=msg.metadata, error=Error(code=0, reason=f"refused by consortium: {exc}"))
        out.append(msg)
    return out


class TrunkFedAvg(FedAvg):
    """Legacy FedAvg subclass: trunk-only, example-weighted, checked, with per-round callbacks.

    `first_round` lets a resumed run number its rounds on from the checkpoint (Flower counts from 1).
    `on_round(result)` runs after each aggregation (checkpoint, ledger, status).
    """

    def __init__(self, plan: Plan, initial_trunk: dict[str, np.ndarray], *, total_rounds: int,
                 first_round: int = 1, on_round: Callable[[RoundResult], None] | None = None,
                 on_final: Callable[[float | None, int], None] | None = None, seed: int | None = None,
                 admission: Admission | None = None, server_optimizer: ServerAdam | None = None) -> None:
        n = plan.federation.min_partners
        super().__init__(
            fraction_fit=1.0, fraction_evaluate=1.0, min_fit_clients=n, min_evaluate_clients=n,
            min_available_clients=n, accept_failures=True,
            initial_parameters=arrays_to_parameters(to_list(plan, initial_trunk)),
        )
        self.plan = plan
        self.seed = int(plan.training.seed if seed is None else seed)
        self.total_rounds = int(total_rounds)
        self.offset = int(first_round) - 1
        self.on_round = on_round
        self.on_final = on_final
        self.refused: list[str] = []
        self.max_examples = 0
        self.sent: list[np.ndarray] = to_list(plan, initial_trunk)  # the trunk replies are measured against
        self.admission = admission
        #: `federation.server_optimizer = "adam"`: the trunk's Adam, stepped on the mean gradient each round.
        self.server_optimizer = server_optimizer
        #: Source of the DP noise: seeded by the operating system (noise a partner could recompute protects nothing).
        self.dp_rng = np.random.default_rng()

    def __repr__(self) -> str:
        return f"TrunkFedAvg(plan={self.plan.hash[:12]}, rounds={self.total_rounds})"

    def round_config(self, rnd: int, final: bool = False) -> dict[str, Scalar]:
        config: dict[str, Scalar] = {"plan_hash": self.plan.hash, "round": rnd, "rounds": self.total_rounds,
                                     "seed": round_seed(self.seed, rnd), "final": final}
        if self.admission is not None and self.admission.expected:  # so a refused partner learns why
            config[REFERENCE_KEY] = self.admission.expected
        return config

    def configure_fit(self, server_round: int, parameters: Parameters,
                      client_manager: ClientManager) -> list[tuple[ClientProxy, FitIns]]:
        rnd = server_round + self.offset
        self.sent = parameters_to_views(parameters)  # views of the round's trunk bytes, which Flower holds anyway
        wire = WIRE_DTYPES[self.plan.federation.wire_dtype]
        if any(a.dtype != wire for a in self.sent):  # float16 wire: cast; float32: the same bytes go out
            parameters = arrays_to_parameters([a.astype(wire) for a in self.sent])
        fit_ins = FitIns(parameters, self.round_config(rnd))
        clients = client_manager.sample(num_clients=max(client_manager.num_available(), self.min_fit_clients),
                                        min_num_clients=self.min_available_clients)
        return [(c, fit_ins) for c in clients]

    def configure_evaluate(self, server_round: int, parameters: Parameters,
                           client_manager: ClientManager) -> list[tuple[ClientProxy, EvaluateIns]]:
        # One evaluate message, after the last round: partners keep their pick and evaluate locally.
        rnd = server_round + self.offset
        if rnd != self.total_rounds:
            return []
        ins = EvaluateIns(parameters, self.round_config(rnd, final=True))
        clients = client_manager.sample(num_clients=max(client_manager.num_available(), self.min_evaluate_clients),
                                        min_num_clients=self.min_available_clients)
        return [(c, ins) for c in clients]

    def aggregate_fit(self, server_round: int, results: list[tuple[ClientProxy, FitRes]],
                      failures: list[tuple[ClientProxy, FitRes] | BaseException]
                      ) -> tuple[Parameters | None, dict[str, Scalar]]:
        rnd = server_round + self.offset
        updates: list[PartnerUpdate] = []
        # Replies already refused at the message level arrive here as failures; count them once.
        failed = [f"round {rnd}: {f}" for f in failures if "refused by consortium" not in str(f)]
        refused: list[str] = []
        secagg = self.plan.federation.secure_aggregation
        for proxy, res in results:
            try:
                if set(res.metrics) - ALLOWED_METRICS:
                    raise ReplyRefused(f"reports {sorted(set(res.metrics) - ALLOWED_METRICS)}")
                examples = check_count(res.num_examples, self.plan)
                loss = check_loss(res.metrics.get("loss"))
                arrays = None
                if not secagg:
                    arrays = _decode(res.parameters.tensors)  # views of the reply's bytes, not copies
                    check_trunk(arrays, self.plan)
                    check_update(arrays, self.sent, self.plan)
                    check_clipped(arrays, self.sent, self.plan)
                updates.append(PartnerUpdate(int(proxy.node_id), examples, loss, arrays))
            except ReplyRefused as exc:
                refused.append(f"round {rnd}: node {proxy.node_id}: {exc}")
        self.refused.extend(refused)
        for r in refused:
            log.warning("refused %s", r)
        for f in failed:
            log.warning("partner failure %s", f)
        if len(updates) < self.min_fit_clients:
            problems = [*(f"round {rnd}: {f}" for f in failures), *refused]
            why = f"; {'; '.join(map(str, problems))}" if problems else ""
            raise RoundFailed(f"round {rnd}: {len(updates)} valid replies, the plan needs {self.min_fit_clients}{why}")
        if secagg:
            # Every result carries the same securely summed and weighted trunk.
            summed = parameters_to_ndarrays(results[0][1].parameters)
            check_trunk(summed, self.plan, dtypes={a.dtype for a in summed})
            averaged = [a.astype(np.float32) for a in summed]
        else:
            averaged = weighted_average([u.arrays for u in updates], [u.examples for u in updates])  # type: ignore[misc]
            # Averaged: the partners' trunks go now, before the round is checkpointed and encoded, so those
            # copies never coexist with N replies (Flower's workflow reads no reply payload after this call).
            updates = [replace(u, arrays=None) for u in updates]
            for _, res in results:
                res.parameters.tensors.clear()
        dp_epsilon = dp_std = None
        if self.plan.federation.dp_enabled:  # noise on the mean, before any server optimizer (post-processing)
            averaged, dp_std, dp_epsilon = self.privatize(averaged, updates, rnd)
        if self.server_optimizer is not None:  # after the noise too: post-processing
            self.server_optimizer.step(self.sent, averaged)
        else:
            server_step(self.sent, averaged, float(self.plan.federation.server_lr))
        self.max_examples = max([self.max_examples] + [u.examples for u in updates])
        updates.sort(key=lambda u: u.node_id)
        if self.on_round is not None:
            self.on_round(RoundResult(rnd, to_dict(self.plan, averaged), updates, refused, failed, dp_epsilon, dp_std))
        total = sum(u.examples for u in updates)
        loss = sum(u.examples * u.loss for u in updates) / total
        return arrays_to_parameters(averaged), {"loss": float(loss), "partners": len(updates)}

    def privatize(self, averaged: list[np.ndarray], updates: list[PartnerUpdate], rnd: int
                  ) -> tuple[list[np.ndarray], float, float]:
        """(mean + Gaussian noise, its std, cumulative ε after round `rnd`): central DP on clipped updates."""
        from consortium.privacy import add_noise, epsilon, noise_std

        fed = self.plan.federation
        std = noise_std(fed, [u.examples for u in updates])
        eps = epsilon(fed.dp_noise_multiplier, rnd, fed.dp_delta)
        log.info("round %d: DP noise std %.4g (σ %.3g, C %.3g); ε = %.4g at δ = %g", rnd, std,
                 fed.dp_noise_multiplier, fed.dp_clipping_norm, eps, fed.dp_delta)
        return add_noise(averaged, std, self.dp_rng), std, eps

    def aggregate_evaluate(self, server_round: int, results: list[tuple[ClientProxy, EvaluateRes]],
                           failures: list[tuple[ClientProxy, EvaluateRes] | BaseException]
                           ) -> tuple[float | None, dict[str, Scalar]]:
        loss = None
        valid = []
        for proxy, res in results:  # already checked on the wire; checked again for direct callers
            try:
                valid.append((check_count(res.num_examples, self.plan, minimum=0), check_loss(res.loss)))
            except ReplyRefused as exc:
                self.refused.append(f"final evaluation: node {proxy.node_id}: {exc}")
        if valid:
            total = sum(n for n, _ in valid) or 1
            loss = float(sum(n * x for n, x in valid) / total)
        if self.on_final is not None:
            self.on_final(loss, len(valid))
        return loss, {}
