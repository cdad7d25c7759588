"""The compression part of ``tierflow demo``: the planner's compressed plan, run for real.

The demo's trained LeNet-style model (:mod:`tierflow.cli.demo_exits`) is measured for
codecs at every cut and for int8 variants per stretch, planned with and without them on
thin camera uplinks, and both plans (with the all-on-one-tier baselines) are deployed on
the testbed, timed, and sent 200 held-out digits each for their accuracy.

Note [Eight digits per request]
    A request carries 8 digits, as a camera sending a short burst would. One digit costs
    the fp32 model about 1.3 ms of host CPU and the int8 model about 0.4 ms, so on the
    camera (speed 0.1: a CFS quota of 1 ms per 10 ms period) a single digit usually fits
    in what is left of the period and runs at host speed, whatever its variant: the quota
    caps CPU per period but cannot slow a request shorter than the quota (docs/
    benchmarks.md, "On the testbed"). With 8 digits a request needs several periods in
    either variant, so the emulated camera is slowed as the topology says and the
    measured gap between the variants is the gap a device at that speed would show.
"""

from __future__ import annotations

from pathlib import Path

from tierflow.cli.app import console
from tierflow.cli.demo_exits import DEMO_DATA, trained_demo_run
from tierflow.cli.loading import loaded_from
from tierflow.cli.model_bench import bench_table, run_testbed_bench
from tierflow.compress.codec_options_measure import DEFAULT_OPTION_CODECS, codec_options_for
from tierflow.compress.variant_options_measure import variant_options_for
from tierflow.data import load_dataset
from tierflow.data.calibration import calibration_batch
from tierflow.measure.bench_report import speedup_summary
from tierflow.measure.testbed_bench import (
    BenchSettings,
    CompressionChoice,
    ConfigResult,
    LabelledSamples,
)
from tierflow.models import resolve_model

DEMO_REQUEST_SHAPE = "8,1,28,28"  # Note [Eight digits per request]
DEMO_UPLINKS = "links.0.bandwidth_mbps=1,5"
DEMO_BUDGET_PP = 0.5
DEMO_ACCURACY_SAMPLES = 200
DEMO_OPTION_SAMPLES = 240  # validation digits per codec measurement (30 requests of 8)
DEMO_SETTINGS = BenchSettings(requests=10, min_requests=3, seconds_per_config=3.0, warmup=1)


def compress_demo(topology: Path, out: Path, *, emulate: bool) -> list[ConfigResult]:
    """Measure codec and variant options, then bench the plan with and without them."""
    run_dir = trained_demo_run()
    spec = f"run:{run_dir}"
    shape = tuple(int(d) for d in DEMO_REQUEST_SHAPE.split(","))
    model, (example,) = resolve_model(spec, input_shape=shape)
    splits = load_dataset(DEMO_DATA)
    console.print(f"measuring codec options ({', '.join(DEFAULT_OPTION_CODECS)}) at every cut")
    codecs = codec_options_for(model, example, splits, limit=DEMO_OPTION_SAMPLES)
    console.print("measuring int8 variants per stretch of the model")
    variants = variant_options_for(model, example, splits, model_spec=spec, runs=30)
    out.mkdir(parents=True, exist_ok=True)
    codecs.save(out / "codecs.json")
    variants.save(out / "variants.json")
    test = splits.test
    results = run_testbed_bench(
        spec,
        topology,
        overrides=[],
        sweep_spec=DEMO_UPLINKS,
        settings=DEMO_SETTINGS,
        out=out,
        emulate=emulate,
        profile_runs=5,
        input_shape=DEMO_REQUEST_SHAPE,
        quiet=False,
        compression=CompressionChoice(
            DEMO_BUDGET_PP,
            codecs=codecs,
            variants=variants,
            calibration=calibration_batch(splits.train, like=example),
        ),
        labelled=LabelledSamples(
            test.x[:DEMO_ACCURACY_SAMPLES], test.y[:DEMO_ACCURACY_SAMPLES], batch=8
        ),
        # Part 2 of the demo already compares plans with the all-on-one-tier baselines;
        # here the comparison is compressed against uncompressed, and leaving the
        # baselines out keeps `make demo` short.
        baselines=False,
        # The trained run loaded once: `run:DIR` would load and hash-check it again.
        loaded=loaded_from(spec, model, (example,)),
    )
    console.print(bench_table(results))
    console.print(speedup_summary(results))
    return results
