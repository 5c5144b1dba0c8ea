"""Key and kit agreement: a partner is averaged in only if its reference hash equals the consortium's.

Every partner reports, with each trunk reply, the `data-prep reference-hash` of (plan, secret key, kit): the
SHA-256 of the kit's prepared reference set, which reveals neither the key nor any partner data. Equal hashes
mean equal fingerprint columns and folds. The consortium's hash is the plan's `reference_hash` slot when
`consortium init` (or the operator) filled it in, otherwise the hash most replies of the first checked batch
carry (the first reply's on a tie), kept in `admission.json` so a resumed run holds partners to the same one.
A reply with another hash is refused before any workflow reads it; the round goes on without it.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

from data_prep.atomic import write_text_atomic

ADMISSION_NAME = "admission.json"
ADMITTED_DIR = "admitted"  # run/admitted/NAME.pub, NAME.node-id, NAME.max-examples (`consortium admit`)
MAX_EXAMPLES_SUFFIX = ".max-examples"
REFERENCE_KEY = "reference_hash"  # the key in a fit reply's metrics (and in the round config, once known)
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class AdmissionRefused(ValueError):
    """The reply's reference hash is missing, malformed or not the consortium's."""


def check_hash_format(value: object) -> str:
    if not isinstance(value, str) or not _HEX64.match(value):
        shown = type(value).__name__ if not isinstance(value, str) else f"{len(value)} characters"
        raise AdmissionRefused(f"reference_hash must be 64 lowercase hex characters (a SHA-256), got {shown}")
    return value


class Admission:
    """Decides, per reply, whether its reference hash admits the partner; remembers the consortium's hash."""

    def __init__(self, run_dir: Path | None, plan_reference: str = "", *, required: bool = True) -> None:
        self.path = Path(run_dir) / ADMISSION_NAME if run_dir is not None else None
        self.admitted = Path(run_dir) / ADMITTED_DIR if run_dir is not None else None
        self.required = required
        saved = self._load()
        self.expected = plan_reference or saved.get("reference_hash", "")
        self.source = "plan" if plan_reference else saved.get("source", "")
        if plan_reference and saved.get("reference_hash") and saved["reference_hash"] != plan_reference:
            raise AdmissionRefused(f"{self.path} holds reference hash {saved['reference_hash'][:16]}… but the plan's "
                                   f"reference_hash is {plan_reference[:16]}…; this run was admitted under another "
                                   "plan slot")

    def _load(self) -> dict[str, Any]:
        if self.path is None or not self.path.is_file():
            return {}
        return json.loads(self.path.read_text())

    def _save(self) -> None:
        if self.path is not None:
            write_text_atomic(self.path, json.dumps({"reference_hash": self.expected, "source": self.source},
                                                    indent=2) + "\n")

    def settle(self, reported: list[tuple[int, object]]) -> None:
        """Fix the consortium's hash from a batch of (node id, reported hash) if no plan slot set it."""
        if self.expected:
            return
        valid = [(n, h) for n, h in reported if isinstance(h, str) and _HEX64.match(h)]
        if not valid:
            return
        counts = Counter(h for _, h in valid)
        top = max(counts.values())
        winner = next(h for _, h in valid if counts[h] == top)
        node = next(n for n, h in valid if h == winner)
        self.expected, self.source = winner, f"first admitted partner (node {node}, {top} of {len(valid)} agreed)"
        self._save()

    def example_caps(self) -> dict[int, tuple[str, int]]:
        """node id -> (partner name, training-example count registered at admission), read afresh each time
        (`consortium admit --max-examples` on a running consortium applies from its next reply)."""
        caps: dict[int, tuple[str, int]] = {}
        if self.admitted is None or not self.admitted.is_dir():
            return caps
        for cap_file in self.admitted.glob(f"*{MAX_EXAMPLES_SUFFIX}"):
            name = cap_file.name.removesuffix(MAX_EXAMPLES_SUFFIX)
            node_file = self.admitted / f"{name}.node-id"
            try:
                caps[int(node_file.read_text())] = (name, int(cap_file.read_text()))
            except (OSError, ValueError):  # not registered yet (no node id), or a half-written file
                continue
        return caps

    def check_examples(self, node_id: int, count: object) -> None:
        """Refuse a reply claiming more training examples than its partner registered when it was admitted."""
        cap = self.example_caps().get(int(node_id))
        if cap is not None and isinstance(count, int) and count > cap[1]:
            raise AdmissionRefused(f"partner {cap[0]} claims {count} training examples, more than the {cap[1]} "
                                   "registered at admission (`consortium admit --max-examples`); not averaged")

    def check(self, value: object) -> None:
        """Raise AdmissionRefused unless `value` (None when the reply carries no hash) admits the partner."""
        if value is None:
            if self.required:
                raise AdmissionRefused("reply carries no reference_hash; join with `partner-kit join --key ...` so "
                                       "the consortium can check your key and kit")
            return
        check_hash_format(value)
        if self.expected and value != self.expected:
            raise AdmissionRefused(
                f"reference hash {value[:16]}… is not the consortium's {self.expected[:16]}…: this partner's secret "
                "key, plan or kit differs (its columns and folds would not match); not averaged")
