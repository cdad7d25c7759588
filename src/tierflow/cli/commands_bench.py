"""``tierflow bench-plan`` and ``tierflow demo``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tierflow.cli.app import app, console, reports_errors
from tierflow.cli.commands_plan import planner_for, read_raw_topology
from tierflow.cli.loading import load_model, measure_host_profile
from tierflow.cli.render import plan_tables
from tierflow.errors import TopologyError
from tierflow.measure.planner_bench import time_planner, timings_to_dicts
from tierflow.measure.plots import plot_sweep
from tierflow.plan import Plan
from tierflow.plan.sweep import SweepSpec, sweep
from tierflow.topology import topology_from_dict

DEFAULT_MODEL = "torchvision:resnet18"
DEFAULT_TOPOLOGY = Path("examples/topologies/camera-gateway-cloud.yaml")
DEFAULT_SWEEP = "links.0.bandwidth_mbps=0.5,1,2,5,10,20,50,100"
PROFILE_MODELS = ("torchvision:resnet18", "torchvision:mobilenet_v2", "torchvision:alexnet")


@app.command("bench-plan")
@reports_errors
def bench_plan(
    out: Annotated[Path, typer.Option(help="Directory for bench.json")] = Path("reports/bench"),
    sizes: Annotated[str, typer.Option(help="Graph sizes (nodes)")] = "50,200,500,1000",
    repeats: Annotated[int, typer.Option(min=1, help="Timed repeats (median)")] = 3,
    profile_runs: Annotated[int, typer.Option(min=1, help="Profiling runs per model")] = 15,
    skip_profiles: Annotated[bool, typer.Option(help="Only time the planner")] = False,
) -> None:
    """Planner solve times on 3 tiers, and per-node profile additivity on real models."""
    timings = time_planner([int(s) for s in sizes.split(",")], repeats=repeats)
    table = Table(title="planner on 3 tiers (median wall time, this machine)")
    for column in (
        "graph",
        "nodes",
        "plan() ms",
        "solve ms",
        "MILP-only ms",
        "LP-first ×",
        "method",
    ):
        table.add_column(column, justify="left" if column in {"graph", "method"} else "right")
    for t in timings:
        table.add_row(
            t.shape, str(t.nodes), f"{t.plan_ms:.1f}", f"{t.solve_ms:.1f}",
            f"{t.mip_only_ms:.1f}", f"{t.lp_first_speedup:.1f}", t.method,
        )  # fmt: skip
    console.print(table)
    ratios = []
    if not skip_profiles:
        ratio_table = Table(title="profile: sum of per-node medians / whole-model median")
        for column in ("model", "threads", "sum ms", "whole ms", "sum/whole"):
            ratio_table.add_column(column, justify="left" if column == "model" else "right")
        for spec in PROFILE_MODELS:
            loaded = load_model(spec)
            profile = measure_host_profile(
                loaded, runs=profile_runs, warmup=3, threads=None, progress=True
            )
            ratios.append(
                {
                    "model": spec,
                    "threads": profile.threads,
                    "sum_ms": round(profile.sum_ms, 3),
                    "whole_ms": round(profile.whole_ms, 3),
                    "sum_over_whole": round(profile.sum_over_whole, 4),
                }
            )
            ratio_table.add_row(
                spec, str(profile.threads), f"{profile.sum_ms:.2f}",
                f"{profile.whole_ms:.2f}", f"{profile.sum_over_whole:.3f}",
            )  # fmt: skip
        console.print(ratio_table)
    out.mkdir(parents=True, exist_ok=True)
    report = {"planner": timings_to_dicts(timings), "profile_ratio": ratios}
    (out / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
    console.print(f"written to {out / 'bench.json'}")


@app.command()
@reports_errors
def demo(
    model: Annotated[str, typer.Option(help="Model spec")] = DEFAULT_MODEL,
    topology: Annotated[Path, typer.Option(help="Topology YAML")] = DEFAULT_TOPOLOGY,
    sweep_spec: Annotated[str, typer.Option("--sweep", help="Parameter sweep")] = DEFAULT_SWEEP,
    out: Annotated[Path, typer.Option(help="Report directory")] = Path("reports/demo"),
) -> None:
    """Plan the default model on the default topology, beside the baselines, with a sweep."""
    if not topology.exists():
        raise TopologyError(
            f"{topology} not found: run the demo from the tierflow checkout or pass --topology"
        )
    raw = read_raw_topology(topology, [])
    the_topology = topology_from_dict(raw, source=str(topology))
    console.print(f"[bold]model[/bold] {model}   [bold]topology[/bold] {the_topology}")
    loaded = load_model(model)
    host = measure_host_profile(loaded, runs=10, warmup=2, threads=None, progress=True)
    console.print(
        f"profiled {len(host.node_ms)} nodes on this host: whole model {host.whole_ms:.1f} ms, "
        f"sum of nodes / whole = {host.sum_over_whole:.3f}"
    )
    run = planner_for(
        loaded,
        host=host,
        tier_profiles={},
        objective="latency",
        pins={},
        private_input=False,
        slo_ms=None,
        base_dir=topology.parent,
    )
    result = run(the_topology)
    for table in plan_tables(result):
        console.print(table)
    spec = SweepSpec.parse(sweep_spec)
    points = sweep(raw, spec, run)
    out.mkdir(parents=True, exist_ok=True)
    result.save(out / "plan.json")
    figure = plot_sweep(spec, points, out / "sweep.png")
    summary = Table(title=f"predicted latency across {spec.path}")
    for column in (spec.path, "plan ms", "best feasible baseline", "baseline / plan", "cuts"):
        summary.add_column(
            column, justify="left" if column in {"cuts", "best feasible baseline"} else "right"
        )
    for point in points:
        feasible = point.plan.feasible_baselines()
        name, best = min(feasible.items(), key=lambda item: item[1].prediction.latency_ms)
        best_ms = best.prediction.latency_ms
        summary.add_row(
            f"{point.value:g}",
            f"{point.plan.predicted.latency_ms:.1f}",
            f"{name} {best_ms:.1f} ms",
            f"{best_ms / point.plan.predicted.latency_ms:.2f}×",
            _describe_cuts(point.plan),
        )
    console.print(summary)
    console.print(f"plan: {out / 'plan.json'}   sweep figure: {figure}")


def _describe_cuts(plan: Plan) -> str:
    if not plan.cuts:
        return f"none: all on {plan.tiers[0]}"
    parts = []
    for cut in plan.cuts:
        shown = ",".join(cut.tensors[:2]) + ("…" if len(cut.tensors) > 2 else "")
        parts.append(f"{cut.link}: {shown} ({cut.bytes / 1e3:.0f} kB)")
    return "; ".join(parts)
