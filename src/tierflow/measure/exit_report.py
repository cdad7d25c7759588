"""The early-exit bench's report: a Markdown table of accuracy, exits, latency and bytes."""

from __future__ import annotations

from collections.abc import Sequence

from tierflow.measure.exit_bench import ExitConfigResult
from tierflow.measure.exit_cpu import CpuExitResult


def _point(result: ExitConfigResult) -> str:
    if not result.sweep:
        return "-"
    return ", ".join(f"{k}={v:g}" for k, v in result.sweep.items())


def _rates(result: ExitConfigResult) -> str:
    return ", ".join(f"{name} {rate:.1%}" for name, rate in result.exit_rates.items())


def exit_markdown(
    model: str,
    topology: str,
    results: Sequence[ExitConfigResult],
    cpu: CpuExitResult | None = None,
) -> str:
    """Markdown: one row per deployment and point, then the headline figures."""
    lines = [
        f"# tierflow bench: early exits of {model} on {topology}",
        "",
        "Every held-out test input was sent once, in order, through the tier services on the",
        "local testbed (CPU quotas, emulated links); accuracy, exits and bytes are what the",
        "runtime returned and the links carried. `mean ms` is what the exit-aware planner",
        "predicts (an expectation over inputs).",
        "",
        "| point | config | exits | tiers | accuracy | answered at | mean ms | p50 ms | p95 ms "
        "| predicted ms | measured / predicted | bytes/request per link |",
        "|---|---|---|---|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        links = ", ".join(f"{k}: {v:.0f} B" for k, v in r.bytes_per_link.items())
        same = f" (= {r.same_deployment_as})" if r.same_deployment_as else ""
        lines.append(
            f"| {_point(r)} | {r.name}{same} | {', '.join(r.exits) or '-'} "
            f"| {'+'.join(r.tiers_used)} "
            f"| {r.accuracy:.2%} | {_rates(r)} | {r.mean_ms:.2f} | {r.p50_ms:.2f} "
            f"| {r.p95_ms:.2f} | {r.predicted_ms:.2f} | {r.measured_over_predicted:.2f} | {links} |"
        )
    lines += ["", *exit_summary(results), ""]
    if cpu is not None:
        lines += ["## On one CPU (BranchyNet's setting)", "", cpu_summary(cpu), ""]
    return "\n".join(lines)


def cpu_summary(cpu: CpuExitResult) -> str:
    rates = ", ".join(f"{name} {rate:.1%}" for name, rate in cpu.exit_rates.items())
    return (
        f"The tier's own work per input, in process ({cpu.threads} ONNX Runtime thread, "
        f"{cpu.samples} test inputs, the two variants taking turns): "
        f"{cpu.exit_mean_ms:.3f} ms with exits against {cpu.no_exit_mean_ms:.3f} ms without, "
        f"{cpu.speedup:.2f}× faster; accuracy {cpu.exit_accuracy:.2%} against "
        f"{cpu.no_exit_accuracy:.2%} ({cpu.accuracy_drop_pp:+.2f} pp drop); answered at {rates}."
    )


def exit_summary(results: Sequence[ExitConfigResult]) -> list[str]:
    """Headline lines per point: speed-up and accuracy change of exits, bytes saved."""
    lines = []
    for point in dict.fromkeys(_point(r) for r in results):
        here = {r.name: r for r in results if _point(r) == point}
        aware, unaware = here.get("exit-aware"), here.get("exit-unaware")
        none, raw = here.get("no-exit"), here.get("raw-offload")
        if aware is None or none is None:
            continue
        saved = ""
        if raw is not None:
            aware_up = sum(aware.bytes_per_link.values())
            raw_up = sum(raw.bytes_per_link.values())
            if aware_up > 0:
                saved = f"; {raw_up / aware_up:.1f}× fewer bytes on the links than raw offload"
        lines.append(
            f"{point}: exit-aware plan {aware.speedup_vs_no_exit or 0:.2f}× faster than the"
            f" model without exits (mean latency), accuracy {aware.accuracy:.2%} vs"
            f" {none.accuracy:.2%} ({aware.accuracy_drop_pp or 0:+.2f} pp drop){saved}."
        )
        if unaware is not None:
            lines.append(
                f"{point}: expected latency exit-aware {aware.predicted_ms:.2f} ms predicted /"
                f" {aware.mean_ms:.2f} ms measured; exit-unaware {unaware.predicted_ms:.2f} ms"
                f" predicted / {unaware.mean_ms:.2f} ms measured."
            )
    return lines
