"""ExitModel by graph surgery, and where exits may attach (articulation points)."""

from __future__ import annotations

import io
import warnings

import pytest
import torch
from torch import nn

from tierflow.errors import ExitError
from tierflow.exits import (
    ExitModel,
    articulation_points,
    build_head,
    default_head_spec,
    propose_exits,
    validate_exit_nodes,
)
from tierflow.graph import LayerGraph, capture
from tierflow.models import resolve_model


class Recorder(nn.Module):
    """A head that remembers the tensor it was given and returns zero logits."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x
        return torch.zeros(x.shape[0], 10)


def lenet_wide_with_exit(head: nn.Module | None = None) -> tuple[ExitModel, nn.Module]:
    backbone, inputs = resolve_model("zoo:lenet_wide")
    head = head or build_head(default_head_spec((8, 12, 12), 10))
    return ExitModel(backbone, inputs, nodes={"exit1": "pool1"}, heads={"exit1": head}), backbone


def cuts_every_path(graph: LayerGraph, node: str) -> bool:
    """Brute force: with ``node`` removed, no graph output is reachable from an input."""
    reached = {name for name in graph.inputs if name != node}
    for layer in graph.nodes:
        if layer.name != node and any(p in reached for p in layer.inputs):
            reached.add(layer.name)
    return not reached & set(graph.outputs)


def only_its_value_crosses(graph: LayerGraph, node: str) -> bool:
    """Brute force: every edge from at or before ``node`` to after it starts at ``node``."""
    position = graph.index(node)
    for layer in graph.nodes[position + 1 :]:
        for producer in layer.inputs:
            if graph.index(producer) <= position and producer != node:
                return False
    return all(graph.index(out) > position for out in graph.outputs)


def test_final_logits_equal_the_backbone_output():
    model, backbone = lenet_wide_with_exit()
    x = torch.randn(4, 1, 28, 28)

    final, exits = model(x)

    torch.testing.assert_close(final, backbone(x))
    assert list(exits) == ["exit1"]
    assert exits["exit1"].shape == (4, 10)


def test_the_head_sees_the_attach_node_output():
    recorder = Recorder()
    model, backbone = lenet_wide_with_exit(recorder)
    x = torch.randn(3, 1, 28, 28)

    model(x)

    expected = backbone.pool1(torch.relu(backbone.conv1(x)))
    assert recorder.seen is not None
    torch.testing.assert_close(recorder.seen, expected)


def test_the_backbone_keeps_its_node_names_and_shares_weights_with_the_exit_path():
    model, backbone = lenet_wide_with_exit()
    x = torch.randn(2, 1, 28, 28)
    names = [n.name for n in capture(backbone, (x,)).nodes]

    with torch.no_grad():
        model.backbone.fc2.bias.add_(1.0)  # the traced path must see the change

    assert [n.name for n in capture(model.backbone, (x,)).nodes] == names
    torch.testing.assert_close(model(x)[0], backbone(x) + 1.0)
    assert {key.split(".")[0] for key in model.state_dict()} == {"backbone", "heads"}


def test_exit_names_must_match_and_not_be_final():
    backbone, inputs = resolve_model("zoo:lenet_wide")
    head = build_head(default_head_spec((8, 12, 12), 10))

    with pytest.raises(ExitError, match="final"):
        ExitModel(backbone, inputs, nodes={"final": "pool1"}, heads={"final": head})
    with pytest.raises(ExitError, match="differ"):
        ExitModel(backbone, inputs, nodes={"a": "pool1"}, heads={"b": head})


@pytest.mark.parametrize("spec", ["zoo:resnet_mini", "zoo:inception_mini", "zoo:lenet_wide"])
def test_proposal_returns_only_articulation_points(spec):
    model, inputs = resolve_model(spec)
    graph = capture(model, inputs)

    proposed = propose_exits(graph, 3)

    assert proposed
    for node in (*proposed, *articulation_points(graph)):
        assert cuts_every_path(graph, node), node
        assert only_its_value_crosses(graph, node), node


def test_every_node_passing_the_brute_force_check_is_an_articulation_point():
    model, inputs = resolve_model("zoo:resnet_mini")
    graph = capture(model, inputs)
    usable = set(articulation_points(graph))

    for node in graph.nodes:
        brute = (
            node.op != "placeholder"
            and node.name not in graph.outputs
            and cuts_every_path(graph, node.name)
            and only_its_value_crosses(graph, node.name)
        )
        assert brute == (node.name in usable), node.name


def test_lenet_wide_gets_its_exit_after_the_first_pooling():
    model, inputs = resolve_model("zoo:lenet_wide")

    assert propose_exits(capture(model, inputs), 2) == ("pool1",)


def test_a_node_inside_a_residual_block_is_refused_with_the_reason():
    model, inputs = resolve_model("zoo:resnet_mini")
    graph = capture(model, inputs)

    with pytest.raises(ExitError, match=r"stages_0_body_0_conv.*skip connection"):
        validate_exit_nodes(graph, ["stages_0_body_0_conv"])


def test_a_node_inside_an_inception_branch_is_refused_by_exit_model():
    model, inputs = resolve_model("zoo:inception_mini")
    graph = capture(model, inputs)
    branch = next(n.name for n in graph.nodes if n.name.startswith("block1_branch3"))

    with pytest.raises(ExitError, match=branch):
        ExitModel(model, inputs, nodes={"exit1": branch}, heads={"exit1": nn.Identity()})


def test_an_unknown_node_is_refused_listing_the_attach_points():
    model, inputs = resolve_model("zoo:lenet_wide")

    with pytest.raises(ExitError, match=r"'nope' is not a node.*pool1"):
        validate_exit_nodes(capture(model, inputs), ["nope"])


@pytest.mark.parametrize("shape", [(16, 12, 12), (16, 32), (64,), (4, 2, 2)])
def test_default_heads_return_logits_for_each_feature_shape(shape):
    head = build_head(default_head_spec(shape, 10))

    assert head(torch.randn(2, *shape)).shape == (2, 10)


@pytest.mark.parametrize("shape", [(8, 12, 12), (16, 28, 28), (3, 7, 5), (16, 32), (64,)])
def test_default_heads_export_to_onnx_and_agree_with_torch(shape):
    onnxruntime = pytest.importorskip("onnxruntime")
    head = build_head(default_head_spec(shape, 10)).eval()
    x = torch.randn(2, *shape)
    buffer = io.BytesIO()

    with warnings.catch_warnings():
        # The TorchScript exporter (what tierflow's build uses) warns that it is legacy.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(head, (x,), buffer, dynamo=False, input_names=["x"])
    session = onnxruntime.InferenceSession(buffer.getvalue())
    (logits,) = session.run(None, {"x": x.numpy()})

    torch.testing.assert_close(torch.from_numpy(logits), head(x).detach(), rtol=1e-4, atol=1e-5)
