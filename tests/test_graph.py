"""Capture: tracing, LayerGraph structure, sizes, FLOPs and block coarsening."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import fx, nn
from torch.utils.flop_counter import FlopCounterMode

from tierflow.errors import CaptureError
from tierflow.graph import LayerGraph, TensorSpec, Traced, capture, coarsen, describe, trace
from tierflow.graph.trace import SCOPE_META, ScopeFrame
from tierflow.models import resolve_model

TORCHVISION_SMALL_INPUT = (1, 3, 64, 64)  # every model below accepts it and runs fast


class _Recording(fx.Interpreter):
    """Runs a traced graph and keeps every node's value; optionally counts FLOPs of some
    nodes with torch's own FlopCounterMode, as an independent reference."""

    def __init__(self, module: fx.GraphModule, count: set[str] = frozenset()) -> None:
        super().__init__(module, garbage_collect_values=False)
        self.count = count
        self.counted: dict[str, int] = {}

    def run_node(self, n: fx.Node) -> Any:
        if n.name not in self.count:
            return super().run_node(n)
        with FlopCounterMode(display=False) as counter:
            result = super().run_node(n)
        self.counted[n.name] = counter.get_total_flops()
        return result


def _run(traced: Traced, inputs, count: set[str] = frozenset()) -> _Recording:
    recording = _Recording(traced.module, count)
    with torch.no_grad():
        recording.run(*inputs)
    return recording


def _has_bias(traced: Traced, node: fx.Node) -> bool:
    if node.op == "call_module":
        return getattr(traced.module.get_submodule(str(node.target)), "bias", None) is not None
    return len(node.args) > 2 and node.args[2] is not None


def _is_dense(traced: Traced, node: fx.Node) -> bool:
    """Conv, linear and matmul nodes, at torch.fx or aten level."""
    if node.op == "call_module":
        module = traced.module.get_submodule(str(node.target))
        return isinstance(module, nn.Linear | nn.modules.conv._ConvNd)
    name = getattr(node.target, "__name__", str(node.target))
    return any(key in name for key in ("conv", "linear", "matmul", "mm"))


def _tensors(value: Any):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, tuple | list):
        for item in value:
            yield from _tensors(item)


def _assert_topological(graph: LayerGraph) -> None:
    for node in graph:
        assert all(graph.index(p) < graph.index(node.name) for p in node.inputs)


# --- structure --------------------------------------------------------------------------


def test_every_zoo_model_captures_one_layer_node_per_traced_op(zoo_model):
    traced = trace(zoo_model.model, zoo_model.inputs)

    graph = describe(traced, zoo_model.inputs, name=zoo_model.spec)

    ops = [n.name for n in traced.module.graph.nodes if n.op not in ("get_attr", "output")]
    assert [n.name for n in graph] == ops
    assert graph.model == zoo_model.spec
    assert all(n.members == (n.name,) for n in graph)


def test_layer_node_inputs_and_consumers_match_the_fx_edges(zoo_model):
    traced = trace(zoo_model.model, zoo_model.inputs)

    graph = describe(traced, zoo_model.inputs)

    for n in traced.module.graph.nodes:
        if n.op in ("get_attr", "output"):
            continue
        assert graph[n.name].inputs == tuple(
            p.name for p in n.all_input_nodes if p.op != "get_attr"
        )
        assert set(graph.consumers[n.name]) == {u.name for u in n.users if u.op != "output"}


def test_graph_outputs_name_the_producers_of_the_model_output(zoo_model):
    traced = trace(zoo_model.model, zoo_model.inputs)

    graph = describe(traced, zoo_model.inputs)

    output = next(n for n in traced.module.graph.nodes if n.op == "output")
    assert graph.outputs == tuple(p.name for p in output.all_input_nodes)


def test_output_bytes_equal_the_actual_tensor_sizes(zoo_model):
    traced = trace(zoo_model.model, zoo_model.inputs)
    graph = describe(traced, zoo_model.inputs)

    values = _run(traced, zoo_model.inputs).env

    checked = 0
    for fx_node, value in values.items():
        tensors = list(_tensors(value))
        if fx_node.name in graph and tensors:
            assert graph[fx_node.name].output_bytes == sum(t.nbytes for t in tensors)
            checked += 1
    assert checked >= len(graph) // 2


def test_a_graph_survives_a_json_round_trip(zoo_model):
    graph = capture(zoo_model.model, zoo_model.inputs, granularity="block")

    restored = LayerGraph.from_dict(graph.to_dict())

    assert restored == graph


def test_retracing_gives_the_same_node_names(zoo_model):
    first = capture(zoo_model.model, zoo_model.inputs)

    second = capture(zoo_model.model, zoo_model.inputs)

    assert [n.name for n in first] == [n.name for n in second]


def test_export_retracing_gives_the_same_node_names():
    model, inputs = resolve_model("zoo:transformer")
    first = capture(model, inputs, tracer="export")

    second = capture(model, inputs, tracer="export")

    assert first.tracer == "export"
    assert [n.name for n in first] == [n.name for n in second]


