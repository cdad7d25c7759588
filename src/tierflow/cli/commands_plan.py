"""``tierflow plan``: place a model's layers on a topology, optionally across a sweep."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from tierflow.cli.app import app, console, reports_errors
from tierflow.cli.commands_model import (
    GranularityOpt,
    InputShape,
    Leaf,
    ModelArg,
    Weights,
    _granularity,
)
from tierflow.cli.loading import (
    LoadedModel,
    load_model,
    measure_host_profile,
    parse_pins,
    parse_profile_options,
)
from tierflow.cli.render import plan_tables
from tierflow.documents import read_yaml_mapping
from tierflow.errors import PlanError, TopologyError
from tierflow.measure.plots import plot_sweep
from tierflow.plan import Plan
from tierflow.plan import plan as make_plan
from tierflow.plan.codec_options import CodecOptions
from tierflow.plan.exit_options import ExitOptions
from tierflow.plan.exit_planner import plan_with_exits
from tierflow.plan.sweep import SweepSpec, sweep, sweep_to_dict
from tierflow.plan.variant_options import VariantOptions
from tierflow.plan.variant_planner import plan_compressed
from tierflow.profile import Profile
from tierflow.topology import Topology, apply_overrides, topology_from_dict
from tierflow.topology.load import resolve_profile_paths

# plan_compressed's own default budget, restated so the CLI can print it.
DEFAULT_CODEC_DROP_PP = 1.0


def read_raw_topology(path: Path, overrides: list[str]) -> dict[str, Any]:
    raw = read_yaml_mapping(path, what="topology file", error=TopologyError)
    return apply_overrides(raw, overrides)


def planner_for(
    loaded: LoadedModel,
    *,
    host: Profile | None,
    tier_profiles: dict[str, Profile],
    objective: str,
    pins: dict[str, str],
    private_input: bool,
    slo_ms: float | None,
    base_dir: Path,
    time_limit_s: float | None = None,
    exits: ExitOptions | None = None,
    latency_target_ms: float | None = None,
    max_accuracy_drop_pp: float | None = None,
    codecs: CodecOptions | None = None,
    variants: VariantOptions | None = None,
) -> Callable[[Topology], Plan]:
    if exits is not None and (codecs is not None or variants is not None):
        # Each planner extends the placement program its own way; no program has both.
        raise PlanError(
            "exits cannot be planned together with codecs or variants: give one of them"
        )

    def run(topology: Topology) -> Plan:
        # What every planner takes: the graph, the topology, costs and constraints.
        common: dict[str, Any] = {
            "profile": host,
            "tier_profiles": tier_profiles,
            "objective": objective,
            "pins": pins,
            "private_input": private_input,
            "slo_ms": slo_ms,
            "time_limit_s": time_limit_s,
        }
        resolved = resolve_profile_paths(topology, base_dir)
        if variants is not None or codecs is not None:
            return plan_compressed(
                loaded.graph,
                resolved,
                variants=variants,
                codecs=codecs,
                max_accuracy_drop_pp=(
                    DEFAULT_CODEC_DROP_PP if max_accuracy_drop_pp is None else max_accuracy_drop_pp
                ),
                **common,
            )
        if exits is not None:
            return plan_with_exits(
                loaded.graph,
                resolved,
                exits,
                latency_target_ms=latency_target_ms,
                max_accuracy_drop_pp=max_accuracy_drop_pp,
                **common,
            )
        return make_plan(loaded.graph, resolved, **common)

    return run


@app.command()
@reports_errors
def plan(
    model: ModelArg,
    topology: Annotated[Path, typer.Option(help="Topology YAML file")],
    objective: Annotated[
        str,
        typer.Option(help="latency | energy | bytes | throughput | mix like latency=1,energy=0.5"),
    ] = "latency",
    profile: Annotated[
        list[str],
        typer.Option("--profile", help="Host profile FILE, or TIER=FILE measured on a tier"),
    ] = [],  # noqa: B006
    set_: Annotated[
        list[str],
        typer.Option("--set", help="Override a topology field, e.g. links.0.bandwidth_mbps=5"),
    ] = [],  # noqa: B006
    pin: Annotated[list[str], typer.Option("--pin", help="NODE=TIER: run NODE on TIER")] = [],  # noqa: B006
    private_input: Annotated[
        bool, typer.Option("--private-input", help="The raw input never leaves the first tier")
    ] = False,
    slo_ms: Annotated[float | None, typer.Option(help="End-to-end latency bound (ms)")] = None,
    time_limit_s: Annotated[
        float | None,
        typer.Option(help="Stop the solver after this long; the plan then says if unproven"),
    ] = None,
    exits: Annotated[
        Path | None,
        typer.Option(
            help="exits.json of a trained exit model: choose the exit setting and the "
            "placement together, minimising the expected cost"
        ),
    ] = None,
    latency_target_ms: Annotated[
        float | None,
        typer.Option(
            help="With --exits: the most accurate setting whose expected latency meets this"
        ),
    ] = None,
    codecs: Annotated[
        Path | None,
        typer.Option(
            "--codecs",
            help="codecs.json (tierflow compress --codec-options): choose the placement and "
            "each crossing value's activation codec together, within --max-accuracy-drop",
        ),
    ] = None,
    variants: Annotated[
        Path | None,
        typer.Option(
            "--variants",
            help="variants.json (tierflow compress --variant-options): also choose per tier "
            "whether its segments run fp32 or compressed (int8), within --max-accuracy-drop",
        ),
    ] = None,
    max_accuracy_drop: Annotated[
        float | None,
        typer.Option(
            help="With --exits: only settings within this many accuracy points (pp) of the "
            "final classifier. With --codecs/--variants: bound on the summed accuracy drop "
            f"of the chosen codecs and variants (pp, default {DEFAULT_CODEC_DROP_PP:g})"
        ),
    ] = None,
    sweep_spec: Annotated[
        str | None,
        typer.Option("--sweep", help='Plan across values: "links.1.bandwidth_mbps=0.5,1,2,5"'),
    ] = None,
    plot: Annotated[
        Path | None, typer.Option(help="With --sweep: write the latency-vs-parameter figure here")
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the plan (or sweep) as JSON")
    ] = False,
    out: Annotated[Path | None, typer.Option(help="Write the plan JSON here")] = None,
    runs: Annotated[
        int, typer.Option(min=1, help="Profiling runs when no --profile is given")
    ] = 10,
    input_shape: InputShape = None,
    weights: Weights = None,
    granularity: GranularityOpt = "node",
    leaf: Leaf = [],  # noqa: B006
) -> None:
    """Find the optimal placement of MODEL's layers on the tiers of a topology."""
    if exits is not None and (codecs is not None or variants is not None):
        raise typer.BadParameter(
            "--codecs and --variants cannot be combined with --exits: the compression "
            "planner does not plan early exits; plan with one of them",
            param_hint="--codecs" if codecs is not None else "--variants",
        )
    if exits is None:
        if latency_target_ms is not None:
            raise typer.BadParameter(
                "--latency-target-ms needs --exits", param_hint="--latency-target-ms"
            )
        if max_accuracy_drop is not None and codecs is None and variants is None:
            raise typer.BadParameter(
                "--max-accuracy-drop needs --exits, --codecs or --variants",
                param_hint="--max-accuracy-drop",
            )
    exit_options = None if exits is None else ExitOptions.load(exits)
    codec_options = None if codecs is None else CodecOptions.load(codecs)
    variant_options = None if variants is None else VariantOptions.load(variants)
    raw = read_raw_topology(topology, set_)
    the_topology = topology_from_dict(raw, source=str(topology))
    loaded = load_model(
        model,
        input_shape=input_shape,
        weights=weights,
        granularity=_granularity(granularity),
        leaf=leaf,
    )
    host, tier_profiles = parse_profile_options(profile)
    needs_host = any(
        t.compute.speed is not None and t.name not in tier_profiles for t in the_topology.tiers
    )
    if host is None and needs_host:
        host = measure_host_profile(
            loaded, runs=runs, warmup=2, threads=None, progress=not json_out
        )
    run = planner_for(
        loaded,
        host=host,
        tier_profiles=tier_profiles,
        objective=objective,
        pins=parse_pins(pin),
        private_input=private_input,
        slo_ms=slo_ms,
        base_dir=topology.parent,
        time_limit_s=time_limit_s,
        exits=exit_options,
        latency_target_ms=latency_target_ms,
        max_accuracy_drop_pp=max_accuracy_drop,
        codecs=codec_options,
        variants=variant_options,
    )
    if sweep_spec is not None:
        spec = SweepSpec.parse(sweep_spec)
        points = sweep(raw, spec, run)
        if plot is not None:
            plot_sweep(spec, points, plot)
        if json_out:
            print(json.dumps(sweep_to_dict(spec, points), indent=2))
            return
        for point in points:
            console.rule(f"{spec.path} = {point.value:g}")
            for table in plan_tables(point.plan):
                console.print(table)
            _print_exits(point.plan)
            if codec_options is not None or variant_options is not None:
                _print_compression(point.plan, budget_pp=max_accuracy_drop)
        if plot is not None:
            console.print(f"sweep figure written to {plot}")
        return
    if plot is not None:
        raise typer.BadParameter("--plot needs --sweep", param_hint="--plot")
    result = run(the_topology)
    if out is not None:
        result.save(out)
    if json_out:
        print(result.to_json())
        return
    for table in plan_tables(result):
        console.print(table)
    _print_exits(result)
    if codec_options is not None or variant_options is not None:
        _print_compression(result, budget_pp=max_accuracy_drop)
    if out is not None:
        console.print(f"plan written to {out}")


