"""The report's figures, drawn with matplotlib's Agg backend and returned as base64 PNG (embedded, no files).

Each function takes plain per-task records (dicts as in report.json), so every plotted point is a number the
report's JSON also holds.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

import numpy as np

COLORS = {"single": "#6b6b6b", "federated": "#1f6fb4", "pooled": "#d97a1a"}
LABELS = {"single": "single partner", "federated": "federated", "pooled": "pooled (privacy-free bound)"}
METRIC_LABELS = {"auc_pr": "AUC-PR", "auc_roc": "AUC-ROC", "auc_pr_cal": "calibrated AUC-PR", "r2": "R²",
                 "pearson_r": "Pearson r"}
SELECTION_LABELS = {**METRIC_LABELS, "auc_pr+r2": "mean of AUC-PR and R² (task-weighted)",
                    "valid_loss": "− validation loss"}


def _pyplot():  # noqa: ANN202 - matplotlib's module
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.spines.top": False, "axes.spines.right": False,
                         "axes.grid": True, "grid.alpha": 0.25, "figure.dpi": 110})
    return plt


def to_png(fig: Any) -> str:
    """Base64 PNG of a figure (then closed, so long reports do not pile up figures)."""
    plt = _pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _grid(n: int, width: float = 3.6, height: float = 3.4, max_cols: int = 4) -> tuple[Any, np.ndarray]:
    plt = _pyplot()
    cols = min(n, max_cols)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    return fig, axes.ravel()


def scatter_vs_single(per_task: dict[str, list[dict[str, Any]]], metric: str, variants: Sequence[str]) -> str | None:
    """Per partner: each task's single-partner metric (x) against the other variants' (y), with y = x."""
    partners = [p for p, rows in per_task.items() if any(r.get(f"single_{metric}") is not None for r in rows)]
    if not partners:
        return None
    fig, axes = _grid(len(partners))
    for ax, partner in zip(axes, partners, strict=False):
        rows = [r for r in per_task[partner] if r.get(f"single_{metric}") is not None]
        x = np.array([r[f"single_{metric}"] for r in rows], float)
        values = [x]
        for v in variants:
            if v == "single":
                continue
            y = np.array([np.nan if r.get(f"{v}_{metric}") is None else r[f"{v}_{metric}"] for r in rows], float)
            values.append(y)
            ax.scatter(x, y, s=22, alpha=0.8, color=COLORS[v], marker="o" if v == "federated" else "^",
                       label=LABELS[v], edgecolor="white", linewidth=0.4)
        every = np.concatenate(values)
        every = every[np.isfinite(every)]
        pad = 0.05 * max(float(every.max() - every.min()), 0.1)
        lo, hi = float(every.min()) - pad, float(every.max()) + pad
        if metric != "r2":
            lo, hi = max(lo, 0.0), min(hi, 1.0)
        ax.plot([lo, hi], [lo, hi], color="black", linewidth=0.8, linestyle="--", label="no change (y = x)")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_aspect("equal")
        ax.set_title(f"partner {partner} ({len(rows)} tasks)")
        ax.set_xlabel(f"single-partner {METRIC_LABELS[metric]}")
        ax.set_ylabel(f"{METRIC_LABELS[metric]} of the other model")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=len(labels), frameon=False)
    return to_png(fig)


def cdf_deltas(per_task: dict[str, list[dict[str, Any]]], metric: str, variants: Sequence[str]) -> str | None:
    """Empirical distribution of per-task deltas against the single model, per partner and for all tasks."""
    plt = _pyplot()
    others = [v for v in variants if v != "single"]
    series = []
    for partner, rows in per_task.items():
        for v in others:
            d = np.array([r[f"{v}_{metric}"] - r[f"single_{metric}"] for r in rows
                          if r.get(f"{v}_{metric}") is not None and r.get(f"single_{metric}") is not None])
            if d.size:
                series.append((partner, v, d))
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4.0))
    partner_names = list(dict.fromkeys(p for p, _, _ in series))
    widths = dict(zip(partner_names, np.linspace(1.0, 1.0, len(partner_names)), strict=True))
    shades = dict(zip(partner_names, np.linspace(0.35, 0.85, max(len(partner_names), 1)), strict=True))
    for partner, v, d in series:
        d = np.sort(d)
        y = np.arange(1, d.size + 1) / d.size
        base = np.array(plt.matplotlib.colors.to_rgb(COLORS[v]))
        color = base * shades[partner] + (1 - shades[partner]) * 0.85
        ax.step(d, y, where="post", color=color, linewidth=widths[partner], linestyle="-" if v == "federated" else "--",
                label=f"{partner}: {LABELS[v]} − single" if len(partner_names) <= 3 else None)
    for v in others:
        d = np.concatenate([s[2] for s in series if s[1] == v])
        if d.size:
            d = np.sort(d)
            ax.step(d, np.arange(1, d.size + 1) / d.size, where="post", color=COLORS[v], linewidth=2.4,
                    linestyle="-" if v == "federated" else "--", label=f"all partners: {LABELS[v]} − single")
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel(f"per-task Δ {METRIC_LABELS[metric]} (other model − single-partner model)")
    ax.set_ylabel("share of tasks with Δ ≤ x")
    ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside, not over, the data
    return to_png(fig)


def delta_by_assay_type(per_task: dict[str, list[dict[str, Any]]], metric: str,
                        variant: str = "federated") -> str | None:
    """Per-task Δ (variant − single) grouped by assay type, all partners together: box, and every task a dot."""
    plt = _pyplot()
    groups: dict[str, list[float]] = {}
    for rows in per_task.values():
        for r in rows:
            a, b = r.get(f"{variant}_{metric}"), r.get(f"single_{metric}")
            if a is not None and b is not None:
                groups.setdefault(str(r.get("assay_type") or "unknown"), []).append(a - b)
    if not groups:
        return None
    names = sorted(groups)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.4 * len(names) + 2), 3.6))
    data = [np.array(groups[n]) for n in names]
    ax.boxplot(data, showfliers=False, widths=0.5, medianprops={"color": COLORS[variant]})
    rng = np.random.default_rng(0)
    for i, d in enumerate(data, start=1):
        ax.scatter(i + rng.uniform(-0.12, 0.12, d.size), d, s=12, alpha=0.7, color=COLORS[variant], zorder=3)
    ax.set_xticks(range(1, len(names) + 1), [f"{n}\n({len(groups[n])} tasks)" for n in names])
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylabel(f"Δ {METRIC_LABELS[metric]} ({variant} − single)")
    return to_png(fig)


def convergence(histories: dict[str, list[dict[str, Any]]]) -> str | None:
    """Validation score per epoch (single, pooled) or round (federated), per partner; the kept one marked."""
    partners = [p for p, h in histories.items() if h]
    if not partners:
        return None
    fig, axes = _grid(len(partners), width=4.4, height=3.2, max_cols=3)
    for ax, partner in zip(axes, partners, strict=False):
        shown = set()
        metrics = set()
        for h in histories[partner]:
            x = np.array([p[0] for p in h["points"]], float)
            y = np.array([np.nan if p[1] is None else p[1] for p in h["points"]], float)
            if not x.size:
                continue
            v = h["variant"]
            label = None if v in shown else f"{LABELS[v]} (per {h['axis']})"
            shown.add(v)
            name = h.get("selection_metric") or "score"
            metrics.add(SELECTION_LABELS.get(name, name))
            ax.plot(x, y, color=COLORS[v], linewidth=1.2, alpha=0.85, label=label, marker=".", markersize=3)
            if h.get("selected") is not None:
                sel = np.flatnonzero(x == h["selected"])
                if sel.size:
                    ax.scatter(x[sel], y[sel], s=45, facecolor="none", edgecolor=COLORS[v], linewidth=1.4, zorder=4)
        ax.set_title(f"partner {partner}")
        ax.set_xlabel("epoch / round")
        ax.set_ylabel("validation " + " / ".join(sorted(metrics)))
    axes[0].legend(fontsize=7, frameon=False)
    return to_png(fig)
