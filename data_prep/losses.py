"""Data-loss warnings: a plan setting that drops a large share of an assay's records says so on the console.

A credibility range or a quorum that does not fit a partner's data removes records silently apart from
`rejected.parquet` (one consortium lost 21 % of its records to a range its values ran above). Each
setting that drops more than `WARN_SHARE` of some assay's records gets one line naming the setting, how
many assays it hit and how hard, so the partner can fix the plan instead of training on what is left.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable

WARN_SHARE = 0.05

_HINTS = {
    "credibility": "the values lie outside the plan's range: widen it if they are real, or check their unit",
    "quorum": "no task of these assays passed the quorum, so all their records are unused "
              "(see dropped_tasks in manifest.json)",
}


class AssayLosses:
    """Records dropped per (plan setting, assay), against each assay's T1 record count."""

    def __init__(self, records_per_assay: dict[str, int]) -> None:
        self.totals = records_per_assay
        self.dropped: dict[str, Counter[str]] = defaultdict(Counter)
        self.kind: dict[str, str] = {}

    def add(self, setting: str, kind: str, assay_ids: Iterable[str]) -> None:
        """Count one dropped record per assay id under `setting` (e.g. 'tasks.credibility.OTHER')."""
        self.dropped[setting].update(assay_ids)
        self.kind[setting] = kind

    def warnings(self, share: float = WARN_SHARE) -> list[str]:
        """One line per setting that dropped more than `share` of at least one assay's records."""
        lines = []
        for setting, per_assay in self.dropped.items():
            shares = {a: n / self.totals[a] for a, n in per_assay.items() if self.totals.get(a)}
            hit = {a: s for a, s in shares.items() if s > share}
            if not hit:
                continue
            records = sum(per_assay[a] for a in hit)
            lines.append(
                f"{setting} dropped more than {share:.0%} of the records of {len(hit)} assay(s) "
                f"(up to {max(hit.values()):.0%}; {records} records); {_HINTS[self.kind[setting]]}"
            )
        return lines