def test_size_results_are_described_as_eight_byte_scalars():
    class Flatten(nn.Module):
        def forward(self, x):
            return x.view(x.size(0), -1)

    graph = capture(Flatten(), (torch.randn(2, 3, 4),))

    size = next(n for n in graph if n.target == "size")
    assert size.outputs == (TensorSpec((), "int64", 8),)


def test_a_parameter_read_directly_counts_into_its_consumer_not_into_a_node():
    model, inputs = resolve_model("zoo:transformer")

    graph = capture(model, inputs)

    assert "pos" not in graph
    add = next(n for n in graph if "embed" in n.inputs and n.target == "operator.add")
    assert add.param_bytes == model.pos.numel() * 4


def test_an_lstm_node_lists_all_three_output_tensors():
    model, inputs = resolve_model("zoo:lstm")

    graph = capture(model, inputs)

    assert [spec.shape for spec in graph["rnn"].outputs] == [(1, 16, 32), (2, 1, 32), (2, 1, 32)]


def test_param_bytes_add_up_to_the_model_state_size(zoo_model):
    graph = capture(zoo_model.model, zoo_model.inputs)

    state = zoo_model.model.state_dict().values()
    assert graph.total_param_bytes == sum(t.numel() * t.element_size() for t in state)


# --- FLOPs ------------------------------------------------------------------------------


@pytest.mark.parametrize("tracer", ["fx", "export"])
def test_dense_op_flops_match_torch_flop_counter_plus_bias_adds(zoo_model, tracer):
    traced = trace(zoo_model.model, zoo_model.inputs, tracer=tracer)
    graph = describe(traced, zoo_model.inputs)
    dense = [n for n in traced.module.graph.nodes if n.name in graph and _is_dense(traced, n)]

    counted = _run(traced, zoo_model.inputs, {n.name for n in dense}).counted

    assert dense
    for n in dense:
        # FlopCounterMode counts 2 per multiply-add but not bias adds; tierflow adds 1 per
        # output element for a bias (see Note [FLOP conventions] in tierflow.graph.flops).
        bias = math.prod(graph[n.name].outputs[0].shape) if _has_bias(traced, n) else 0
        assert graph[n.name].flops == counted[n.name] + bias, n.name


def test_fx_and_export_captures_agree_on_total_flops(zoo_model):
    by_fx = capture(zoo_model.model, zoo_model.inputs, tracer="fx")

    by_export = capture(zoo_model.model, zoo_model.inputs, tracer="export")

    assert by_fx.total_flops == by_export.total_flops


class _LibraryLayers(nn.Module):
    """Layers that fx keeps whole but export lowers to aten ops."""

    def __init__(self):
        super().__init__()
        self.attention = nn.MultiheadAttention(16, 4, batch_first=True)
        self.upsample = nn.ConvTranspose2d(4, 6, 3, stride=2, groups=2)
        self.lstm = nn.LSTM(16, 8, num_layers=2, bidirectional=True, batch_first=True)
        self.gru = nn.GRU(16, 8, bidirectional=True)

    def forward(self, x, image):
        attended = self.attention(x, x, x, need_weights=False)[0]
        return attended, self.upsample(image), self.lstm(x)[0], self.gru(x)[0]


def test_module_flop_formulas_agree_with_the_aten_ops_export_lowers_them_to():
    model, inputs = _LibraryLayers().eval(), (torch.randn(1, 5, 16), torch.randn(1, 4, 8, 8))
    by_fx = capture(model, inputs, tracer="fx")

    by_export = capture(model, inputs, tracer="export")

    assert by_fx["attention"].op == "call_module"
    assert by_fx.total_flops == by_export.total_flops


def test_recurrent_flops_scale_with_sequence_length():
    model, _ = resolve_model("zoo:gru")
    short = capture(model, (torch.randn(1, 8, 8),))

    long = capture(model, (torch.randn(1, 16, 8),))

    assert long["rnn"].flops == 2 * short["rnn"].flops > 0


# --- block coarsening -------------------------------------------------------------------


def test_blocks_keep_total_flops_and_params_and_stay_topological(zoo_model):
    traced = trace(zoo_model.model, zoo_model.inputs)
    fine = describe(traced, zoo_model.inputs)

    blocks = coarsen(fine, traced)

    assert blocks.granularity == "block"
    assert blocks.total_flops == fine.total_flops
    assert blocks.total_param_bytes == fine.total_param_bytes
    assert sorted(m for n in blocks for m in n.members) == sorted(n.name for n in fine)
    _assert_topological(blocks)


def test_a_residual_block_becomes_one_block_node_with_the_skip_inside():
    model, inputs = resolve_model("zoo:resnet_mini")

    graph = capture(model, inputs, granularity="block")

    block = graph["stages_1"]
    assert (block.op, block.target, block.module_type) == ("block", "stages.1", "ResidualBlock")
    assert block.inputs == ("stages_0",)
    assert block.outputs == (TensorSpec((1, 32, 16, 16), "float32", 32 * 16 * 16 * 4),)


