"""Building a plan with early exits: tiers cut at exit nodes, heads exported and checked."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from test_artifacts import plan_by_position
from tierflow import resolve_model
from tierflow.artifacts import Manifest, build, load_executors, load_manifest, run_chain
from tierflow.artifacts.exit_loading import load_tier_exits
from tierflow.errors import ArtifactError
from tierflow.partition.from_plan import split_at_exits
from tierflow.plan.exit_options import PlannedExit
from tierflow.plan.plan import Plan

SPEC = "zoo:lenet"
# plan_by_position cuts lenet's 13 nodes into device: x conv1 relu pool1 conv2 |
# edge: relu_1 pool2 flatten fc1 | cloud: relu_2 fc2 relu_3 fc3.
DEVICE_EXIT = ("relu", "device", 6)  # (node, tier, channels of the node's output)
EDGE_EXIT = ("pool2", "edge", 16)


class PooledHead(nn.Module):
    """Global average pool, then a linear classifier: ``[B, C, H, W] -> [B, 10]``."""

    def __init__(self, channels: int, *, bias: float | None = None) -> None:
        super().__init__()
        self.fc = nn.Linear(channels, 10)
        if bias is not None:  # constant logits: [bias, 0, ..., 0] whatever the input
            with torch.no_grad():
                self.fc.weight.zero_()
                self.fc.bias.zero_()
                self.fc.bias[0] = bias

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.fc(h.mean(dim=(2, 3)))


def confident_head(channels: int) -> nn.Module:
    """Softmax confidence 1 - 9e-9 for every sample: always answers."""
    return PooledHead(channels, bias=20.0)


def unsure_head(channels: int) -> nn.Module:
    """Uniform logits, softmax confidence 0.1 for every sample: never answers at 0.9."""
    return PooledHead(channels, bias=0.0)


def lenet() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    return resolve_model(SPEC)


def plan_with_exit(
    model: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    *,
    at: tuple[str, str, int] = DEVICE_EXIT,
    name: str = "early",
    threshold: float = 0.9,
) -> Plan:
    node, tier, _ = at
    plan = plan_by_position(SPEC, model, inputs)
    assert plan.assignment[node] == tier
    planned = PlannedExit(name, node, tier, "max_softmax", threshold, exit_rate=0.5)
    return dataclasses.replace(plan, exits=(planned,))


def backbone_value(model: nn.Module, plan: Plan, x: torch.Tensor, node: str) -> torch.Tensor:
    """The value of ``node`` in a PyTorch run of the backbone on ``x``."""
    env: dict[str, object] = {"x": x}
    with torch.no_grad():
        for segment in split_at_exits(model, plan, (x,)):
            outputs = segment(*(env[n] for n in segment.input_names))
            env.update(zip(segment.output_names, outputs, strict=True))
    value = env[node]
    assert isinstance(value, torch.Tensor)
    return value


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Manifest, nn.Module, Plan]:
    model, inputs = lenet()
    plan = plan_with_exit(model, inputs)
    head = PooledHead(DEVICE_EXIT[2])
    manifest = build(
        model, plan, inputs, tmp_path_factory.mktemp("exits"), exit_heads={"early": head}
    )
    return manifest, head, plan


def test_the_tier_holding_an_exit_is_cut_right_after_the_exit_node(built) -> None:
    manifest, _, _ = built

    device = manifest.parts("device")

    assert [s.label for s in manifest.segments] == ["device", "device.1", "edge", "cloud"]
    assert [v.name for v in device[0].outputs] == ["relu"]
    assert [v.name for v in device[1].inputs] == ["relu"]
    assert [f.path for f in device[1].files] == ["device.1.onnx"]
    (entry,) = manifest.exits
    assert (entry.name, entry.tier, entry.after, entry.input.name) == ("early", "device", 0, "relu")
    assert entry.answers == "fc3" and entry.output.shape == (-1, 10)
    assert (entry.policy, entry.threshold) == ("max_softmax", 0.9)
    assert entry.file.path == "exit-early.onnx" and (manifest.root / entry.file.path).is_file()


def test_the_cut_segments_still_chain_to_the_unsplit_model(built) -> None:
    manifest, _, _ = built
    model, inputs = lenet()
    x = torch.randn(3, *inputs[0].shape[1:], generator=torch.Generator().manual_seed(1))

    (output,) = run_chain(load_executors(manifest), {"x": x.numpy()}).values()

    torch.testing.assert_close(torch.from_numpy(output), model(x).detach(), rtol=1e-4, atol=1e-4)


def test_the_built_head_answers_as_the_pytorch_head_at_any_batch(built) -> None:
    manifest, head, plan = built
    model, inputs = lenet()
    x = torch.randn(5, *inputs[0].shape[1:], generator=torch.Generator().manual_seed(2))
    h = backbone_value(model, plan, x, "relu")

    (early,) = load_tier_exits(manifest, "device")
    logits = early.head.run({"relu": h.numpy()})[early.logits]

    assert early.after == 0 and early.answers == "fc3"
    torch.testing.assert_close(torch.from_numpy(logits), head(h).detach(), rtol=1e-4, atol=1e-4)


def test_a_manifest_with_exits_round_trips_through_json(built) -> None:
    manifest, _, _ = built

    data = json.loads((manifest.root / "manifest.json").read_text())

    assert Manifest.from_dict(data, root=manifest.root, source="t") == manifest
    assert load_manifest(manifest.root) == manifest
    assert data["exits"][0]["after"] == 0 and data["segments"][1]["part"] == 1


def test_a_manifest_without_exits_has_no_exit_fields_and_loads_as_before(tmp_path: Path) -> None:
    model, inputs = lenet()

    manifest = build(model, plan_by_position(SPEC, model, inputs), inputs, tmp_path)
    data = json.loads((tmp_path / "manifest.json").read_text())

    assert "exits" not in data and all("part" not in s for s in data["segments"])
    assert load_manifest(tmp_path).exits == () and manifest.segment("edge").part == 0


def test_segment_lookup_on_a_cut_tier_points_to_its_parts(built) -> None:
    manifest, _, _ = built

    with pytest.raises(ArtifactError, match=r"'device' .* has 2 segments"):
        manifest.segment("device")
    assert manifest.segment("edge").tier == "edge"
    assert manifest.tiers == ("device", "edge", "cloud")


def test_a_planned_exit_without_a_head_is_refused_naming_it(tmp_path: Path) -> None:
    model, inputs = lenet()

    with pytest.raises(ArtifactError, match=r"\['early'\] have no head"):
        build(model, plan_with_exit(model, inputs), inputs, tmp_path)


def test_a_head_shaped_unlike_the_model_output_is_refused_naming_the_exit(tmp_path: Path) -> None:
    model, inputs = lenet()
    wrong = nn.Sequential(nn.Flatten(), nn.LazyLinear(7))

    with pytest.raises(ArtifactError, match=r"exit 'early': the head returns .*\[1, 7\]"):
        build(model, plan_with_exit(model, inputs), inputs, tmp_path, exit_heads={"early": wrong})


def test_an_unknown_policy_is_refused_naming_the_exit(tmp_path: Path) -> None:
    model, inputs = lenet()
    plan = plan_with_exit(model, inputs)
    plan = dataclasses.replace(plan, exits=(dataclasses.replace(plan.exits[0], policy="vibes"),))

    with pytest.raises(ArtifactError, match=r"exit 'early': unknown exit policy 'vibes'"):
        build(model, plan, inputs, tmp_path, exit_heads={"early": unsure_head(6)})


def test_a_tampered_head_file_refuses_to_load_naming_it(tmp_path: Path) -> None:
    model, inputs = lenet()
    build(
        model,
        plan_with_exit(model, inputs),
        inputs,
        tmp_path,
        exit_heads={"early": unsure_head(6)},
    )
    head_file = tmp_path / "exit-early.onnx"
    head_file.write_bytes(head_file.read_bytes() + b"\0")

    with pytest.raises(ArtifactError, match=r"exit-early\.onnx has sha256 .* modified"):
        load_tier_exits(load_manifest(tmp_path), "device")


def test_torch_segments_cut_at_an_exit_rebuild_and_chain_to_the_model(tmp_path: Path) -> None:
    model, inputs = lenet()
    plan = plan_with_exit(model, inputs, at=EDGE_EXIT)
    manifest = build(
        model, plan, inputs, tmp_path, executor="torch", exit_heads={"early": unsure_head(16)}
    )

    (output,) = run_chain(load_executors(manifest), {"x": inputs[0].numpy()}).values()

    assert [s.label for s in manifest.segments] == ["device", "edge", "edge.1", "cloud"]
    assert all(s.executor == "torch" for s in manifest.segments)
    assert manifest.exits[0].file.path.endswith(".onnx")  # heads are ONNX whatever the executor
    np.testing.assert_allclose(output, model(*inputs).detach().numpy(), rtol=1e-5, atol=1e-5)
