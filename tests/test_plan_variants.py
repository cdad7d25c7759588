"""Compression-aware planning: a variant per tier, codecs per link, one optimal placement."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from test_plan_codecs import codec_choices, with_random_codecs
from tierflow.errors import CompressionError, InfeasiblePlanError, PlanError
from tierflow.graph import capture
from tierflow.models import resolve_model
from tierflow.plan import Plan, plan
from tierflow.plan.codec_options import CodecCandidate, CodecOptions
from tierflow.plan.cost_model import CostModel, _replace
from tierflow.plan.evaluate import codec_drop_pp, evaluate, link_weights
from tierflow.plan.objective import Objective
from tierflow.plan.variant_options import VariantOption, VariantOptions
from tierflow.plan.variant_planner import (
    VariantArrays,
    plan_compressed,
    solve_compressed,
    with_variants,
)
from tierflow.topology import load_topology

from plan_instances import monotone_assignments, random_cost_model

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ROOT = Path(__file__).parent.parent
THREE_TIERS = ROOT / "examples" / "topologies" / "camera-gateway-cloud.yaml"


# -- brute force over placements × variants per tier (× codecs) -------------------------------
def random_variants(rng: np.random.Generator, n_nodes: int) -> list[VariantArrays]:
    """One or two variants: per node a speed ratio in [0.2, 1.5] and a size ratio < 1,
    and a fixed cost per segment (0 for some)."""
    return [
        VariantArrays(
            f"v{i}",
            rng.uniform(0.2, 1.5, n_nodes),
            rng.uniform(0.2, 1.0, n_nodes),
            float(rng.choice([0.0, rng.uniform(0.0, 1.5)])),
            float(rng.choice([0.0, rng.uniform(0.0, 3.0)])),
        )
        for i in range(int(rng.integers(1, 3)))
    ]


def brute_force(
    cost: CostModel,
    variants: list[VariantArrays],
    objective: Objective,
    budget: float,
    speeds: np.ndarray,
) -> float | None:
    """Lowest objective over every variant choice × placement × codec choice in budget."""
    weights = link_weights(cost)
    best: float | None = None
    for choice in itertools.product(range(-1, len(variants)), repeat=cost.n_tiers):
        varied = with_variants(cost, variants, choice, speeds)
        for tiers in monotone_assignments(varied):
            used = set(tiers.tolist())
            drop = sum(variants[k].drop_pp for t, k in enumerate(choice) if k >= 0 and t in used)
            for codecs in codec_choices(varied, tiers) if varied.n_codecs else [None]:
                total = drop + codec_drop_pp(varied, codecs)
                if total > budget + 1e-9:
                    continue
                prediction = evaluate(varied, tiers, codecs)
                if prediction.feasible:
                    value = prediction.cost(objective, weights)
                    best = value if best is None else min(best, value)
    return best


def check_against_brute_force(
    cost: CostModel, variants: list[VariantArrays], spec: str, budget: float, speeds: np.ndarray
) -> None:
    objective = Objective.parse(spec)
    expected = brute_force(cost, variants, objective, budget, speeds)
    if expected is None:
        with pytest.raises(InfeasiblePlanError):
            solve_compressed(cost, variants, objective, max_accuracy_drop_pp=budget, speeds=speeds)
        return
    found = solve_compressed(cost, variants, objective, max_accuracy_drop_pp=budget, speeds=speeds)
    prediction = evaluate(found.cost, found.solution.tiers, found.solution.codecs)
    assert prediction.feasible, prediction.violations
    assert found.drop_pp <= budget + 1e-9
    value = prediction.cost(objective, link_weights(cost))
    assert value == pytest.approx(expected, rel=1e-6, abs=1e-6)


@SETTINGS
@given(
    seed=st.integers(0, 2**31 - 1),
    n_nodes=st.integers(2, 5),
    n_tiers=st.integers(2, 3),
    objective=st.sampled_from(["latency", "energy", "throughput", "latency=1,bytes=0.5"]),
    budget=st.sampled_from([0.0, 0.5, 1.0, 3.0]),
    memory=st.booleans(),
)
def test_planner_with_variants_matches_brute_force(
    seed, n_nodes, n_tiers, objective, budget, memory
):
    rng = np.random.default_rng(seed)
    cost = random_cost_model(rng, n_nodes=n_nodes, n_tiers=n_tiers, memory=memory)
    speeds = np.sort(rng.uniform(0.2, 8.0, n_tiers))
    check_against_brute_force(cost, random_variants(rng, n_nodes), objective, budget, speeds)


def _codec_options(cost: CostModel) -> tuple[CostModel, CodecOptions, np.ndarray]:
    """Random codec candidates of ``cost`` as CodecOptions (plus the host-speed factors)."""
    options = CodecOptions(
        tuple(
            CodecCandidate(
                cost.node_names[int(node)],
                spec,
                float(ratio),
                float(encode[0]),
                float(decode[0]),
                float(drop),
            )
            for node, spec, ratio, encode, decode, drop in zip(
                cost.codec_node,
                cost.codec_specs,
                cost.codec_ratio,
                cost.codec_encode_ms,
                cost.codec_decode_ms,
                cost.codec_drop_pp,
                strict=True,
            )
        )
    )
    speeds = np.ones(cost.n_tiers)  # encode/decode times the same on every tier
    plain = _replace(
        cost,
        codec_specs=(),
        codec_node=np.zeros(0, dtype=np.int64),
        codec_ratio=np.zeros(0),
        codec_encode_ms=np.zeros((0, 0)),
        codec_decode_ms=np.zeros((0, 0)),
        codec_drop_pp=np.zeros(0),
        max_codec_drop_pp=None,
    )
    return plain, options, speeds


@SETTINGS
@given(
    seed=st.integers(0, 2**31 - 1),
    n_nodes=st.integers(2, 4),
    n_tiers=st.integers(2, 3),
    budget=st.sampled_from([0.0, 0.7, 2.0]),
)
def test_planner_with_variants_and_codecs_matches_brute_force(seed, n_nodes, n_tiers, budget):
    rng = np.random.default_rng(seed)
    cost = with_random_codecs(
        random_cost_model(rng, n_nodes=n_nodes, n_tiers=n_tiers), rng, budget=budget
    )
    # Codec times equal on every tier, so that CodecOptions (host times) reproduce them.
    cost = _replace(
        cost,
        codec_encode_ms=np.repeat(cost.codec_encode_ms[:, :1], n_tiers, axis=1),
        codec_decode_ms=np.repeat(cost.codec_decode_ms[:, :1], n_tiers, axis=1),
    )
    variants = random_variants(rng, n_nodes)
    objective = Objective.parse("latency")
    expected = brute_force(cost, variants, objective, budget, np.ones(n_tiers))
    plain, options, speeds = _codec_options(cost)
    found = solve_compressed(
        plain,
        variants,
        objective,
        max_accuracy_drop_pp=budget,
        codec_options=options,
        speeds=speeds,
    )
    prediction = evaluate(found.cost, found.solution.tiers, found.solution.codecs)
    assert expected is not None
    assert found.drop_pp <= budget + 1e-9
    assert prediction.cost(objective, link_weights(cost)) == pytest.approx(
        expected, rel=1e-6, abs=1e-6
    )


# -- behaviour on small hand-made instances ----------------------------------------------------
def two_tier_chain(*, device_ms: float, memory_bytes: float = np.inf) -> CostModel:
    """input → a → b on a slow device and a cloud behind a thin link."""
    rng = np.random.default_rng(0)
    cost = random_cost_model(rng, n_nodes=3, n_tiers=2, power=False)
    return _replace(
        cost,
        edge_src=np.array([0, 1]),
        edge_dst=np.array([1, 2]),
        output_nodes=np.array([2]),
        compute_ms=np.array([[0.0, 0.0], [device_ms, 1.0], [device_ms, 1.0]]),
        out_bytes=np.array([1e6, 1e3, 10.0]),
        param_bytes=np.array([0.0, 4e6, 4e6]),
        work_bytes=np.array([1e6, 1e6 + 1e3, 1e3 + 10]),
        up_ms_per_byte=np.array([1e-4]),  # 100 ms for the raw input
        down_ms_per_byte=np.array([1e-4]),
        rtt_ms=np.array([1.0]),
        service_ms=np.zeros(2),
        memory_bytes=np.array([memory_bytes, np.inf]),
        private_nodes=np.zeros(0, dtype=np.int64),
        allowed=np.array([[True, False], [True, True], [True, True]]),
    )


INT8 = VariantArrays("int8", np.full(3, 0.25), np.full(3, 0.25), 0.3)


def test_a_fast_variant_within_the_budget_is_chosen_for_the_slow_tier():
    chain = two_tier_chain(device_ms=40.0)
    # Room for one int8 tier: the slow device takes it, runs a and sends 1 kB up.
    found = solve_compressed(chain, [INT8], Objective.parse("latency"), max_accuracy_drop_pp=0.5)
    assert found.variants == (0, -1)
    assert found.solution.tiers.tolist() == [0, 0, 1]
    assert found.drop_pp == pytest.approx(0.3)
    # Room for two: the cloud runs int8 too, and both drops are counted.
    found = solve_compressed(chain, [INT8], Objective.parse("latency"), max_accuracy_drop_pp=1.0)
    assert found.variants == (0, 0)
    assert found.drop_pp == pytest.approx(0.6)


def test_a_budget_below_the_variants_drop_keeps_fp32():
    found = solve_compressed(
        two_tier_chain(device_ms=40.0), [INT8], Objective.parse("latency"), max_accuracy_drop_pp=0.2
    )
    assert found.variants == (-1, -1)
    assert found.drop_pp == 0.0


def test_a_variant_on_a_tier_that_runs_nothing_is_not_reported():
    # A fast device keeps everything; the cloud's variant would be moot and is dropped.
    found = solve_compressed(
        two_tier_chain(device_ms=0.1), [INT8], Objective.parse("latency"), max_accuracy_drop_pp=1
    )
    assert found.variants[1] == -1


def test_smaller_weights_let_a_memory_limited_device_keep_the_layers():
    # 8 MB of fp32 weights do not fit in 3 MB; int8's 2 MB do.
    limited = two_tier_chain(device_ms=1.0, memory_bytes=3e6 + 1.1e6)
    without = solve_compressed(limited, [], Objective.parse("latency"), max_accuracy_drop_pp=1)
    assert without.solution.tiers.tolist() == [0, 1, 1]  # the raw input crosses
    found = solve_compressed(limited, [INT8], Objective.parse("latency"), max_accuracy_drop_pp=1)
    assert found.solution.tiers.tolist() == [0, 0, 0]
    assert found.variants[0] == 0


# -- options documents ---------------------------------------------------------------------
def test_variant_options_round_trip_through_json(tmp_path):
    options = VariantOptions(
        "zoo:lenet", (VariantOption("int8-static", 0.2, {"conv1": 0.3}, {"conv1": 0.26}),)
    )
    options.save(tmp_path / "variants.json")
    assert VariantOptions.load(tmp_path / "variants.json") == options


@pytest.mark.parametrize(
    ("variants", "message"),
    [
        ((VariantOption("fp32", 0.0),), "variants.0.name: 'fp32' is implicit"),
        ((VariantOption("int3", 0.0),), "variants.0.name: unknown variant 'int3'"),
        ((VariantOption("fp16", -1.0),), "variants.0.accuracy_drop_pp must be finite and >= 0"),
        ((VariantOption("fp16", 0.0, {"a": 0.0}),), "variants.0.time_ratio.a must be"),
        ((VariantOption("fp16", 0.0), VariantOption("fp16", 0.0)), "variants.1: variant 'fp16'"),
    ],
)
def test_variant_options_name_the_field_at_fault(variants, message):
    with pytest.raises(CompressionError, match=message):
        VariantOptions("m", variants)


def test_variant_options_read_from_json_name_the_entry_at_fault(tmp_path):
    path = tmp_path / "variants.json"
    path.write_text('{"tierflow_variants_version": 1, "variants": [{"name": "fp16"}]}')
    with pytest.raises(CompressionError, match=r"variants\.0: missing field 'accuracy_drop_pp'"):
        VariantOptions.load(path)


# -- on a real graph ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lenet_graph():
    return capture(*resolve_model("zoo:lenet"), name="zoo:lenet")


def test_without_variants_the_plan_is_that_of_plan(lenet_graph):
    topology = load_topology(THREE_TIERS)
    expected = plan(lenet_graph, topology)
    got = plan_compressed(lenet_graph, topology)
    assert got.assignment == expected.assignment
    assert got.predicted.latency_ms == pytest.approx(expected.predicted.latency_ms)
    assert got.tier_variants == {}


def test_compressed_plan_records_its_choice_and_round_trips_through_json(lenet_graph):
    topology = load_topology(THREE_TIERS)
    everything = {n.name: 0.2 for n in lenet_graph.nodes}
    options = VariantOptions("zoo:lenet", (VariantOption("int8-static", 0.1, everything, {}),))
    result = plan_compressed(lenet_graph, topology, variants=options, max_accuracy_drop_pp=1.0)
    assert result.tier_variants  # five times faster at 0.1 pp: some tier takes it
    assert result.compression_drop_pp == pytest.approx(0.1 * len(result.tier_variants))
    uncompressed = plan(lenet_graph, topology)
    assert result.predicted.latency_ms < uncompressed.predicted.latency_ms
    # Baselines stay those of the uncompressed model.
    assert result.baselines["all-camera"].prediction.latency_ms == pytest.approx(
        uncompressed.baselines["all-camera"].prediction.latency_ms
    )
    assert Plan.from_json(result.to_json()) == result
    assert "runs int8-static" in str(result)


def test_options_of_another_model_or_with_unknown_nodes_are_refused(lenet_graph):
    topology = load_topology(THREE_TIERS)
    other = VariantOptions("zoo:resnet_mini", (VariantOption("int8-static", 0.0),))
    with pytest.raises(PlanError, match="measured on 'zoo:resnet_mini', not 'zoo:lenet'"):
        plan_compressed(lenet_graph, topology, variants=other)
    unknown = VariantOptions("zoo:lenet", (VariantOption("int8-static", 0.0, {"conv9": 0.5}),))
    with pytest.raises(
        PlanError, match=r"variants\.0\.time_ratio: node 'conv9' is not in the graph"
    ):
        plan_compressed(lenet_graph, topology, variants=unknown)


def test_a_variants_fixed_cost_per_segment_can_make_it_not_worth_it():
    chain = two_tier_chain(device_ms=40.0)
    costly = VariantArrays("int8", np.full(3, 0.25), np.full(3, 0.25), 0.0, segment_ms=1000.0)
    speeds = np.array([1.0, 8.0])
    found = solve_compressed(
        chain, [costly], Objective.parse("latency"), max_accuracy_drop_pp=1, speeds=speeds
    )
    assert found.variants[0] == -1  # 1 s per request on the device outweighs 60 ms saved
    with pytest.raises(PlanError, match="segment_ms needs the tiers' speeds"):
        solve_compressed(chain, [costly], Objective.parse("latency"), max_accuracy_drop_pp=1)


def test_options_measured_at_another_batch_are_refused(lenet_graph):
    topology = load_topology(THREE_TIERS)
    eight = VariantOptions("zoo:lenet", (VariantOption("int8-static", 0.0),), batch=8)
    with pytest.raises(PlanError, match=r"variant options were measured on requests of 8"):
        plan_compressed(lenet_graph, topology, variants=eight)
    codecs = CodecOptions((CodecCandidate("pool2", "int8+zstd", 0.2, 0.1, 0.1, 0.0),), batch=8)
    with pytest.raises(PlanError, match=r"codec options were measured on requests of 8"):
        plan_compressed(lenet_graph, topology, codecs=codecs)
    assert VariantOptions.from_dict(eight.to_dict()).batch == 8
    assert CodecOptions.from_dict(codecs.to_dict()).batch == 8
    legacy = {"tierflow_codecs_version": 1, "candidates": []}  # written before the field
    assert CodecOptions.from_dict(legacy).batch == 1