def _print_exits(plan: Plan) -> None:
    """With exits: which are active where, expected vs worst-case cost, and accuracy."""
    if plan.worst_case is None:
        return
    if plan.exits:
        table = Table(title=f"early exits ({len(plan.exits)} active)")
        for column in ("exit", "node", "tier", "policy", "threshold", "exit rate"):
            table.add_column(
                column, justify="right" if column in {"threshold", "exit rate"} else "left"
            )
        for planned in plan.exits:
            table.add_row(
                planned.name,
                planned.node,
                planned.tier,
                planned.policy,
                f"{planned.threshold:g}",
                f"{planned.exit_rate:.1%}",
            )
        console.print(table)
    else:
        console.print("early exits: none active (no setting beats the backbone alone)")
    costs = Table(title="cost per input with exits")
    for column in ("", "latency ms", "energy mJ", "bytes", "throughput rps"):
        costs.add_column(column, justify="left" if not column else "right")
    rows = [("expected", plan.predicted), ("worst case (no exit answers)", plan.worst_case)]
    for name, p in rows:
        costs.add_row(
            name,
            f"{p.latency_ms:.2f}",
            "-" if p.energy_mj is None else f"{p.energy_mj:.1f}",
            f"{sum(p.bytes_per_link.values()):.0f}",
            f"{p.throughput_rps:.1f}",
        )
    unaware = plan.solver.get("exit_unaware")
    if isinstance(unaware, dict):
        costs.add_row(
            "expected, placement ignoring exits", f"{unaware['latency_ms']:.2f}", "", "", ""
        )
    console.print(costs)
    if plan.accuracy is not None:
        console.print(f"expected accuracy: {plan.accuracy:.2%}")


