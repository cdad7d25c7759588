"""The testbed bench's report: a Markdown table and a figure of measured latency."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from tierflow.measure.testbed_bench import ConfigResult


def _point(result: ConfigResult) -> str:
    if not result.sweep:
        return "-"
    return ", ".join(f"{k}={v:g}" for k, v in result.sweep.items())


def tiers_label(result: ConfigResult) -> str:
    """Tiers in use, each with its compressed variant and the codecs it sends with.

    >>> r = ConfigResult("p", None, 1, 1, 1, {}, 1, 1, 1, tiers_used=("cam", "edge"),
    ...                  variants={"edge": "int8-static"}, link_codecs={"cam": {"x": "fp16"}})
    >>> tiers_label(r)
    'cam [sends x as fp16] + edge (int8-static)'
    """
    parts = []
    for tier in result.tiers_used:
        text = tier
        if tier in result.variants:
            text += f" ({result.variants[tier]})"
        codecs = result.link_codecs.get(tier, {})
        if codecs:
            sent = ", ".join(f"{value} as {spec}" for value, spec in codecs.items())
            text += f" [sends {sent}]"
        parts.append(text)
    separator = " + " if result.variants or result.link_codecs else "+"
    return separator.join(parts)


def markdown_report(model: str, topology: str, results: Sequence[ConfigResult]) -> str:
    lines = [
        f"# tierflow bench: {model} on {topology}",
        "",
        "Measured on the local testbed (tier processes under CPU quotas, emulated links).",
        "",
        "| point | config | tiers | p50 ms | p95 ms | throughput rps | bytes/request per link "
        "| predicted ms | measured / predicted | accuracy |",
        "|---|---|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in results:
        links = ", ".join(f"{k}: {v / 1e3:.1f} kB" for k, v in r.bytes_per_link.items())
        same = f" (= {r.same_deployment_as})" if r.same_deployment_as else ""
        accuracy = "-" if r.accuracy is None else f"{100 * r.accuracy:.1f}%"
        lines.append(
            f"| {_point(r)} | {r.name}{same} | {tiers_label(r)} | {r.p50_ms:.1f} | "
            f"{r.p95_ms:.1f} | {r.throughput_rps:.1f} | {links} | {r.predicted_ms:.1f} | "
            f"{r.measured_over_predicted:.2f} | {accuracy} |"
        )
    lines += ["", speedup_summary(results), ""]
    return "\n".join(lines)


COMPRESSED_PLANS = ("plan+codecs", "plan+compressed")
PLANS = ("plan", *COMPRESSED_PLANS)


def speedup_summary(results: Sequence[ConfigResult]) -> str:
    """Measured speed-up of the plan over the best baseline at each point, and of the
    compressed plan over the uncompressed one, when it was measured."""
    parts, compressed = [], []
    for point in dict.fromkeys(_point(r) for r in results):
        here = [r for r in results if _point(r) == point]
        plan = next(r for r in here if r.name == "plan")
        others = [r for r in here if r.name not in PLANS]
        if others:  # baselines may be left out (the demo's compression part)
            best = min(others, key=lambda r: r.p50_ms)
            parts.append(f"{point}: {best.p50_ms / plan.p50_ms:.2f}× vs {best.name}")
        smaller = next((r for r in here if r.name in COMPRESSED_PLANS), None)
        if smaller is not None:
            compressed.append(f"{point}: {plan.p50_ms / smaller.p50_ms:.2f}×")
            if smaller.accuracy is not None and plan.accuracy is not None:
                compressed[-1] += (
                    f" (accuracy {100 * plan.accuracy:.1f}% → {100 * smaller.accuracy:.1f}%)"
                )
    lines = []
    if parts:
        lines.append("Plan speed-up over the best baseline (measured p50): " + "; ".join(parts))
    if compressed:
        lines.append(
            "Compressed plan against the uncompressed plan (measured p50): " + "; ".join(compressed)
        )
    return "\n".join(lines)


def plot_measured(results: Sequence[ConfigResult], path: Path, *, title: str) -> Path | None:
    """Measured (solid) and predicted (dotted) latency against the swept value."""
    swept = [r for r in results if r.sweep]
    if not swept:
        return None
    axis = next(iter(swept[0].sweep or {}))
    fig, ax = plt.subplots(figsize=(8, 5))
    for name in dict.fromkeys(r.name for r in swept):
        rows = sorted((r for r in swept if r.name == name), key=lambda r: (r.sweep or {})[axis])
        xs = [(r.sweep or {})[axis] for r in rows]
        (line,) = ax.plot(xs, [r.p50_ms for r in rows], "o-", lw=2.5 if name == "plan" else 1.5,
                          label=f"{name} measured")  # fmt: skip
        ax.plot(xs, [r.predicted_ms for r in rows], ":", color=line.get_color(), alpha=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(axis)
    ax.set_ylabel("latency p50 (ms); dotted: predicted")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
