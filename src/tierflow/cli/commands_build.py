"""``tierflow build``: a plan built into per-tier ONNX / PyTorch artifacts and a manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, cast

import typer
from rich.table import Table

from tierflow.artifacts import ExecutorChoice, Manifest, build
from tierflow.cli.app import app, console, reports_errors
from tierflow.cli.commands_model import InputShape, Weights
from tierflow.cli.loading import parse_shape
from tierflow.errors import ArtifactError
from tierflow.models import resolve_model
from tierflow.plan import Plan


def _names(values: tuple[str, ...], limit: int = 3) -> str:
    return ", ".join(values[:limit]) + (f" (+{len(values) - limit})" if len(values) > limit else "")


def manifest_table(manifest: Manifest) -> Table:
    table = Table(title=f"{manifest.model} · plan {manifest.plan_sha256[:12]} · {manifest.root}")
    for column in ("tier", "executor", "inputs", "outputs", "files", "size"):
        table.add_column(column, justify="right" if column == "size" else "left")
    for segment in manifest.segments:
        size = sum((manifest.root / f.path).stat().st_size for f in segment.files)
        table.add_row(
            segment.tier,
            segment.executor,
            _names(tuple(v.name for v in segment.inputs)),
            _names(tuple(v.name for v in segment.outputs)),
            ", ".join(f.path for f in segment.files),
            f"{size / 1e3:.1f} kB",
        )
    return table


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
) -> None:
    """Build PLAN.json's segments into per-tier files and a manifest in --out."""
    if executor not in ("auto", "onnx", "torch"):
        raise ArtifactError(f"--executor {executor!r}: choose auto, onnx or torch")
    the_plan = Plan.load(plan_file)
    model, inputs = resolve_model(
        the_plan.model, input_shape=parse_shape(input_shape), weights=weights
    )
    manifest = build(model, the_plan, inputs, out, executor=cast(ExecutorChoice, executor))
    console.print(manifest_table(manifest))