def test_a_block_outputs_every_value_that_leaves_it():
    class TwoOut(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)

        def forward(self, x):
            return self.a(x), self.b(x)

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.pair = TwoOut()

        def forward(self, x):
            a, b = self.pair(x)
            return a * b

    graph = capture(Model(), (torch.randn(1, 4),), granularity="block")

    assert graph["pair"].members == ("pair_a", "pair_b")
    assert len(graph["pair"].outputs) == 2


def test_a_module_called_twice_becomes_two_blocks():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.mlp = _MLP()

        def forward(self, x):
            return self.mlp(torch.relu(self.mlp(x)))

    graph = capture(Twice(), (torch.randn(1, 4),), granularity="block")

    assert [n.name for n in graph if n.op == "block"] == ["mlp", "mlp_1"]
    _assert_topological(graph)


class _MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def test_a_group_whose_contraction_would_create_a_cycle_stays_ungrouped():
    model, inputs = resolve_model("zoo:lenet")
    traced = trace(model, inputs)
    fine = describe(traced, inputs)
    nodes = {n.name: n for n in traced.module.graph.nodes}
    # conv1 -> relu -> pool1: grouping conv1 with pool1 but not relu would be a cycle.
    frame = ScopeFrame("fake", "fake", _MLP)
    nodes["conv1"].meta[SCOPE_META] = nodes["pool1"].meta[SCOPE_META] = (frame,)

    blocks = coarsen(fine, traced)

    assert [n.name for n in blocks] == [n.name for n in fine]


def test_coarsening_a_block_graph_is_refused():
    model, inputs = resolve_model("zoo:lenet")
    traced = trace(model, inputs)
    blocks = coarsen(describe(traced, inputs), traced)

    with pytest.raises(CaptureError, match="already block"):
        coarsen(blocks, traced)


# --- tracing failures and the user's model --------------------------------------------


class _DataDependent(nn.Module):
    def forward(self, x):
        if x.sum() > 0:
            return x * 2
        return -x


class _UsesDataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.gate = _DataDependent()

    def forward(self, x):
        return self.gate(self.fc(x))


def test_data_dependent_control_flow_names_the_submodule_and_suggests_a_leaf():
    with pytest.raises(CaptureError, match=r"_DataDependent.*leaf") as error:
        capture(_UsesDataDependent(), (torch.randn(1, 4),))

    assert "'gate'" in str(error.value)


def test_marking_the_untraceable_submodule_as_a_leaf_makes_it_capturable():
    graph = capture(_UsesDataDependent(), (torch.randn(1, 4),), leaf_modules=[_DataDependent])

    gate = graph["gate"]
    assert (gate.op, gate.module_type, gate.inputs) == ("call_module", "_DataDependent", ("fc",))


@pytest.mark.parametrize("tracer", ["fx", "export"])
def test_capture_leaves_the_users_model_unchanged(tracer):
    model, inputs = resolve_model("zoo:resnet_mini")
    model.train()  # BatchNorm in training mode would update running stats if run
    before = {k: v.clone() for k, v in model.state_dict().items()}
    attributes = set(vars(model))

    capture(model, inputs, tracer=tracer, granularity="block")

    torch.testing.assert_close(model.state_dict(), before, rtol=0, atol=0)
    assert all(m.training for m in model.modules())
    assert set(vars(model)) == attributes


# --- torchvision ------------------------------------------------------------------------

TORCHVISION = [
    "resnet18",
    "mobilenet_v3_small",
    *(
        pytest.param(name, marks=pytest.mark.slow)
        for name in (
            "alexnet",
            "vgg16",
            "resnet50",
            "mobilenet_v2",
            "googlenet",
            "densenet121",
            "efficientnet_b0",
        )
    ),
]

EXPECTED_BLOCK = {
    "resnet18": ("layer1_0", "BasicBlock"),
    "resnet50": ("layer1_0", "Bottleneck"),
    "mobilenet_v2": ("features_1", "InvertedResidual"),
    "googlenet": ("inception3a", "Inception"),
    "densenet121": ("features_denseblock1_denselayer1", "_DenseLayer"),
    "efficientnet_b0": ("features_1_0", "MBConv"),
}


@pytest.mark.parametrize("name", TORCHVISION)
def test_torchvision_models_capture_with_flops_near_torchs_count_and_coarsen(name):
    model, inputs = resolve_model(f"torchvision:{name}", input_shape=TORCHVISION_SMALL_INPUT)
    traced = trace(model, inputs)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(*inputs)

    fine = describe(traced, inputs, name=name)
    blocks = coarsen(fine, traced)

    # tierflow also counts norms, activations, pooling and bias adds (a few percent more).
    assert counter.get_total_flops() <= fine.total_flops <= 1.1 * counter.get_total_flops()
    assert blocks.total_flops == fine.total_flops
    _assert_topological(blocks)
    if name in EXPECTED_BLOCK:
        block_name, module_type = EXPECTED_BLOCK[name]
        assert blocks[block_name].module_type == module_type
        assert len(blocks) < len(fine) / 2
    if name in ("vgg16", "alexnet"):  # plain chains of layers: nothing to group
        assert [n.name for n in blocks] == [n.name for n in fine]
