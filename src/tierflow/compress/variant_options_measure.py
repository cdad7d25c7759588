"""Measure the compressed variants the planner chooses per tier (``variants.json``).

:func:`variant_options_for` turns a trained model and its data into
:class:`~tierflow.plan.variant_options.VariantOptions`: per variant (int8 static, int8
dynamic, fp16), how much faster and smaller every node gets, and how much accuracy the
variant costs. :func:`~tierflow.plan.variant_planner.plan_compressed` weighs them; the
plan's ``tier_variants`` then tell :func:`tierflow.build` which tiers' segments to
quantise.

Note [How variant options are measured]
    * Speed and size per *stretch*: the model is cut at every single-tensor cut that a
      weight layer follows (:func:`stretch_ends`), so each stretch holds one or more
      weight layers with the activations and pooling after them, the unit ONNX Runtime
      fuses into one integer kernel. Each stretch is exported, quantised with the
      calibration inputs it really receives, and timed one request at a time (the
      example input's batch) on one thread against its fp32 export, interleaved (Note
      [Interleaved timing] in ``onnx_measure``). Every node of a stretch gets the
      stretch's ratio: a per-node time means nothing inside a fused QDQ graph.
      ``size_ratio`` is the file-size ratio.
    * A fixed cost per segment: a stretch timed alone quantises its input and
      dequantises its output, which a segment of several quantised stretches does only
      at its own ends. The whole quantised model is timed too; what it saves against the
      sum of its stretches, per boundary between two quantised stretches, is the
      variant's ``segment_ms`` (host ms a tier running it pays once per request), and
      each stretch's ratio is taken without it. Measured on the demo's trained
      zoo:lenet_large, 8 digits per request: ``segment_ms`` 0.004 ms, so the boundaries
      cost next to nothing there; its first stretch (a 5x5 conv from one input channel,
      ReLU, pooling) is 2.9x *slower* in int8 on its own merits, which the planner then
      weighs (conv2 and conv3 onwards run at 0.21x and 0.28x).
    * Accuracy per variant: the *whole* model as that variant against fp32, both in ONNX
      Runtime, on the validation split (at most ``limit`` samples). The planner charges
      this drop to every tier that runs the variant, a bound: quantising fewer layers
      adds less noise. The test split stays untouched by the choice.
    * Calibration (int8 static): the first ``calibration`` training samples.
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray
from torch import fx, nn

from tierflow.compress.cut import cut_candidates, split_stretch
from tierflow.compress.onnx_measure import export_onnx, interleaved_latency_ms, onnx_accuracy
from tierflow.compress.quantize import quantizable, quantize_onnx
from tierflow.data.dataset import ArrayDataset, DatasetSplits
from tierflow.errors import CompressionError
from tierflow.graph import trace
from tierflow.plan.variant_options import QUANT_MODES, VariantOption, VariantOptions

__all__ = ["DEFAULT_PLAN_VARIANTS", "stretch_ends", "variant_options_for"]

DEFAULT_PLAN_VARIANTS = ("int8-static", "int8-dynamic")
_LAYER_OPS = frozenset({"placeholder", "call_module", "call_function", "call_method"})
_CALIBRATION = 256  # MinMax ranges settle well before this on MNIST-sized inputs
_LIMIT = 500


def stretch_ends(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Where stretches end: each single-tensor cut followed by a weight layer, then the
    model's output node.

    Examples
    --------
    >>> from tierflow.models import resolve_model
    >>> net, (x,) = resolve_model("zoo:lenet")
    >>> stretch_ends(net, x)
    ['pool1', 'fc3']
    """
    traced = trace(model, (example,), tracer="fx")
    module = traced.module
    nodes = [n for n in module.graph.nodes if n.op in _LAYER_OPS]
    outputs = [n for n in module.graph.nodes if n.op == "output"]
    (returned,) = outputs[0].all_input_nodes if outputs else (None,)
    if returned is None or not isinstance(returned, fx.Node):
        raise CompressionError("variant options need a model with one tensor output")
    position = {n.name: i for i, n in enumerate(nodes)}
    cuts = set(cut_candidates(model, example))
    ends = [
        n.name
        for n in nodes
        if n.name in cuts
        and position[n.name] + 1 < len(nodes)
        and _has_weights(module, nodes[position[n.name] + 1])
    ]
    return [*ends, returned.name]


