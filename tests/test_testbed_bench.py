"""Profiles inside a tier's budget, ONNX Runtime calibration, and the testbed bench."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import tierflow
from tierflow.cli.app import app
from tierflow.measure.testbed_bench import BenchSettings, run_bench
from tierflow.profile.estimate import estimate_profile
from tierflow.profile.in_tier import profile_in_tier
from tierflow.profile.onnx_calibration import calibrate_to_onnxruntime
from tierflow.testbed.cpu import unavailable_reason
from tierflow.topology import topology_from_dict

TWO_TIERS = {
    "tiers": [
        {"name": "phone", "kind": "device", "compute": {"speed": 0.5}},
        {"name": "cloud", "kind": "cloud", "compute": {"speed": 1.0}},
    ],
    "links": [{"from": "phone", "to": "cloud", "bandwidth_mbps": 200, "rtt_ms": 2}],
}


@pytest.fixture(scope="module")
def lenet():
    model, inputs = tierflow.resolve_model("zoo:lenet")
    return model, inputs, tierflow.capture(model, inputs, name="zoo:lenet")


def test_calibration_scales_every_node_by_one_factor(lenet):
    model, inputs, _ = lenet
    profile = tierflow.profile_model(
        tierflow.trace(model, inputs), inputs, model_name="zoo:lenet", runs=3, progress=False
    )
    calibrated = calibrate_to_onnxruntime(profile, model, inputs, threads=1, runs=3)
    scale = calibrated.meta["onnxruntime_scale"]
    assert calibrated.meta["executor"] == "onnxruntime"
    assert scale > 0
    for name, ms in profile.node_ms.items():
        assert calibrated.node_ms[name] == pytest.approx(ms * scale)


def test_profile_in_a_tier_covers_every_node_and_matches_the_served_model(lenet):
    _, _, graph = lenet
    topology = topology_from_dict(TWO_TIERS)
    profile = profile_in_tier("zoo:lenet", topology, "phone", executor="onnx", runs=3)
    profile.check_matches(graph)
    assert profile.machine == "phone"
    assert profile.meta["tier_speed"] == 0.5
    assert profile.meta["throttled"] is (unavailable_reason() is None)
    # Node times are calibrated so that compute plus the service stack is what a request
    # to the served model took (Note [Throttled profiles]).
    served = profile.meta["served_whole_ms"]
    assert profile.sum_ms == pytest.approx(profile.whole_ms)
    assert profile.sum_ms + profile.meta["service_ms"] == pytest.approx(served, rel=1e-6) or (
        profile.sum_ms == pytest.approx(0.05 * served)
    )


def test_bench_measures_the_plan_and_every_all_on_one_tier_baseline(lenet):
    model, inputs, graph = lenet
    estimate = estimate_profile(graph)
    profiles = {"phone": estimate, "cloud": estimate}
    settings = BenchSettings(requests=4, min_requests=2, seconds_per_config=2.0, warmup=1)
    results = run_bench(model, inputs, graph, TWO_TIERS, profiles, sweep=None, settings=settings)
    names = {r.name for r in results}
    assert names == {"plan", "all-phone", "all-cloud"}
    by_name = {r.name: r for r in results}
    cloud = by_name["all-cloud"]
    # Raw offload sends the input up and the output back, each request.
    input_bytes = inputs[0].numel() * inputs[0].element_size()
    assert cloud.bytes_per_link["phone->cloud"] >= input_bytes
    assert by_name["all-phone"].bytes_per_link["phone->cloud"] == 0
    for result in results:
        assert result.p50_ms > 0
        assert result.p95_ms >= result.p50_ms
        assert result.throughput_rps > 0
        assert result.measured_over_predicted > 0


@pytest.mark.slow
def test_bench_cli_writes_json_markdown_and_the_figure(tmp_path: Path, monkeypatch):
    import tierflow.cli.commands_bench  # noqa: F401  (registers the command)

    monkeypatch.chdir(tmp_path)
    topology = tmp_path / "two.yaml"
    topology.write_text(json.dumps(TWO_TIERS))  # JSON is YAML
    result = CliRunner().invoke(
        app,
        ["bench", "zoo:lenet", "--topology", str(topology), "--requests", "3", "--seconds", "1",
         "--profile-runs", "2", "--sweep", "links.0.bandwidth_mbps=20,200", "--json",
         "--out", str(tmp_path / "out")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    configs = json.loads(result.stdout)["configs"]
    assert {c["name"] for c in configs} == {"plan", "all-phone", "all-cloud"}
    keys = {"name", "sweep", "p50_ms", "p95_ms", "throughput_rps", "bytes_per_link"}
    keys |= {"predicted_ms", "measured_over_predicted"}
    for config in configs:
        assert set(config) >= keys
    assert (tmp_path / "out" / "report.md").read_text().startswith("# tierflow bench")
    assert (tmp_path / "out" / "latency.png").stat().st_size > 10_000


def test_a_plan_with_codecs_is_its_own_deployment_when_it_compresses(lenet):
    from tierflow.measure.testbed_bench import CompressionChoice, configurations, deployment_key
    from tierflow.plan.codec_options import CodecCandidate, CodecOptions

    _, _, graph = lenet
    estimate = estimate_profile(graph)
    slow = json.loads(json.dumps(TWO_TIERS))
    slow["links"][0]["bandwidth_mbps"] = 0.5  # the raw input takes ~50 ms to cross
    # ... and the phone is far too slow to keep it: 1 s per node.
    phone = dataclasses.replace(estimate, node_ms=dict.fromkeys(estimate.node_ms, 1000.0))
    options = CodecOptions(
        (CodecCandidate("x", "int8+zstd", 0.1, encode_ms=0.01, decode_ms=0.01, accuracy_drop_pp=0),)
    )
    configs = configurations(
        graph,
        topology_from_dict(slow),
        {"phone": phone, "cloud": estimate},
        CompressionChoice(0.5, codecs=options),
    )

    assert configs["plan+codecs"].link_codecs == {"phone": {"x": "int8+zstd"}}
    assert configs["plan+codecs"].predicted.latency_ms < configs["plan"].predicted.latency_ms
    assert deployment_key(configs["plan+codecs"]) != deployment_key(configs["plan"])


def test_a_baseline_the_tier_cannot_hold_is_left_out(lenet):
    from tierflow.measure.testbed_bench import configurations

    _, _, graph = lenet
    estimate = estimate_profile(graph)
    small = json.loads(json.dumps(TWO_TIERS))
    small["tiers"][0]["memory_mb"] = 0.05  # holds the input, not the model's weights

    configs = configurations(
        graph, topology_from_dict(small), {"phone": estimate, "cloud": estimate}
    )

    assert set(configs) == {"plan", "all-cloud"}


def test_a_plan_with_an_int8_tier_is_its_own_deployment(lenet):
    from tierflow.measure.testbed_bench import CompressionChoice, configurations, deployment_key
    from tierflow.plan.variant_options import VariantOption, VariantOptions

    _, _, graph = lenet
    estimate = estimate_profile(graph)
    slow = json.loads(json.dumps(TWO_TIERS))
    slow["links"][0]["bandwidth_mbps"] = 0.5  # sending the raw input costs ~50 ms ...
    # ... and the phone takes 10 ms per node in fp32, 1 ms in the (measured) int8 variant.
    phone = dataclasses.replace(estimate, node_ms=dict.fromkeys(estimate.node_ms, 10.0))
    fast = {n.name: 0.1 for n in graph.nodes}
    options = VariantOptions(graph.model, (VariantOption("int8-static", 0.2, fast, fast),))
    configs = configurations(
        graph,
        topology_from_dict(slow),
        {"phone": phone, "cloud": estimate},
        CompressionChoice(0.5, variants=options),
    )

    compressed = configs["plan+compressed"]
    assert compressed.tier_variants == {"phone": "int8-static"}
    assert compressed.compression_drop_pp == pytest.approx(0.2)
    assert compressed.predicted.latency_ms < configs["plan"].predicted.latency_ms
    assert deployment_key(compressed) != deployment_key(configs["plan"])


def test_baselines_can_be_left_out(lenet):
    from tierflow.measure.testbed_bench import configurations

    _, _, graph = lenet
    estimate = estimate_profile(graph)
    profiles = {"phone": estimate, "cloud": estimate}
    topology = topology_from_dict(TWO_TIERS)
    assert set(configurations(graph, topology, profiles)) == {"plan", "all-phone", "all-cloud"}
    assert set(configurations(graph, topology, profiles, baselines=False)) == {"plan"}


def test_the_report_names_each_tiers_variant_and_the_codecs_it_sends():
    from tierflow.measure.bench_report import tiers_label
    from tierflow.measure.testbed_bench import ConfigResult

    def result(**extra):
        return ConfigResult("p", None, 1, 1, 1, {}, 1, 1, 1, tiers_used=("cam", "edge"), **extra)

    assert tiers_label(result()) == "cam+edge"
    compressed = result(variants={"edge": "int8-static"}, link_codecs={"cam": {"x": "fp16"}})
    assert tiers_label(compressed) == "cam [sends x as fp16] + edge (int8-static)"


def test_the_summary_leaves_out_the_baseline_part_when_there_are_no_baselines():
    from tierflow.measure.bench_report import speedup_summary
    from tierflow.measure.testbed_bench import ConfigResult

    plan = ConfigResult("plan", None, 40.0, 40, 1, {}, 40, 1, 1, accuracy=0.975)
    smaller = ConfigResult("plan+compressed", None, 10.0, 10, 1, {}, 10, 1, 1, accuracy=0.975)
    summary = speedup_summary([plan, smaller])
    assert summary == (
        "Compressed plan against the uncompressed plan (measured p50): -: 4.00× "
        "(accuracy 97.5% → 97.5%)"
    )
