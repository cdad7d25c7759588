"""`tierflow serve`, `up`, `down` and `infer`, run for real."""

from __future__ import annotations

import json
import select
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

import tierflow.cli.commands_serve  # registers the commands, as main() does
from tierflow import capture, resolve_model
from tierflow.artifacts import Manifest, build, load_manifest
from tierflow.cli.app import app
from tierflow.partition.from_plan import expand_assignment
from tierflow.plan.evaluate import Prediction
from tierflow.plan.plan import Plan
from tierflow.testbed import cpu

SPEC = "zoo:lenet"
# Names no other test uses, so that leftover cgroups (``NAME-xxxxxxxx``) are ours.
TIERS = ("upcam", "upgate", "updc")
runner = CliRunner()


def three_tier_plan() -> Plan:
    model, inputs = resolve_model(SPEC)
    graph = capture(model, inputs)
    names = [node.name for node in graph.nodes]
    tiers = {name: TIERS[3 * i // len(names)] for i, name in enumerate(names)}
    return Plan(
        model=SPEC,
        objective="manual",
        tiers=TIERS,
        assignment=expand_assignment(graph, tiers),
        cuts=(),
        predicted=Prediction(0.0, None, {}, 0.0, {}, {}),
        baselines={},
    )


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    model, inputs = resolve_model(SPEC)
    return build(model, three_tier_plan(), inputs, tmp_path_factory.mktemp("lenet-cli"))


def tierflow(*args: str) -> list[str]:
    return [sys.executable, "-m", "tierflow", *args]


def read_line(process: subprocess.Popen[str], timeout_s: float) -> str:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout_s)
    assert ready, f"no line within {timeout_s} s"
    return process.stdout.readline()


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def test_serve_refuses_a_tampered_artifact_naming_the_file(
    tmp_path: Path, artifact: Manifest
) -> None:
    copy = tmp_path / "tampered"
    shutil.copytree(artifact.root, copy)
    segment_file = copy / load_manifest(copy).segment("upgate").files[0].path
    segment_file.write_bytes(segment_file.read_bytes()[:-1] + b"\x01")

    result = subprocess.run(
        tierflow("serve", "--manifest", str(copy / "manifest.json"), "--tier", "upgate"),
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip

    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert str(segment_file) in result.stderr.replace("\n", "")
    assert "sha256" in result.stderr


def test_up_serves_the_model_and_down_leaves_nothing_behind(tmp_path: Path) -> None:
    topology = tmp_path / "topology.yaml"
    topology.write_text(
        yaml.safe_dump(
            {
                "tiers": [
                    {"name": "upcam", "kind": "device", "compute": {"speed": 0.5}},
                    {"name": "upgate", "kind": "edge", "compute": {"speed": 0.5}},
                    {"name": "updc", "kind": "cloud", "compute": {"speed": 1.0}},
                ],
                "links": [
                    {"from": "upcam", "to": "upgate", "bandwidth_mbps": 100, "rtt_ms": 1},
                    {"from": "upgate", "to": "updc", "bandwidth_mbps": 100, "rtt_ms": 1},
                ],
            }
        )
    )
    plan = tmp_path / "plan.json"
    three_tier_plan().save(plan)
    state = tmp_path / "state" / "testbed.json"
    with (tmp_path / "up.err").open("w") as up_err:
        up = subprocess.Popen(
            tierflow("up", str(topology), "--plan", str(plan), "--state", str(state),
                     "--set", "links.0.bandwidth_mbps=200"),
            stdout=subprocess.PIPE, stderr=up_err, text=True,
        )  # fmt: skip
    try:
        # Act 1: up prints one JSON line once every tier is ready.
        record = json.loads(read_line(up, timeout_s=180))
        saved = json.loads(state.read_text())
        pids = saved["tier_pids"]
        groups = {name: Path(f"/proc/{pid}/cgroup").read_text() for name, pid in pids.items()}

        assert list(record["tiers"]) == list(TIERS)
        assert record["entry"] == record["tiers"]["upcam"] and record["model"] == SPEC
        assert saved["pid"] == up.pid and all(alive(pid) for pid in pids.values())

        # Act 2: one request through the entry, with `tierflow infer`.
        model, inputs = resolve_model(SPEC)
        np.save(tmp_path / "x.npy", inputs[0].numpy())
        args = ["infer", record["entry"], "--input", str(tmp_path / "x.npy")]
        shown = runner.invoke(app, [*args, "--json", "--out", str(tmp_path / "y.npy")])
        table = runner.invoke(app, args)

        assert shown.exit_code == 0, shown.output
        answer = json.loads(shown.output)
        assert [hop["tier"] for hop in answer["trace"]["tiers"]] == list(TIERS)
        assert all(hop["request_bytes"] > 0 for hop in answer["trace"]["links"])
        expected = model(*inputs).detach().numpy()
        np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, rtol=1e-4, atol=1e-4)
        assert table.exit_code == 0 and "upgate → updc" in table.output

        # Act 3: down stops the supervisor, which stops everything it started.
        down = subprocess.run(
            tierflow("down", "--state", str(state)),
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert down.returncode == 0, down.stderr
        assert up.wait(timeout=30) == 0
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        assert up.stdout is not None
        up.stdout.close()

    assert not state.exists()
    assert not any(alive(pid) for pid in pids.values())
    reason = cpu.unavailable_reason()
    if reason is None:
        root = cpu.cpu_controller_root()
        assert root is not None
        paths = [line.split(":", 2)[2] for text in groups.values() for line in text.splitlines()]
        ours = [p for p in paths if "/tierflow/" in p]
        assert ours, "the slow tiers should have run in cgroups"
        assert not [p for p in ours if (root / p.lstrip("/")).exists()]


def test_down_without_a_testbed_says_so(tmp_path: Path) -> None:
    result = runner.invoke(app, ["down", "--state", str(tmp_path / "none.json")])

    assert result.exit_code == 2
    assert "no testbed is recorded" in result.output


def test_a_bad_listen_address_is_refused(artifact: Manifest) -> None:
    result = runner.invoke(
        app, ["serve", "--manifest", str(artifact.root), "--tier", "updc", "--listen", "x:y"]
    )

    assert result.exit_code == 2
    assert "--listen" in result.output
