"""``tierflow bench-plan`` and ``tierflow demo``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tierflow.cli.app import app, console, reports_errors
from tierflow.cli.commands_plan import planner_for, read_raw_topology
from tierflow.cli.demo_compress import compress_demo
from tierflow.cli.demo_exits import exit_demo
from tierflow.cli.exit_bench import exit_table, is_exit_run, run_exit_testbed_bench
from tierflow.cli.loading import load_model, measure_host_profile
from tierflow.cli.model_bench import (
    DEFAULT_ACCURACY_SAMPLES,
    bench_table,
    compression_inputs,
    run_testbed_bench,
)
from tierflow.cli.render import plan_tables
from tierflow.errors import TopologyError
from tierflow.measure.bench_report import speedup_summary
from tierflow.measure.exit_report import cpu_summary, exit_summary
from tierflow.measure.planner_bench import time_planner, timings_to_dicts
from tierflow.measure.plots import plot_sweep
from tierflow.measure.testbed_bench import (
    BenchSettings,
    results_to_json,
)
from tierflow.plan import Plan
from tierflow.plan.sweep import SweepPoint, SweepSpec, sweep
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
def bench(
    model: Annotated[str, typer.Argument(help="Model spec")],
    topology: Annotated[Path, typer.Option(help="Topology YAML")],
    sweep_spec: Annotated[
        str | None, typer.Option("--sweep", help='e.g. "links.0.bandwidth_mbps=5,20,100"')
    ] = None,
    requests: Annotated[int, typer.Option(min=1, help="Timed requests per config (at most)")] = 20,
    seconds: Annotated[float, typer.Option(help="Time budget per config and point")] = 8.0,
    set_: Annotated[list[str], typer.Option("--set", help="Topology override")] = [],  # noqa: B006
    out: Annotated[Path, typer.Option(help="Report directory")] = Path("reports/bench-testbed"),
    no_emulate: Annotated[
        bool, typer.Option("--no-emulate", help="No CPU quotas or links")
    ] = False,
    profile_runs: Annotated[int, typer.Option(min=1, help="Profiling runs per tier")] = 10,
    input_shape: Annotated[str | None, typer.Option(help="Example input shape")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the results as JSON")] = False,
    data: Annotated[
        str | None,
        typer.Option(
            help="Labelled data: held-out inputs for exit models, and for other models the "
            "test samples each deployment's accuracy is measured on, and the calibration "
            "samples of int8 tiers (default for run:DIR: the run's dataset)"
        ),
    ] = None,
    samples: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Test inputs sent (default: all for exit models, "
            f"{DEFAULT_ACCURACY_SAMPLES} for accuracy of other models)",
        ),
    ] = None,
    max_accuracy_drop: Annotated[
        float,
        typer.Option(help="Accuracy drop allowed to the planner (exits, codecs, variants), in pp"),
    ] = 0.5,
    codecs: Annotated[
        Path | None,
        typer.Option(help="Codec options (tierflow compress --codec-options): adds plan+codecs"),
    ] = None,
    variants: Annotated[
        Path | None,
        typer.Option(
            help="Variant options (tierflow compress --variant-options): adds plan+compressed, "
            "a variant per tier (with --codecs too, codecs per link)"
        ),
    ] = None,
) -> None:
    """Deploy the plan and the baselines on the local testbed and measure them.

    For a trained early-exit run (``run:DIR`` with exits), the held-out inputs are sent
    through the exit-aware plan, the exit-unaware plan, the model without exits and raw
    offload, and accuracy and exit rates are reported besides latency and bytes.
    """
    if is_exit_run(model) and codecs is None and variants is None:
        outcome = run_exit_testbed_bench(
            model,
            topology,
            overrides=set_,
            sweep_spec=sweep_spec,
            data=data,
            samples=samples,
            max_accuracy_drop_pp=max_accuracy_drop,
            out=out,
            emulate=not no_emulate,
            profile_runs=profile_runs,
            quiet=json_out,
        )
        if json_out:
            print(json.dumps(outcome.to_json(), indent=2))
            return
        console.print(exit_table(outcome.configs))
        for line in exit_summary(outcome.configs):
            console.print(line)
        console.print(cpu_summary(outcome.cpu))
        console.print(f"report: {out / 'report.md'}")
        return
    results = run_testbed_bench(
        model,
        topology,
        overrides=set_,
        sweep_spec=sweep_spec,
        settings=BenchSettings(requests=requests, seconds_per_config=seconds),
        out=out,
        emulate=not no_emulate,
        profile_runs=profile_runs,
        input_shape=input_shape,
        quiet=json_out,
        **compression_inputs(
            model,
            codecs=codecs,
            variants=variants,
            data=data,
            samples=samples,
            max_accuracy_drop_pp=max_accuracy_drop,
        ),
    )
    if json_out:
        print(json.dumps(results_to_json(results), indent=2))
        return
    console.print(bench_table(results))
    console.print(speedup_summary(results))
    console.print(f"report: {out / 'report.md'}")


DEMO_BENCH_SWEEP = "links.0.bandwidth_mbps=5,25,100"
# Few requests per configuration keep `make demo` under three minutes on two cores.
DEMO_SETTINGS = BenchSettings(requests=10, min_requests=3, seconds_per_config=3.0, warmup=1)


@app.command()
@reports_errors
def demo(
    model: Annotated[str, typer.Option(help="Model spec")] = DEFAULT_MODEL,
    topology: Annotated[Path, typer.Option(help="Topology YAML")] = DEFAULT_TOPOLOGY,
    sweep_spec: Annotated[str, typer.Option("--sweep", help="Predicted sweep")] = DEFAULT_SWEEP,
    bench_sweep: Annotated[
        str, typer.Option(help="Points measured on the testbed")
    ] = DEMO_BENCH_SWEEP,
    out: Annotated[Path, typer.Option(help="Report directory")] = Path("reports/demo"),
    no_emulate: Annotated[
        bool, typer.Option("--no-emulate", help="No CPU quotas or links")
    ] = False,
) -> None:
    """Plan the default model, then deploy plan and baselines on the testbed and measure."""
    if not topology.exists():
        raise TopologyError(
            f"{topology} not found: run the demo from the tierflow checkout or pass --topology"
        )
    raw = read_raw_topology(topology, [])
    the_topology = topology_from_dict(raw, source=str(topology))
    console.rule(f"[bold]1. plan[/bold] {model} on {the_topology}")
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
    console.print(sweep_table(spec, points))

    console.rule(f"[bold]2. run it[/bold]: plan and baselines on the local testbed, {bench_sweep}")
    results = run_testbed_bench(
        model,
        topology,
        overrides=[],
        sweep_spec=bench_sweep,
        settings=DEMO_SETTINGS,
        out=out,
        emulate=not no_emulate,
        profile_runs=5,
        input_shape=None,
        quiet=False,
    )
    console.print(bench_table(results))
    console.print(speedup_summary(results))

    console.rule("[bold]3. decide locally[/bold]: an early-exit model on MNIST-5k, on the testbed")
    exit_demo(topology, out / "exits", emulate=not no_emulate)

    console.rule(
        "[bold]4. fit thin links[/bold]: the compressed plan beside the uncompressed one, "
        "camera uplink at 1 and 5 Mbps"
    )
    compress_demo(topology, out / "compressed", emulate=not no_emulate)
    console.print(
        f"written: {out / 'plan.json'}, {figure}, {out / 'report.md'}, {out / 'bench.json'}, "
        f"{out / 'latency.png'}, {out / 'exits' / 'report.md'}, {out / 'exits' / 'bench.json'}, "
        f"{out / 'compressed' / 'report.md'}, {out / 'compressed' / 'bench.json'}"
    )


def sweep_table(spec: SweepSpec, points: list[SweepPoint]) -> Table:
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
    return summary


def _describe_cuts(plan: Plan) -> str:
    if not plan.cuts:
        return f"none: all on {plan.tiers[0]}"
    parts = []
    for cut in plan.cuts:
        shown = ",".join(cut.tensors[:2]) + ("…" if len(cut.tensors) > 2 else "")
        parts.append(f"{cut.link}: {shown} ({cut.bytes / 1e3:.0f} kB)")
    return "; ".join(parts)
