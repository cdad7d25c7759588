"""Figures: predicted latency against a swept parameter, plan versus baselines."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers and CI
import matplotlib.pyplot as plt

from tierflow.plan.sweep import SweepPoint, SweepSpec


def plot_sweep(spec: SweepSpec, points: Sequence[SweepPoint], path: str | Path) -> Path:
    """Write the figure every paper in this field shows: latency against bandwidth.

    Top: predicted end-to-end latency of the plan and each baseline (dashed where the
    baseline breaks a constraint). Bottom: the share of the model's compute each tier
    runs under the plan at each point, with the cut's upward bytes annotated: where the
    cuts fall.
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    values = [p.value for p in points]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 7), gridspec_kw={"height_ratios": [3, 2]})
    top.plot(
        values,
        [p.plan.predicted.latency_ms for p in points],
        "o-",
        lw=2.5,
        label="tierflow plan",
        zorder=5,
    )
    for name in points[0].plan.baselines:
        latencies = [p.plan.baselines[name].prediction.latency_ms for p in points]
        feasible = all(p.plan.baselines[name].prediction.feasible for p in points)
        top.plot(
            values,
            latencies,
            "--" if not feasible else "-",
            marker=".",
            label=name + ("" if feasible else " (infeasible)"),
        )
    top.set_ylabel("predicted latency (ms)")
    top.set_yscale("log")
    top.grid(True, which="both", alpha=0.3)
    top.legend(fontsize=8)
    top.set_title(f"{points[0].plan.model}: latency vs {spec.path}")

    tiers = points[0].plan.tiers
    bottom_level = [0.0] * len(points)
    for tier in tiers:
        shares = []
        for point in points:
            compute = point.plan.predicted.compute_ms
            total = sum(compute.values()) or 1.0
            shares.append(compute.get(tier, 0.0) / total)
        bottom.bar(range(len(points)), shares, bottom=bottom_level, label=tier)
        bottom_level = [a + b for a, b in zip(bottom_level, shares, strict=True)]
    for i, point in enumerate(points):
        sent = sum(c.bytes for c in point.plan.cuts)
        bottom.annotate(f"{sent / 1e3:.0f} kB", (i, 1.02), ha="center", fontsize=7)
    bottom.set_xticks(range(len(points)), [f"{v:g}" for v in values])
    bottom.set_ylabel("share of compute time")
    bottom.set_xlabel(spec.path)
    bottom.set_ylim(0, 1.12)
    bottom.legend(fontsize=8, loc="lower right")
    top.set_xscale("log" if min(values) > 0 else "linear")
    top.set_xlabel(spec.path)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