def _print_compression(plan: Plan, *, budget_pp: float | None) -> None:
    """With --codecs/--variants: the variant per tier, the codec per link and value, and
    the predicted accuracy drop."""
    budget = DEFAULT_CODEC_DROP_PP if budget_pp is None else budget_pp
    if plan.tier_variants:
        shown = ", ".join(f"{tier}: {name}" for tier, name in plan.tier_variants.items())
        console.print(f"compressed variants: {shown} (other tiers fp32)")
    elif plan.compression_drop_pp is not None:
        console.print("compressed variants: none chosen (fp32 everywhere)")
    if plan.compression_drop_pp is not None:
        console.print(
            f"predicted accuracy drop from variants and codecs: {plan.compression_drop_pp:.2f} "
            f"pp (budget {budget:g} pp)"
        )
    if not plan.link_codecs:
        console.print(
            "activation codecs: none chosen (raw bytes are cheapest, or no candidate fits "
            f"the {budget:g} pp budget)"
        )
        return
    table = Table(title="activation codecs per link")
    for column in ("link", "value", "codec", "link bytes (all values)"):
        table.add_column(column, justify="right" if column.startswith("link bytes") else "left")
    for tier, chosen in plan.link_codecs.items():
        index = plan.tiers.index(tier)
        link = f"{tier}->{plan.tiers[index + 1]}"
        for value, spec in chosen.items():
            table.add_row(link, value, spec, f"{plan.predicted.bytes_per_link.get(link, 0.0):.0f}")
    console.print(table)
    if plan.compression_drop_pp is None:
        drop = plan.codec_accuracy_drop_pp or 0.0
        console.print(f"predicted accuracy drop from codecs: {drop:.2f} pp (budget {budget:g} pp)")
