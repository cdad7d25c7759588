"""``tierflow bench-fusion``: DDNN-style multi-device fusion against raw offload, measured."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tierflow.cli.app import app, console, err_console, reports_errors
from tierflow.fusion.bench import DEFAULT_CACHE, FusionBenchReport, ModelSettings, run_fusion_bench
from tierflow.fusion.model import check_fusion_mode
from tierflow.fusion.training import TrainSettings


def fusion_table(report: FusionBenchReport) -> Table:
    table = Table(title=f"{report.devices} devices, {report.fusion} fusion, measured on loopback")
    for column in ("measure", "value"):
        table.add_column(column, justify="left" if column == "measure" else "right")
    rows = [
        ("test samples (batch per request)", f"{report.samples} ({report.batch})"),
        ("accuracy, all devices", f"{report.accuracy_all:.2%}"),
        *(
            (f"accuracy, device {i} down", f"{acc:.2%}")
            for i, acc in report.accuracy_missing.items()
        ),
        ("edge exit rate", f"{report.edge_exit_rate:.1%}"),
        ("upward payload B/sample: fusion | raw", _pair(report, "payload")),
        ("upward wire B/sample: fusion | raw", _pair(report, "wire")),
        ("payload ratio (raw / fusion)", f"{report.payload_ratio:.1f}x"),
        ("wire ratio (raw / fusion)", f"{report.wire_ratio:.1f}x"),
        ("cloud-only (raw offload) accuracy", f"{report.cloud_only_accuracy:.2%}"),
        ("accuracy drop vs cloud-only", f"{report.accuracy_drop_pp:+.2f} pp"),
    ]
    for measure, value in rows:
        table.add_row(measure, value)
    return table


def _pair(report: FusionBenchReport, kind: str) -> str:
    ours = getattr(report, f"{kind}_bytes_per_sample")
    raw = getattr(report, f"raw_{kind}_bytes_per_sample")
    return f"{ours:.1f} | {raw:.1f}"


@app.command("bench-fusion")
@reports_errors
def bench_fusion(
    devices: Annotated[int, typer.Option(help="End devices (quadrant views: 4)")] = 4,
    fusion: Annotated[str, typer.Option(help="Edge fusion: max, mean or concat")] = "concat",
    requests: Annotated[
        int | None, typer.Option(min=1, help="Fusion requests per run (default: whole test split)")
    ] = None,
    batch: Annotated[int, typer.Option(min=1, help="Samples per fusion request")] = 20,
    wait_ms: Annotated[
        float, typer.Option(min=0.0, help="Edge wait for the other devices after the first")
    ] = 100.0,
    epochs: Annotated[int, typer.Option(min=1, help="Training epochs (if not cached)")] = 20,
    cache: Annotated[Path, typer.Option(help="Where trained bundles are kept")] = DEFAULT_CACHE,
    out: Annotated[Path, typer.Option(help="Directory for fusion.json")] = Path("reports/bench"),
    json_out: Annotated[bool, typer.Option("--json", help="Print the results as JSON")] = False,
) -> None:
    """Train (or reuse) the fusion model, serve it on loopback, and compare with raw offload."""
    settings = ModelSettings(
        mode=check_fusion_mode(fusion),
        views=devices,
        train=replace(TrainSettings(), epochs=epochs),
    )
    if not json_out:
        err_console.print(f"bundle cache: {cache / settings.key}")
    report = run_fusion_bench(
        settings=settings, requests=requests, batch=batch, wait_ms=wait_ms, cache=cache
    )
    document = report.to_dict()
    out.mkdir(parents=True, exist_ok=True)
    (out / "fusion.json").write_text(json.dumps(document, indent=2) + "\n")
    if json_out:
        print(json.dumps(document, indent=2))
        return
    console.print(fusion_table(report))
    for target, met in report.targets_met.items():
        console.print(f"{target}: {'met' if met else 'MISSED'}")
    console.print(f"written to {out / 'fusion.json'}")
