"""The `tierflow` command, run for real."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

# Importing the command modules registers their commands on the app, as main() does.
import tierflow.cli.commands_bench
import tierflow.cli.commands_build
import tierflow.cli.commands_hop
import tierflow.cli.commands_model
import tierflow.cli.commands_plan
import tierflow.cli.commands_serve  # noqa: F401
from tierflow.cli.app import app
from tierflow.plan import Plan
from tierflow.profile import Profile

ROOT = Path(__file__).parent.parent
THREE_TIERS = ROOT / "examples" / "topologies" / "camera-gateway-cloud.yaml"

runner = CliRunner()


def test_plan_json_for_resnet18_is_no_slower_than_any_feasible_baseline():
    # Arrange / Act: the real console script, as a user runs it.
    result = subprocess.run(
        [sys.executable, "-m", "tierflow", "plan", "torchvision:resnet18",
         "--topology", str(THREE_TIERS), "--json", "--runs", "3"],
        capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    # Assert
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    for key in ("tierflow_plan_version", "model", "objective", "tiers", "assignment", "cuts",
                "predicted", "baselines"):  # fmt: skip
        assert key in plan
    assert set(plan["predicted"]) >= {"latency_ms", "energy_mj", "bytes_per_link", "throughput_rps"}
    assert {"all-camera", "all-gateway", "all-datacenter", "neurosurgeon", "dads"} <= set(
        plan["baselines"]
    )
    latency = plan["predicted"]["latency_ms"]
    for name, baseline in plan["baselines"].items():
        if baseline["feasible"]:
            assert latency <= baseline["latency_ms"] * (1 + 1e-9), name


def test_graph_json_lists_every_node_with_flops_and_bytes():
    result = runner.invoke(app, ["graph", "zoo:lenet", "--json"])
    assert result.exit_code == 0, result.output
    graph = json.loads(result.stdout)
    assert graph["nodes"][0]["name"] == "x"
    assert all({"flops", "param_bytes", "outputs", "inputs"} <= set(n) for n in graph["nodes"])


def test_graph_block_granularity_has_fewer_rows():
    fine = json.loads(runner.invoke(app, ["graph", "zoo:resnet_mini", "--json"]).stdout)
    blocks = json.loads(
        runner.invoke(app, ["graph", "zoo:resnet_mini", "--json", "--granularity", "block"]).stdout
    )
    assert len(blocks["nodes"]) < len(fine["nodes"])


def test_profile_writes_a_profile_that_loads(tmp_path: Path):
    out = tmp_path / "lenet.json"
    result = runner.invoke(app, ["profile", "zoo:lenet", "--out", str(out), "--runs", "3"])
    assert result.exit_code == 0, result.output
    profile = Profile.load(out)
    assert profile.model == "zoo:lenet"
    assert "conv1" in profile.node_ms


def test_plan_out_then_split_checks_the_segments_against_the_model(tmp_path: Path):
    plan_file = tmp_path / "plan.json"
    planned = runner.invoke(
        app,
        ["plan", "zoo:resnet_mini", "--topology", str(THREE_TIERS), "--objective", "throughput",
         "--out", str(plan_file), "--runs", "2"],
    )  # fmt: skip
    assert planned.exit_code == 0, planned.output
    assert Plan.load(plan_file).model == "zoo:resnet_mini"
    checked = runner.invoke(app, ["split", "zoo:resnet_mini", str(plan_file)])
    assert checked.exit_code == 0, checked.output
    assert "equals the unsplit model" in checked.output


def test_sweep_writes_the_figure_and_json_per_point(tmp_path: Path):
    figure = tmp_path / "sweep.png"
    result = runner.invoke(
        app,
        ["plan", "zoo:lenet", "--topology", str(THREE_TIERS), "--runs", "2", "--json",
         "--sweep", "links.0.bandwidth_mbps=0.5,5,50", "--plot", str(figure)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    points = json.loads(result.stdout)["sweep"]["points"]
    assert [p["value"] for p in points] == [0.5, 5.0, 50.0]
    assert figure.stat().st_size > 10_000
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_time_limit_reaches_the_planner(monkeypatch):
    import tierflow.cli.commands_plan as commands_plan

    seen: list[float | None] = []
    real_plan = commands_plan.make_plan

    def spy(*args, **kwargs):
        seen.append(kwargs.get("time_limit_s"))
        return real_plan(*args, **kwargs)

    monkeypatch.setattr(commands_plan, "make_plan", spy)
    result = runner.invoke(
        app,
        ["plan", "zoo:lenet", "--topology", str(THREE_TIERS), "--runs", "2", "--json",
         "--time-limit-s", "30"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert seen == [30.0]
    assert json.loads(result.stdout)["solver"]["status"] == "optimal"


def test_set_override_changes_the_topology_the_plan_sees():
    result = runner.invoke(
        app,
        ["plan", "zoo:lenet", "--topology", str(THREE_TIERS), "--runs", "2", "--json",
         "--set", "links.0.bandwidth_mbps=0.01", "--set", "links.0.rtt_ms=1000"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    # Over a 10 kbit/s, 1 s link nothing is worth sending: everything stays on the camera.
    assert set(plan["assignment"].values()) == {"camera"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["graph", "torchvision:no_such_net"], "no_such_net"),
        (["graph", "zoo:nope"], "nope"),
        (["plan", "zoo:lenet", "--topology", "missing.yaml"], "missing.yaml"),
        (["plan", "zoo:lenet", "--topology", str(THREE_TIERS), "--set", "links.0.rtt_ms=-1"],
         "links.0.rtt_ms"),
        (["plan", "zoo:lenet", "--topology", str(THREE_TIERS), "--objective", "speed"], "speed"),
    ],
)  # fmt: skip
def test_bad_input_exits_2_with_a_message_naming_the_culprit(args, message):
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert message in result.output
