"""CLI glue for benchmarking a trained early-exit run on the testbed."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from tierflow.cli.app import console, err_console
from tierflow.cli.commands_plan import read_raw_topology
from tierflow.cli.loading import loaded_from, measured_tier_profiles
from tierflow.data import load_dataset
from tierflow.measure.exit_bench import ExitConfigResult, exit_results_to_json, run_exit_bench
from tierflow.measure.exit_cpu import CpuExitResult, measure_cpu_speedup
from tierflow.measure.exit_report import exit_markdown
from tierflow.plan.exit_options import ExitOptions
from tierflow.plan.sweep import SweepSpec
from tierflow.topology import topology_from_dict
from tierflow.train.run_dir import EXITS_FILE, RunConfig, load_exit_model

RUN_PREFIX = "run:"


def is_exit_run(spec: str) -> bool:
    """Whether ``spec`` names a trained run directory that has exits."""
    return spec.startswith(RUN_PREFIX) and (Path(spec[len(RUN_PREFIX) :]) / EXITS_FILE).is_file()


def run_exit_testbed_bench(
    spec: str,
    topology: Path,
    *,
    overrides: list[str],
    sweep_spec: str | None,
    data: str | None,
    samples: int | None,
    max_accuracy_drop_pp: float | None,
    out: Path,
    emulate: bool,
    profile_runs: int,
    quiet: bool,
) -> ExitBenchOutcome:
    """Profile the backbone in each tier, plan with and without exits, deploy, measure.

    Then measures the same exits on one CPU in this process (BranchyNet's setting, see
    :mod:`tierflow.measure.exit_cpu`). Writes ``report.md`` and ``bench.json`` (the
    ``--json`` document) into ``out``.
    """
    say = err_console.print if quiet else console.print
    run_dir = Path(spec[len(RUN_PREFIX) :])
    config = RunConfig.load(run_dir)
    options = ExitOptions.load(run_dir / EXITS_FILE)
    exit_model, inputs = load_exit_model(run_dir)
    # The backbone of the run loaded once: `run:DIR` would load and hash-check it again.
    loaded = loaded_from(spec, exit_model.backbone, inputs)
    raw = read_raw_topology(topology, overrides)
    the_topology = topology_from_dict(raw, source=str(topology))
    profiles = measured_tier_profiles(spec, the_topology, runs=profile_runs, say=say)
    test = load_dataset(data or config.dataset).test
    results = run_exit_bench(
        loaded.module,
        dict(exit_model.heads.items()),
        loaded.inputs,
        loaded.graph,
        options,
        raw,
        profiles,
        test,
        sweep=SweepSpec.parse(sweep_spec) if sweep_spec else None,
        samples=samples,
        max_accuracy_drop_pp=max_accuracy_drop_pp,
        emulate=emulate,
        progress=say,
    )
    say("measuring the exits on one CPU in this process (no sockets), every test input")
    chosen = next((r for r in results if r.name == "exit-aware" and r.exits), None)
    thresholds = dict(config.thresholds) if chosen is None else dict(chosen.thresholds)
    nodes = {spec_.name: spec_.node for spec_ in config.exits}
    cpu = measure_cpu_speedup(
        loaded.module,
        dict(exit_model.heads.items()),
        loaded.inputs,
        loaded.graph,
        {name: (nodes[name], threshold) for name, threshold in thresholds.items()},
        config.policy,
        test,
    )
    outcome = ExitBenchOutcome(results, cpu)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(outcome.to_json(), indent=2) + "\n")
    (out / "report.md").write_text(exit_markdown(spec, str(topology), results, cpu))
    return outcome


@dataclass(frozen=True)
class ExitBenchOutcome:
    """The testbed configurations and the one-CPU comparison of an exit run."""

    configs: list[ExitConfigResult]
    cpu: CpuExitResult

    def to_json(self) -> dict[str, Any]:
        return {**exit_results_to_json(self.configs), "cpu": self.cpu.to_dict()}


def exit_table(results: list[ExitConfigResult]) -> Table:
    table = Table(title="early exits measured on the testbed (every test input once)")
    columns = ("point", "config", "exits", "accuracy", "answered at", "mean ms", "p95 ms",
               "predicted ms", "bytes/request", "speed-up")  # fmt: skip
    for column in columns:
        left = column in {"point", "config", "exits", "answered at"}
        table.add_column(column, justify="left" if left else "right")
    for r in results:
        point = ", ".join(f"{v:g}" for v in (r.sweep or {}).values()) or "-"
        rates = ", ".join(f"{name} {rate:.0%}" for name, rate in r.exit_rates.items())
        speedup = "-" if r.speedup_vs_no_exit is None else f"{r.speedup_vs_no_exit:.2f}×"
        name = r.name + (f" (= {r.same_deployment_as})" if r.same_deployment_as else "")
        table.add_row(
            point, name, ", ".join(r.exits) or "-", f"{r.accuracy:.2%}", rates,
            f"{r.mean_ms:.2f}", f"{r.p95_ms:.2f}", f"{r.predicted_ms:.2f}",
            f"{sum(r.bytes_per_link.values()):.0f}", speedup,
        )  # fmt: skip
    return table
