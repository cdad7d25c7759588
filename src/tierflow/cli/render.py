"""Rich tables for graphs, profiles and plans."""

from __future__ import annotations

from rich.table import Table

from tierflow.graph import LayerGraph
from tierflow.plan import Plan, Prediction
from tierflow.profile import Profile


def _si(value: float, unit: str = "") -> str:
    for threshold, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= threshold:
            return f"{value / threshold:.2f} {prefix}{unit}"
    return f"{value:.0f} {unit}".rstrip()


def graph_table(graph: LayerGraph, *, limit: int | None = None) -> Table:
    table = Table(
        title=f"{graph.model} · {len(graph)} {graph.granularity}s · tracer {graph.tracer}"
    )
    for column in ("#", "name", "op", "type / target", "FLOPs", "params", "output", "shape"):
        table.add_column(
            column, justify="right" if column in {"#", "FLOPs", "params", "output"} else "left"
        )
    nodes = graph.nodes if limit is None else graph.nodes[:limit]
    for i, node in enumerate(nodes):
        shape = "×".join(str(d) for d in node.outputs[0].shape) if node.outputs else ""
        if len(node.outputs) > 1:
            shape += f" (+{len(node.outputs) - 1})"
        table.add_row(
            str(i),
            node.name,
            node.op,
            node.module_type or node.target,
            _si(node.flops),
            _si(node.param_bytes, "B"),
            _si(node.output_bytes, "B"),
            shape,
        )
    if limit is not None and len(graph) > limit:
        table.add_row("…", f"{len(graph) - limit} more", "", "", "", "", "", "")
    table.caption = (
        f"total {_si(graph.total_flops)}FLOPs · {_si(graph.total_param_bytes, 'B')} parameters"
    )
    return table


def profile_table(profile: Profile, *, top: int = 15) -> Table:
    table = Table(
        title=f"{profile.model} on {profile.machine} · {profile.threads} threads · "
        f"median of {profile.runs}"
    )
    table.add_column("node")
    table.add_column("ms", justify="right")
    table.add_column("share", justify="right")
    ranked = sorted(profile.node_ms.items(), key=lambda item: item[1], reverse=True)
    total = profile.sum_ms or 1.0
    for name, ms in ranked[:top]:
        table.add_row(name, f"{ms:.3f}", f"{ms / total:.1%}")
    table.caption = (
        f"sum of nodes {profile.sum_ms:.2f} ms · whole model {profile.whole_ms:.2f} ms · "
        f"sum/whole {profile.sum_over_whole:.3f}"
    )
    return table


def _row(name: str, p: Prediction, best: float) -> list[str]:
    return [
        name,
        f"{p.latency_ms:.2f}",
        f"{p.latency_ms / best:.2f}×" if best > 0 else "-",
        "-" if p.energy_mj is None else f"{p.energy_mj:.1f}",
        _si(sum(p.bytes_per_link.values()), "B"),
        f"{p.throughput_rps:.1f}",
        "yes" if p.feasible else "[red]no[/red]",
    ]


def plan_tables(plan: Plan) -> list[Table]:
    placement = Table(
        title=f"plan for {plan.model} · objective {plan.objective} · "
        f"{plan.solver.get('status', '')}"
    )
    for column in (
        "tier",
        "nodes",
        "compute ms",
        "link",
        "up: tensors",
        "bytes up+down",
        "transfer ms",
    ):
        placement.add_column(
            column,
            justify="right" if "ms" in column or column in {"nodes", "bytes up+down"} else "left",
        )
    segments = plan.segments()
    cuts = {cut.link: cut for cut in plan.cuts}
    for i, tier in enumerate(plan.tiers):
        link = f"{tier}->{plan.tiers[i + 1]}" if i + 1 < len(plan.tiers) else ""
        cut = cuts.get(link)
        tensors = (
            ""
            if cut is None
            else ", ".join(cut.tensors[:3]) + (" …" if len(cut.tensors) > 3 else "")
        )
        placement.add_row(
            tier,
            str(len(segments.get(tier, []))),
            f"{plan.predicted.compute_ms.get(tier, 0.0):.2f}",
            link,
            tensors,
            _si(plan.predicted.bytes_per_link.get(link, 0.0), "B") if link else "",
            f"{plan.predicted.transfer_ms.get(link, 0.0):.2f}" if link else "",
        )
    compare = Table(title="predicted cost per input: plan vs baselines")
    for column in (
        "placement",
        "latency ms",
        "vs plan",
        "energy mJ",
        "bytes",
        "throughput rps",
        "feasible",
    ):
        compare.add_column(column, justify="left" if column == "placement" else "right")
    best = plan.predicted.latency_ms
    compare.add_row(*_row("[bold]tierflow plan[/bold]", plan.predicted, best))
    for name, baseline in plan.baselines.items():
        compare.add_row(*_row(name, baseline.prediction, best))
    return [placement, compare]
