"""``tierflow build``: a plan built into per-tier ONNX / PyTorch artifacts and a manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, cast

import typer
from rich.table import Table
from torch import nn

from tierflow.artifacts import ExecutorChoice, Manifest, build
from tierflow.cli.app import app, console, reports_errors
from tierflow.cli.commands_model import InputShape, Weights
from tierflow.cli.loading import parse_shape
from tierflow.data import load_dataset
from tierflow.data.calibration import DEFAULT_CALIBRATION_SAMPLES, calibration_batch
from tierflow.errors import ArtifactError
from tierflow.models import resolve_model
from tierflow.plan import Plan


def _names(values: tuple[str, ...], limit: int = 3) -> str:
    return ", ".join(values[:limit]) + (f" (+{len(values) - limit})" if len(values) > limit else "")


def manifest_table(manifest: Manifest) -> Table:
    table = Table(title=f"{manifest.model} · plan {manifest.plan_sha256[:12]} · {manifest.root}")
    for column in ("tier", "executor", "variant", "inputs", "outputs", "files", "size"):
        table.add_column(column, justify="right" if column == "size" else "left")
    for index, segment in enumerate(manifest.segments):
        size = sum((manifest.root / f.path).stat().st_size for f in segment.files)
        table.add_row(
            segment.label,
            segment.executor,
            segment.variant,
            _names(tuple(v.name for v in segment.inputs)),
            _names(tuple(v.name for v in segment.outputs)),
            ", ".join(f.path for f in segment.files),
            f"{size / 1e3:.1f} kB",
        )
        # An exit's head runs right after the segment it follows: list it there.
        for entry in manifest.exits:
            if entry.after == index:
                head_size = (manifest.root / entry.file.path).stat().st_size
                table.add_row(
                    f"{segment.tier} exit {entry.name}",
                    f"onnx, {entry.policy} >= {entry.threshold:g}",
                    "fp32",
                    entry.input.name,
                    entry.answers,
                    entry.file.path,
                    f"{head_size / 1e3:.1f} kB",
                )
    return table


def exit_heads_for(plan: Plan, source: str) -> dict[str, nn.Module] | None:
    """The heads of a plan's early exits, from the trained run its model spec names.

    A plan with exits is made for a trained exit model, ``run:DIR``; the build splits its
    backbone (what ``resolve_model`` returns for that spec) and exports the run's heads.
    ``None`` for a plan without exits.

    Raises
    ------
    ArtifactError
        If the plan has exits but its model is not a ``run:DIR`` spec.
    """
    if not plan.exits:
        return None
    kind, _, run_dir = plan.model.partition(":")
    if kind != "run":
        names = ", ".join(e.name for e in plan.exits)
        raise ArtifactError(
            f"{source}: the plan has early exits ({names}) but its model {plan.model!r} is "
            "not a trained run (run:DIR) holding their heads; plan the run's model, or "
            "build from Python with build(..., exit_heads={name: head})"
        )
    from tierflow.train.run_dir import load_exit_model  # lazy: training code is heavy

    exit_model, _ = load_exit_model(run_dir)
    return dict(exit_model.heads.items())


@app.command("build")
@reports_errors
def build_command(
    plan_file: Annotated[
        Path, typer.Argument(metavar="PLAN.json", help="A plan from `plan --out`")
    ],
    out: Annotated[Path, typer.Option(help="Directory to write the artifacts into")],
    executor: Annotated[
        str,
        typer.Option(help="auto: ONNX where it exports faithfully, else PyTorch | onnx | torch"),
    ] = "auto",
    input_shape: InputShape = None,
    weights: Weights = None,
    calibration_data: Annotated[
        str | None,
        typer.Option(
            help="Dataset (mnist5k | digits | npz:FILE | folder:DIR) whose first training "
            "samples calibrate the int8-static tiers of the plan's tier_variants"
        ),
    ] = None,
    calibration_samples: Annotated[
        int, typer.Option(min=1, help="With --calibration-data: samples used")
    ] = DEFAULT_CALIBRATION_SAMPLES,
) -> None:
    """Build PLAN.json's segments into per-tier files and a manifest in --out."""
    if executor not in ("auto", "onnx", "torch"):
        raise ArtifactError(f"--executor {executor!r}: choose auto, onnx or torch")
    the_plan = Plan.load(plan_file)
    heads = exit_heads_for(the_plan, str(plan_file))
    model, inputs = resolve_model(
        the_plan.model, input_shape=parse_shape(input_shape), weights=weights
    )
    static = [t for t, v in the_plan.tier_variants.items() if v == "int8-static"]
    if static and calibration_data is None:
        raise typer.BadParameter(
            f"the plan runs {', '.join(static)} as int8-static, which needs calibration "
            "samples: give --calibration-data (e.g. the dataset the model was trained on)",
            param_hint="--calibration-data",
        )
    calibration = (
        None
        if calibration_data is None
        else (
            calibration_batch(
                load_dataset(calibration_data).train, samples=calibration_samples, like=inputs[0]
            ),
        )
    )
    manifest = build(
        model,
        the_plan,
        inputs,
        out,
        executor=cast(ExecutorChoice, executor),
        exit_heads=heads,
        calibration=calibration,
    )
    console.print(manifest_table(manifest))
