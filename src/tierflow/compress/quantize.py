"""Post-training quantisation of ONNX models with ONNX Runtime (int8 static/dynamic, fp16).

``static`` inserts QuantizeLinear/DequantizeLinear pairs (QDQ format) around Conv, Gemm
and MatMul with activation ranges measured on real calibration inputs (MinMax), and
per-channel int8 weights; ORT fuses each QDQ pattern into an integer kernel at session
load. ``dynamic`` stores int8 weights and quantises activations on the fly per batch: no
calibration, and the right choice for Linear- and LSTM-heavy models whose activation
ranges vary per input. ``fp16`` halves the weights; see Note [fp16 on CPU].

Note [fp16 on CPU]
~~~~~~~~~~~~~~~~~~
ORT's CPU execution provider has few fp16 kernels, so an fp16 graph runs mostly through
inserted Cast nodes and is usually *slower* than fp32 on CPU; its gain is size (half the
bytes) and GPU/NPU targets. ``python -m tierflow.compress.model_bench`` measures it.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from tierflow.errors import CompressionError

__all__ = ["QuantMode", "quantizable", "quantize_onnx"]

QuantMode = Literal["static", "dynamic", "fp16"]

# Ops whose weights int8 quantisation acts on; a graph with none of them gains nothing.
_WEIGHT_OPS = {
    "static": {"Conv", "ConvTranspose", "Gemm", "MatMul"},
    "dynamic": {"Gemm", "MatMul", "LSTM", "Attention"},
}
# Ops that only appear in a graph int8 quantisation has acted on.
_QUANTISED_OPS = {"QuantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "DynamicQuantizeLSTM"}
# ORT's dynamic quantiser has no Gemm entry (IntegerOpsRegistry, onnxruntime 1.32), and
# torch exports every 2-d nn.Linear as Gemm: we rewrite those to MatMul + Add first.
# Conv is left out of dynamic mode: ConvInteger has no fast CPU kernel in ORT.
_DYNAMIC_OPS = ["MatMul", "LSTM", "Attention", "Gather"]
_CALIBRATION_BATCH = 32

Calibration = NDArray[np.float32] | Mapping[str, NDArray[Any]]


def quantizable(path: str | Path, mode: QuantMode) -> bool:
    """Whether ``mode`` changes the ONNX model at ``path`` (fp16 always does; int8 modes
    only act on the ops they quantise, e.g. dynamic int8 leaves a Conv-only graph alone).
    """
    if mode == "fp16":
        return True
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    return bool(ops & _WEIGHT_OPS.get(mode, set()))


def quantize_onnx(
    path_in: str | Path,
    path_out: str | Path,
    *,
    mode: QuantMode = "static",
    calibration: Calibration | None = None,
    per_channel: bool = True,
) -> Path:
    """Write a quantised copy of the ONNX model at ``path_in`` to ``path_out``.

    Parameters
    ----------
    path_in, path_out:
        Source model (fp32) and where to write the result (parent folders are created).
    mode:
        ``"static"`` (int8 QDQ, needs ``calibration``), ``"dynamic"`` (int8 weights,
        activations quantised at run time) or ``"fp16"``.
    calibration:
        Real inputs for ``static``: one array ``[N, ...]`` for a single-input model, or
        a mapping from input name to array. A few hundred samples are plenty.
    per_channel:
        One scale per output channel of each weight (int8 modes); keeps accuracy close
        to fp32 where channel ranges differ a lot, at no run-time cost.

    Returns
    -------
    Path
        ``path_out``.

    Raises
    ------
    CompressionError
        Naming the input whose calibration array is missing or of the wrong shape, the
        mode, or the model when it has no op that int8 quantisation acts on.

    Examples
    --------
    >>> from tierflow.compress.onnx_measure import export_onnx
    >>> from tierflow.models import resolve_model
    >>> net, (x,) = resolve_model("zoo:lenet")
    >>> _ = export_onnx(net, x, "/tmp/lenet.onnx")
    >>> x = np.random.default_rng(0).random((64, 1, 28, 28), dtype=np.float32)
    >>> quantize_onnx("/tmp/lenet.onnx", "/tmp/lenet.int8.onnx", calibration=x).name
    'lenet.int8.onnx'
    """
    src, dst = Path(path_in), Path(path_out)
    if not src.is_file():
        raise CompressionError(f"quantize_onnx: model file {src} does not exist")
    model = onnx.load(str(src))
    dst.parent.mkdir(parents=True, exist_ok=True)
    if mode == "fp16":
        return _to_fp16(model, dst)
    if mode not in _WEIGHT_OPS:
        raise CompressionError(
            f"quantize_onnx: mode must be 'static', 'dynamic' or 'fp16', not {mode!r}"
        )
    ops = {node.op_type for node in model.graph.node}
    if not ops & _WEIGHT_OPS[mode]:
        raise CompressionError(
            f"quantize_onnx: {src.name} has no op that {mode} int8 quantisation acts on "
            f"(wanted one of {sorted(_WEIGHT_OPS[mode])}, found {sorted(ops)})"
        )
    reader = _Reader(model, calibration) if mode == "static" else None
    try:
        with tempfile.TemporaryDirectory() as tmp, _quiet():
            _quantize_int8(src, dst, Path(tmp) / "prepared.onnx", reader, per_channel)
    except CompressionError:
        raise
    except Exception as exc:  # ORT raises bare RuntimeError/ValueError/KeyError
        raise CompressionError(
            f"quantize_onnx: {mode} int8 quantisation of {src.name} failed: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    done = {node.op_type for node in onnx.load(str(dst)).graph.node} & _QUANTISED_OPS
    if not done:
        raise CompressionError(
            f"quantize_onnx: {mode} int8 quantisation left {src.name} unchanged "
            f"(its ops are {sorted(ops)})"
        )
    return dst


def _quantize_int8(
    src: Path, dst: Path, prepared: Path, reader: _Reader | None, per_channel: bool
) -> None:
    # Folding constants and inferring shapes first lets the quantiser see every
    # tensor's type; ORT's docs recommend it before static quantisation.
    quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
    if reader is not None:
        quantize_static(
            str(prepared),
            str(dst),
            reader,
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            # uint8 activations with int8 weights (U8S8): ORT's x86 int8 GEMM path.
            # resnet18, 1 thread, AMD EPYC with AVX512-VNNI, ORT 1.32, interleaved
            # medians: fp32 23.9 ms, U8S8 QDQ 8.9 ms, S8S8 QDQ 19.9 ms (S8S8 is
            # ORT's default and the better choice on ARM, not here).
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
    else:
        onnx.save(_gemm_to_matmul(onnx.load(str(prepared))), str(prepared))
        quantize_dynamic(
            str(prepared),
            str(dst),
            op_types_to_quantize=_DYNAMIC_OPS,
            per_channel=per_channel,
            weight_type=QuantType.QInt8,
        )


class _Reader(CalibrationDataReader):  # type: ignore[misc]  # onnxruntime is untyped
    """Feeds calibration arrays to ORT in batches, after checking them against the model."""

    def __init__(self, model: onnx.ModelProto, calibration: Calibration | None) -> None:
        inputs = _graph_inputs(model)
        if calibration is None:
            raise CompressionError(
                f"quantize_onnx: static mode needs calibration data for input(s) {list(inputs)}"
            )
        if not isinstance(calibration, Mapping):
            if len(inputs) != 1:
                raise CompressionError(
                    f"quantize_onnx: model has inputs {list(inputs)}; pass calibration "
                    "as a mapping from input name to array"
                )
            calibration = {next(iter(inputs)): calibration}
        arrays: dict[str, NDArray[Any]] = {}
        for name, dims in inputs.items():
            if name not in calibration:
                raise CompressionError(f"quantize_onnx: no calibration data for input {name!r}")
            array = np.asarray(calibration[name])
            expected = ["N", *dims[1:]]
            if array.ndim != len(dims) or any(
                isinstance(d, int) and d != s
                for d, s in zip(dims[1:], array.shape[1:], strict=True)
            ):
                raise CompressionError(
                    f"quantize_onnx: calibration data for input {name!r} has shape "
                    f"{list(array.shape)}; the model expects {expected}"
                )
            arrays[name] = array.astype(np.float32, copy=False)
        counts = {len(a) for a in arrays.values()}
        if len(counts) != 1 or 0 in counts:
            raise CompressionError(
                f"quantize_onnx: calibration arrays must be non-empty with one sample count, "
                f"got { ({n: len(a) for n, a in arrays.items()}) }"
            )
        # A batch dimension fixed at export (e.g. 1) must be fed in chunks of that size.
        batch = {d[0] for d in inputs.values() if isinstance(d[0], int)}
        step = batch.pop() if batch else _CALIBRATION_BATCH
        total = counts.pop()
        self._batches: Iterator[dict[str, NDArray[Any]]] = iter(
            [{n: a[i : i + step] for n, a in arrays.items()} for i in range(0, total, step)]
        )

    def get_next(self) -> dict[str, NDArray[Any]] | None:
        return next(self._batches, None)


def _graph_inputs(model: onnx.ModelProto) -> dict[str, list[int | str]]:
    """Real inputs (not initialisers) with their dims: int where fixed, name where symbolic."""
    initialisers = {t.name for t in model.graph.initializer}
    out: dict[str, list[int | str]] = {}
    for value in model.graph.input:
        if value.name in initialisers:
            continue
        dims = value.type.tensor_type.shape.dim
        out[value.name] = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in dims]
    return out


def _gemm_to_matmul(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rewrite Gemm nodes with a constant B (alpha=beta=1, no transA) as MatMul (+ Add)."""
    weights = {t.name: t for t in model.graph.initializer}
    nodes: list[onnx.NodeProto] = []
    for node in model.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        plain = attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0
        if (
            node.op_type != "Gemm"
            or not plain
            or attrs.get("transA", 0)
            or node.input[1] not in weights
        ):
            nodes.append(node)
            continue
        b = numpy_helper.to_array(weights[node.input[1]])
        b_name = f"{node.input[1]}_kn"
        model.graph.initializer.append(
            numpy_helper.from_array(
                np.ascontiguousarray(b.T if attrs.get("transB", 0) else b), b_name
            )
        )
        has_bias = len(node.input) > 2 and node.input[2]
        product = f"{node.output[0]}_matmul" if has_bias else node.output[0]
        nodes.append(
            onnx.helper.make_node(
                "MatMul", [node.input[0], b_name], [product], name=f"{node.name}_matmul"
            )
        )
        if has_bias:
            nodes.append(
                onnx.helper.make_node(
                    "Add", [product, node.input[2]], [node.output[0]], name=f"{node.name}_add"
                )
            )
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    used = {name for node in nodes for name in node.input}
    kept = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    return model


def _to_fp16(model: onnx.ModelProto, dst: Path) -> Path:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    # keep_io_types: callers still feed and read float32, so fp16 is a drop-in variant.
    with _quiet():
        onnx.save(convert_float_to_float16(model, keep_io_types=True), str(dst))
    return dst


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence ORT's quantisation logger (INFO/WARNING chatter on every run)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)
