"""``tierflow graph``, ``tierflow profile`` and ``tierflow split``: one model at a time."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import torch
import typer

from tierflow.cli.app import app, console, reports_errors
from tierflow.cli.loading import load_model, measure_host_profile
from tierflow.cli.render import graph_table, profile_table
from tierflow.errors import PartitionError
from tierflow.graph.layer_graph import Granularity
from tierflow.partition import run_split, split_traced
from tierflow.plan import Plan
from tierflow.profile.in_tier import profile_in_tier
from tierflow.profile.onnx_calibration import calibrate_to_onnxruntime
from tierflow.testbed.cpu import apply_deferred_quota
from tierflow.topology import load_topology

ModelArg = Annotated[
    str, typer.Argument(help="torchvision:NAME, zoo:NAME or package.module:factory")
]
InputShape = Annotated[str | None, typer.Option(help="Example input shape, e.g. 1,3,224,224")]
Weights = Annotated[str | None, typer.Option(help="Weights to load (.safetensors)")]
GranularityOpt = Annotated[str, typer.Option(help="node: one per op; block: one per module block")]
Leaf = Annotated[list[str], typer.Option("--leaf", help="Module class fx must not trace into")]


def _granularity(value: str) -> Granularity:
    if value not in ("node", "block"):
        raise typer.BadParameter("expected 'node' or 'block'", param_hint="--granularity")
    return "node" if value == "node" else "block"


@app.command()
@reports_errors
def graph(
    model: ModelArg,
    json_out: Annotated[bool, typer.Option("--json", help="Print the graph as JSON")] = False,
    input_shape: InputShape = None,
    weights: Weights = None,
    granularity: GranularityOpt = "node",
    leaf: Leaf = [],  # noqa: B006  (typer reads the default; it is never mutated)
    limit: Annotated[int | None, typer.Option(help="Show only the first N rows")] = None,
) -> None:
    """Capture MODEL and print its layer table (FLOPs, parameters, output bytes)."""
    loaded = load_model(
        model,
        input_shape=input_shape,
        weights=weights,
        granularity=_granularity(granularity),
        leaf=leaf,
    )
    if json_out:
        print(loaded.graph.to_json())
    else:
        console.print(graph_table(loaded.graph, limit=limit))


@app.command()
@reports_errors
def profile(
    model: ModelArg,
    out: Annotated[Path | None, typer.Option(help="Write the profile JSON here")] = None,
    runs: Annotated[int, typer.Option(min=1, help="Timed runs per node (median)")] = 20,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed warm-up runs")] = 3,
    threads: Annotated[
        int | None, typer.Option(min=1, help="Intra-op threads (default: cores)")
    ] = None,
    executor: Annotated[
        str, typer.Option(help="torch, or onnx: scale to ONNX Runtime speed (tier services)")
    ] = "torch",
    machine: Annotated[str | None, typer.Option(help="Name to record (default: host)")] = None,
    tier: Annotated[
        str | None, typer.Option(help="Measure inside this tier's emulated CPU budget")
    ] = None,
    topology: Annotated[Path | None, typer.Option(help="Topology (with --tier)")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the profile as JSON")] = False,
    input_shape: InputShape = None,
    weights: Weights = None,
    leaf: Leaf = [],  # noqa: B006
) -> None:
    """Measure MODEL's per-node latency here, on a real tier, or in a testbed tier's budget."""
    if executor not in ("torch", "onnx"):
        raise typer.BadParameter("expected 'torch' or 'onnx'", param_hint="--executor")
    if tier is not None:
        if topology is None:
            raise typer.BadParameter("--tier needs --topology", param_hint="--tier")
        result = profile_in_tier(
            model,
            load_topology(topology),
            tier,
            executor="onnx" if executor == "onnx" else "torch",
            runs=runs,
            warmup=warmup,
            input_shape=input_shape,
        )
    else:
        loaded = load_model(model, input_shape=input_shape, weights=weights, leaf=leaf)
        # Under `tierflow profile --tier`, the tier's CPU quota starts here, after start-up.
        apply_deferred_quota()
        result = measure_host_profile(
            loaded, runs=runs, warmup=warmup, threads=threads, progress=not json_out
        )
        if executor == "onnx":
            result = calibrate_to_onnxruntime(
                result, loaded.module, loaded.inputs, threads=result.threads, runs=runs
            )
        if machine is not None:
            result = replace(result, machine=machine)
    if out is not None:
        result.save(out)
    if json_out:
        print(json.dumps(result.to_dict(), indent=2))
        return
    console.print(profile_table(result))
    if out is not None:
        console.print(f"profile written to {out}")


@app.command()
@reports_errors
def split(
    model: ModelArg,
    plan_file: Annotated[Path, typer.Argument(help="A plan JSON from `tierflow plan --out`")],
    input_shape: InputShape = None,
    weights: Weights = None,
    leaf: Leaf = [],  # noqa: B006
) -> None:
    """Split MODEL by a plan, run the segments in order and check they equal the model."""
    the_plan = Plan.load(plan_file)
    loaded = load_model(model, input_shape=input_shape, weights=weights, leaf=leaf)
    if the_plan.model != model:
        raise PartitionError(f"{plan_file} is a plan for {the_plan.model!r}, not {model!r}")
    split_model = split_traced(loaded.traced, the_plan.assignment, the_plan.tiers)
    with torch.inference_mode():
        expected = loaded.module(*loaded.inputs)
        actual = run_split(split_model, *loaded.inputs)
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)
    for segment in split_model.segments:
        console.print(
            f"{segment.tier:<14} in: {', '.join(segment.input_names)}"
            f"  →  out: {', '.join(segment.output_names)}"
        )
    console.print("[green]split output equals the unsplit model's[/green]")
