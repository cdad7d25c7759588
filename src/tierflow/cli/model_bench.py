"""The model bench behind ``tierflow bench`` (models without exits) and the demo.

Profiles each tier in its CPU budget, plans (compressed too, when codec or variant
options are given), deploys plan and baselines on the testbed and measures them; see
:mod:`tierflow.measure.testbed_bench`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from tierflow.cli.app import console, err_console
from tierflow.cli.commands_plan import read_raw_topology
from tierflow.cli.exit_bench import RUN_PREFIX
from tierflow.cli.loading import LoadedModel, load_model, measured_tier_profiles
from tierflow.compress.bottleneck_run import BottleneckConfig
from tierflow.data import load_dataset
from tierflow.data.calibration import calibration_batch
from tierflow.measure.bench_report import markdown_report, plot_measured, tiers_label
from tierflow.measure.testbed_bench import (
    BenchSettings,
    CompressionChoice,
    ConfigResult,
    LabelledSamples,
    results_to_json,
    run_bench,
)
from tierflow.plan.codec_options import CodecOptions
from tierflow.plan.sweep import SweepSpec
from tierflow.plan.variant_options import VariantOptions
from tierflow.topology import topology_from_dict
from tierflow.train.run_dir import RunConfig

DEFAULT_ACCURACY_SAMPLES = 200
BOTTLENECK_PREFIX = "bottleneck:"


def compression_inputs(
    model: str,
    *,
    codecs: Path | None,
    variants: Path | None,
    data: str | None,
    samples: int | None,
    max_accuracy_drop_pp: float,
) -> dict[str, Any]:
    """The model bench's ``compression`` and ``labelled`` arguments from CLI options.

    Labelled data comes from ``data``, else from a ``run:DIR``'s or ``bottleneck:DIR``'s
    own dataset; variants need it (calibration of int8 tiers), plain plans only use it for accuracy.
    """
    dataset = data
    if dataset is None and model.startswith(RUN_PREFIX):
        dataset = RunConfig.load(Path(model[len(RUN_PREFIX) :])).dataset
    if dataset is None and model.startswith(BOTTLENECK_PREFIX):
        dataset = BottleneckConfig.load(Path(model[len(BOTTLENECK_PREFIX) :])).dataset or None
    if variants is not None and dataset is None:
        raise typer.BadParameter(
            "--variants builds int8 tiers, which need calibration samples: give --data",
            param_hint="--data",
        )
    labelled = None
    calibration = None
    if dataset is not None:
        splits = load_dataset(dataset)
        count = samples or DEFAULT_ACCURACY_SAMPLES
        labelled = LabelledSamples(splits.test.x[:count], splits.test.y[:count])
        calibration = calibration_batch(splits.train)
    compression = None
    if codecs is not None or variants is not None:
        compression = CompressionChoice(
            max_accuracy_drop_pp,
            codecs=None if codecs is None else CodecOptions.load(codecs),
            variants=None if variants is None else VariantOptions.load(variants),
            calibration=calibration,
        )
    return {"compression": compression, "labelled": labelled}


def run_testbed_bench(
    model: str,
    topology: Path,
    *,
    overrides: list[str],
    sweep_spec: str | None,
    settings: BenchSettings,
    out: Path,
    emulate: bool,
    profile_runs: int,
    input_shape: str | None,
    quiet: bool,
    compression: CompressionChoice | None = None,
    labelled: LabelledSamples | None = None,
    baselines: bool = True,
    loaded: LoadedModel | None = None,
) -> list[ConfigResult]:
    """Profile each tier in its budget, plan, deploy, measure; write report.md/.json/.png.

    ``loaded``: the model ``model`` names, already resolved at ``input_shape`` by the
    caller (:func:`~tierflow.cli.loading.loaded_from`); otherwise it is loaded here.
    """
    say = err_console.print if quiet else console.print
    raw = read_raw_topology(topology, overrides)
    the_topology = topology_from_dict(raw, source=str(topology))
    if loaded is None:
        loaded = load_model(model, input_shape=input_shape)
    profiles = measured_tier_profiles(
        model, the_topology, runs=profile_runs, say=say, input_shape=input_shape
    )
    results = run_bench(
        loaded.module,
        loaded.inputs,
        loaded.graph,
        raw,
        profiles,
        sweep=SweepSpec.parse(sweep_spec) if sweep_spec else None,
        settings=settings,
        emulate=emulate,
        progress=say,
        compression=compression,
        labelled=labelled,
        baselines=baselines,
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(results_to_json(results), indent=2) + "\n")
    (out / "report.md").write_text(markdown_report(model, str(topology), results))
    plot_measured(results, out / "latency.png", title=f"{model} on {topology.stem}")
    return results


def bench_table(results: list[ConfigResult]) -> Table:
    table = Table(title="measured on the testbed (p50 over sequential requests)")
    for column in ("point", "config", "tiers", "p50 ms", "p95 ms", "rps", "kB/request up+down",
                   "predicted ms", "measured/predicted"):  # fmt: skip
        table.add_column(
            column, justify="left" if column in {"point", "config", "tiers"} else "right"
        )
    for r in results:
        point = ", ".join(f"{v:g}" for v in (r.sweep or {}).values()) or "-"
        same = f" (= {r.same_deployment_as})" if r.same_deployment_as else ""
        table.add_row(
            point, r.name + same, tiers_label(r), f"{r.p50_ms:.1f}", f"{r.p95_ms:.1f}",
            f"{r.throughput_rps:.1f}", f"{sum(r.bytes_per_link.values()) / 1e3:.1f}",
            f"{r.predicted_ms:.1f}", f"{r.measured_over_predicted:.2f}",
        )  # fmt: skip
    return table