def _has_weights(module: fx.GraphModule, node: fx.Node) -> bool:
    if node.op != "call_module":
        return False
    return any(True for _ in module.get_submodule(str(node.target)).parameters())


def variant_options_for(
    model: nn.Module,
    example: torch.Tensor,
    data: DatasetSplits,
    *,
    model_spec: str,
    variants: Sequence[str] = DEFAULT_PLAN_VARIANTS,
    limit: int | None = _LIMIT,
    calibration: int = _CALIBRATION,
    runs: int = 100,
    work_dir: str | Path | None = None,
) -> VariantOptions:
    """Measure each variant's per-node speed and size ratios and its accuracy drop (Note
    [How variant options are measured]).

    Parameters
    ----------
    model, example:
        The trained single-input classifier and one example input; its batch dimension
        is the number of samples per request that stretches are timed on.
    data:
        Labelled splits: ``train`` calibrates int8 ranges, ``val`` gives the accuracy.
    model_spec:
        Recorded in the options, so that the planner refuses them for another model.
    variants:
        Names from :data:`~tierflow.plan.variant_options.QUANT_MODES`.
    limit:
        Validation samples for accuracy (``None``: all).
    calibration, runs:
        Calibration samples for static int8, and timed rounds per stretch.
    work_dir:
        Where the ONNX files go (a temporary folder by default).

    Raises
    ------
    CompressionError
        For an unknown variant, data shaped unlike ``example``, or a model that cannot
        be cut into single-tensor stretches or exported.

    Examples
    --------
    >>> from tierflow.data import load_dataset
    >>> from tierflow.models import resolve_model
    >>> net, (x,) = resolve_model("zoo:lenet")
    >>> options = variant_options_for(net, x, load_dataset("mnist5k"), model_spec="zoo:lenet",
    ...                               variants=["int8-static"], limit=64, runs=5)
    >>> [v.name for v in options.variants]
    ['int8-static']
    """
    unknown = [v for v in variants if v not in QUANT_MODES]
    if unknown:
        raise CompressionError(f"variants: unknown {unknown}; choose from {list(QUANT_MODES)}")
    if tuple(data.train.x.shape[1:]) != tuple(example.shape[1:]):
        raise CompressionError(
            f"data: samples of {data.train.name!r} are {tuple(data.train.x.shape[1:])}, but "
            f"the model takes {tuple(example.shape[1:])}"
        )
    model.eval()
    if work_dir is None:
        with tempfile.TemporaryDirectory(prefix="tierflow-variants-") as tmp:
            return _measure(
                model, example, data, model_spec, variants, limit, calibration, runs, Path(tmp)
            )
    return _measure(
        model, example, data, model_spec, variants, limit, calibration, runs, Path(work_dir)
    )


@dataclass(frozen=True)
class _Stretch:
    members: list[str]
    ms: dict[str, float]  # one request, host, by "fp32" and each variant that changes it
    size_ratio: dict[str, float]


def _measure(
    model: nn.Module,
    example: torch.Tensor,
    data: DatasetSplits,
    model_spec: str,
    variants: Sequence[str],
    limit: int | None,
    calibration: int,
    runs: int,
    out: Path,
) -> VariantOptions:
    calibration_x = data.train.x[:calibration]
    values = _node_values(model, calibration_x)
    traced = trace(model, (example,), tracer="fx")
    # Stretch ends are single-tensor cuts, so a stretch is a run of the topological order.
    names = [n.name for n in traced.module.graph.nodes if n.op in _LAYER_OPS]
    stretches: list[_Stretch] = []
    start: str | None = None
    for index, end in enumerate(stretch_ends(model, example)):
        part = split_stretch(model, example, start, end)
        stretch_input = calibration_x if start is None else values[start]
        exported = export_onnx(part, torch.from_numpy(stretch_input[:1]), out / f"s{index}.onnx")
        paths = _variant_files(exported, variants, stretch_input, out / f"s{index}")
        # Timed on one request: as many samples as the example input holds.
        latency = interleaved_latency_ms(paths, stretch_input[: len(example)], runs=runs)
        sizes = {n: p.stat().st_size / exported.stat().st_size for n, p in paths.items()}
        first = 0 if start is None else names.index(start) + 1
        members = names[first : names.index(end) + 1]
        stretches.append(_Stretch(members, latency, sizes))
        start = end
    whole = _variant_files(
        export_onnx(model, example, out / "model.onnx"), variants, calibration_x, out / "model"
    )
    whole_ms = interleaved_latency_ms(whole, calibration_x[: len(example)], runs=runs)
    drops = _accuracy_drops(whole, data, limit)
    options = []
    for name in variants:
        segment_ms = _segment_ms(name, stretches, whole_ms)
        time_ratio: dict[str, float] = {}
        size_ratio: dict[str, float] = {}
        for stretch in stretches:
            if name not in stretch.ms:  # the variant leaves this stretch as it is
                continue
            core = stretch.ms[name] - segment_ms
            for node in stretch.members:
                time_ratio[node] = round(core / stretch.ms["fp32"], 4)
                size_ratio[node] = round(stretch.size_ratio[name], 4)
        options.append(
            VariantOption(name, drops.get(name, 0.0), time_ratio, size_ratio, round(segment_ms, 4))
        )
    return VariantOptions(model_spec, tuple(options), batch=len(example))


