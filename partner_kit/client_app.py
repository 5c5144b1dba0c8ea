"""The partner's Flower ClientApp: a NumPyClient around `FederatedPartner`, SecAgg+ when the plan says so.

The SuperNode's `--node-config` names the plan, prepared directory and model directory (see
`partner_kit.join`); the embedded simulation passes the same keys. The app object is built at import, before
any plan is known, so the SecAgg+ mod is switched per message by the partner's own plan: a partner never
sends a plain trunk when its plan asks for secure aggregation, and refuses a protocol its plan does not name.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Context, Message
from flwr.client import ClientApp, NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import Scalar

from consortium.admission import REFERENCE_KEY
from consortium.plan import Plan
from partner_kit.federated import FederatedPartner, PartnerConfig, PlanMismatch, get_partner
from partner_kit.wire_audit import audit_mod

SECAGG_CONFIGS = "secaggplus_configs"


class PartnerClient(NumPyClient):
    """fit = one federated round; evaluate = the final message (selection, local model, local metrics)."""

    def __init__(self, partner: FederatedPartner) -> None:
        self.partner = partner

    def get_parameters(self, config: dict[str, Scalar]) -> list[np.ndarray]:
        raise PlanMismatch("the consortium sends the starting trunk; a partner never provides one")

    def get_properties(self, config: dict[str, Scalar]) -> dict[str, Scalar]:
        """Only the training example count (SecAgg+ scales its quantization to it)."""
        return {"num_examples": self.partner.n_train(config)}

    def fit(self, parameters: list[np.ndarray], config: dict[str, Scalar]
            ) -> tuple[list[np.ndarray], int, dict[str, Scalar]]:
        own = self.partner.cfg.reference_hash
        check_reference(own, config.get(REFERENCE_KEY), self.partner.cfg.name)  # before any training
        arrays, n_train, loss = self.partner.fit_round(parameters, config)
        arrays = clip_for_privacy(arrays, parameters, self.partner.plan)
        check_clipping_range(arrays, self.partner.plan)
        check_wire_range(arrays, self.partner.plan)
        metrics: dict[str, Scalar] = {"loss": loss}
        if own:
            metrics[REFERENCE_KEY] = own  # proves plan + key + kit agree; reveals neither
        return arrays, n_train, metrics

    def evaluate(self, parameters: list[np.ndarray], config: dict[str, Scalar]
                 ) -> tuple[float, int, dict[str, Scalar]]:
        loss, n = self.partner.finish(parameters, config)
        return float(loss), n, {}


def clip_for_privacy(arrays: list[np.ndarray], received: list[np.ndarray], plan: Plan) -> list[np.ndarray]:
    """Under the plan's differential privacy, clip this partner's update to `federation.dp_clipping_norm`.

    Done here, before SecAgg+ masks the trunk, because the server never holds one update to clip; the bound
    comes from this partner's own plan, never from the server's round config.
    """
    fed = plan.federation
    if not fed.dp_enabled:
        return arrays
    from consortium.privacy import clip_update

    return clip_update(arrays, received, fed.dp_clipping_norm)


def check_clipping_range(arrays: list[np.ndarray], plan: Plan) -> None:
    """Under SecAgg+, refuse to send a trunk Flower would clip silently (values beyond the plan's range)."""
    fed = plan.federation
    if not fed.secure_aggregation or not arrays:
        return
    largest = max(float(np.max(np.abs(a))) for a in arrays)
    if not largest <= fed.secagg_clipping_range:
        raise PlanMismatch(f"your trunk holds values up to {largest:.4g}, beyond federation.secagg_clipping_range "
                           f"= {fed.secagg_clipping_range:g}: secure aggregation would clip them silently and "
                           "corrupt the average; the consortium must raise the range in the plan")


def check_wire_range(arrays: list[np.ndarray], plan: Plan) -> None:
    """With a float16 wire, refuse to send a trunk whose values left float16's range (they became ±inf)."""
    if plan.federation.wire_dtype != "float16":
        return
    bad = sum(int(np.count_nonzero(~np.isfinite(a))) for a in arrays)
    if bad:
        top = float(np.finfo(np.float16).max)
        raise PlanMismatch(f"your trunk holds {bad} values beyond float16's range (±{top:g}), which "
                           "federation.wire_dtype = \"float16\" cannot carry; nothing was sent; the "
                           "consortium must switch the plan to \"float32\"")


def check_reference(own: str, consortium: object, name: str) -> None:
    """Stop with the reason when the consortium's reference hash (sent once known) is not this partner's."""
    if own and isinstance(consortium, str) and consortium and consortium != own:
        raise PlanMismatch(
            f"{name}: refused by the consortium: its reference hash is {consortium[:16]}… but yours is {own[:16]}…; "
            "your secret key, plan or kit differs from the other partners' (compare `data-prep reference-hash`), "
            "so your updates are not averaged")


def client_fn(context: Context):  # -> flwr Client
    return PartnerClient(get_partner(PartnerConfig.from_node_config(context.node_config))).to_client()


def plan_secagg_mod(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
    """Route train messages through Flower's `secaggplus_mod` exactly when this partner's plan says so."""
    cfg = PartnerConfig.from_node_config(ctxt.node_config)
    # Only the plan here: SecAgg+ key and share steps must not pay for loading data and building a model.
    wants = Plan.load(cfg.plan).federation.secure_aggregation
    carries = msg.has_content() and SECAGG_CONFIGS in msg.content.config_records
    if msg.metadata.message_type.startswith("train") and carries != wants:
        raise PlanMismatch(
            "the consortium " + ("uses" if carries else "does not use") + " secure aggregation but your plan "
            f"{cfg.plan} says secure_aggregation = {str(wants).lower()}; get the consortium's plan.toml"
        )
    return secaggplus_mod(msg, ctxt, call_next) if wants else call_next(msg, ctxt)


#: The deployed ClientApp (`consortium/flower_app/pyproject.toml` points here).
app = ClientApp(client_fn=client_fn, mods=[audit_mod, plan_secagg_mod])  # audit outermost: sees what leaves