def _variant_files(
    fp32: Path, variants: Sequence[str], calibration: NDArray[np.float32], stem: Path
) -> dict[str, Path]:
    """``{"fp32": fp32, variant: its file}`` for each variant that changes the model."""
    paths = {"fp32": fp32}
    for name in variants:
        mode = QUANT_MODES[name]
        if quantizable(fp32, mode):
            paths[name] = quantize_onnx(
                fp32,
                stem.with_name(f"{stem.name}-{name}.onnx"),
                mode=mode,
                calibration=calibration if name == "int8-static" else None,
            )
    return paths


def _segment_ms(name: str, stretches: Sequence[_Stretch], whole_ms: Mapping[str, float]) -> float:
    """Host ms a segment in variant ``name`` pays once, whatever its length (Note [How
    variant options are measured]): what the whole quantised model saves against the sum
    of its stretches, per boundary between two quantised stretches."""
    changed = [name in s.ms for s in stretches]
    boundaries = sum(a and b for a, b in itertools.pairwise(changed))
    if name not in whole_ms or boundaries == 0:
        return 0.0
    # The stretches and the whole model were timed in separate runs: scale the stretches'
    # times by the fp32 ratio of the two, so that only the quantised boundaries differ.
    scale = whole_ms["fp32"] / sum(s.ms["fp32"] for s in stretches)
    separate = sum(s.ms[name] if name in s.ms else s.ms["fp32"] for s in stretches) * scale
    per_boundary = (separate - whole_ms[name]) / boundaries / scale
    # Never more than most of the cheapest quantised stretch: its core stays positive.
    cheapest = min(s.ms[name] for s in stretches if name in s.ms)
    return float(min(max(per_boundary, 0.0), 0.9 * cheapest))


def _node_values(model: nn.Module, x: NDArray[np.float32]) -> dict[str, NDArray[np.float32]]:
    """Every float tensor node's output for the samples ``x`` (the stretches' inputs)."""
    traced = trace(model, (torch.from_numpy(x[:1]),), tracer="fx")
    values: dict[str, NDArray[np.float32]] = {}

    class _Recorder(fx.Interpreter):
        def run_node(self, n: fx.Node) -> object:
            value = super().run_node(n)
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                values[n.name] = value.detach().float().numpy()
            return value

    with torch.no_grad():
        _Recorder(traced.module).run(torch.from_numpy(x))
    return values


def _accuracy_drops(
    whole: Mapping[str, Path], data: DatasetSplits, limit: int | None
) -> dict[str, float]:
    """Percentage points each whole-model variant loses against fp32 (ORT, validation)."""
    val: ArrayDataset = data.val
    if limit is not None and limit < len(val):
        val = val.subset(np.arange(limit, dtype=np.int64), f"{val.name}[:{limit}]")
    if len(val) == 0:
        raise CompressionError(f"data: validation split {val.name!r} is empty")
    baseline = onnx_accuracy(whole["fp32"], val)
    return {
        name: round(max(0.0, 100.0 * (baseline - onnx_accuracy(path, val))), 4)
        for name, path in whole.items()
        if name != "fp32"
    }
