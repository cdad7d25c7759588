"""What crosses a cut, measured: bytes per sample and accuracy, through ONNX Runtime.

Two ways to shrink the tensor at a cut are compared on the same footing. A codec
(``int4+zstd``, ``fp16``, ...) encodes the activation the lower part computes; a learned
bottleneck changes both parts so that a small uint8 code crosses. For both, the lower part
runs in ONNX Runtime on every test sample, each sample's payload is encoded on its own
(the cost of one request: headers are paid per sample, not amortised over a batch), the
upper part runs in ONNX Runtime on what the receiver decodes, and accuracy is top-1 on
the labels. The ``fp32`` row (raw float32, nothing lost) is the baseline every ratio and
accuracy loss is relative to.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from tierflow.compress.bottleneck import Bottleneck
from tierflow.compress.codecs import Codec, Lossless, codec_from_spec, decode_any
from tierflow.compress.codecs.lossless import compress
from tierflow.compress.cut import CutParts
from tierflow.compress.onnx_measure import ONNX_OPSET, ort_session
from tierflow.data.dataset import ArrayDataset
from tierflow.errors import CompressionError

__all__ = [
    "DEFAULT_CUT_CODECS",
    "CutCodec",
    "cut_codecs_table",
    "export_bottleneck",
    "measure_bottleneck",
    "measure_cut_codecs",
]

DEFAULT_CUT_CODECS = ("fp16", "int8+zstd", "int4+zstd", "topk")
_BATCH = 256  # ORT batch for the parts; results do not depend on it


@dataclass(frozen=True)
class CutCodec:
    """One way across a cut, measured on a labelled split.

    Attributes
    ----------
    name:
        Codec spec (``int4+zstd``), ``fp32`` for the raw baseline, or the bottleneck's name.
    cut:
        The node after which the data crosses.
    bytes_per_sample:
        Mean payload bytes of one sample, headers included.
    fp32_bytes_per_sample:
        The original activation at ``cut`` as raw float32 (no header).
    accuracy:
        Top-1 accuracy, in [0, 1], of the upper part on what the receiver decoded.
    """

    name: str
    cut: str
    bytes_per_sample: float
    fp32_bytes_per_sample: int
    accuracy: float

    @property
    def ratio_vs_fp32(self) -> float:
        """How many times fewer bytes than raw float32 at the same cut."""
        return self.fp32_bytes_per_sample / self.bytes_per_sample


def export_bottleneck(
    bottleneck: Bottleneck, example: torch.Tensor, out_dir: str | Path
) -> tuple[Path, Path]:
    """Export ``head.onnx`` (``x`` -> uint8 ``code``) and ``tail.onnx`` (``code`` -> ``logits``).

    TorchScript exporter at opset 17 with a dynamic batch, like ``tierflow.artifacts``;
    :func:`measure_bottleneck` shows it in use.
    """
    out = Path(out_dir)
    bottleneck.eval()
    head = _export(bottleneck.head, example, out / "head.onnx", ("x", "code"))
    with torch.no_grad():
        code = bottleneck.head(example)
    tail = _export(bottleneck.tail, code, out / "tail.onnx", ("code", "logits"))
    return head, tail


def measure_bottleneck(
    bottleneck: Bottleneck,
    example: torch.Tensor,
    data: ArrayDataset,
    out_dir: str | Path,
    *,
    lossless: Lossless = Lossless.ZSTD,
) -> list[CutCodec]:
    """Export ``bottleneck`` and measure it in ONNX Runtime: the raw code, then + lossless.

    The raw row's bytes are the uint8 code's size (``k * H * W``; its shape is fixed by
    the model, so no header is needed). The lossless row compresses each sample's code
    bytes on their own with ``lossless`` and reports the mean compressed size.

    Raises
    ------
    CompressionError
        If ``data`` is empty or the exported head does not produce uint8.

    Examples
    --------
    >>> from tierflow.compress.bottleneck import BottleneckSettings, train_bottleneck
    >>> from tierflow.data import load_dataset
    >>> from tierflow.models import resolve_model
    >>> net, (x,) = resolve_model("zoo:lenet")
    >>> splits = load_dataset("mnist5k")
    >>> b = train_bottleneck(net, x, "pool2", splits.train, BottleneckSettings(epochs=1))
    >>> rows = measure_bottleneck(b, x, splits.test, "/tmp/bn")
    >>> [r.name for r in rows], rows[0].bytes_per_sample
    (['bottleneck-8ch', 'bottleneck-8ch+zstd'], 200.0)
    """
    _check_data(data)
    head_path, tail_path = export_bottleneck(bottleneck, example, out_dir)
    head, tail = ort_session(head_path), ort_session(tail_path)
    raw_sizes: list[int] = []
    packed_sizes: list[int] = []
    correct = 0
    for x, y in data.batches(_BATCH):
        code = head.run(None, {"x": x})[0]
        if code.dtype != np.uint8:
            raise CompressionError(f"{head_path}: output 'code' is {code.dtype}, expected uint8")
        raw_sizes += [sample.nbytes for sample in code]
        packed_sizes += [len(compress(sample.tobytes(), lossless)) for sample in code]
        correct += int(np.sum(np.argmax(tail.run(None, {"code": code})[0], axis=1) == y))
    accuracy = correct / len(data)
    base = bottleneck.fp32_bytes_per_sample
    return [
        CutCodec(bottleneck.name, bottleneck.cut, float(np.mean(raw_sizes)), base, accuracy),
        CutCodec(
            f"{bottleneck.name}+{lossless.value}",
            bottleneck.cut,
            float(np.mean(packed_sizes)),
            base,
            accuracy,
        ),
    ]


def measure_cut_codecs(
    parts: CutParts,
    example: torch.Tensor,
    data: ArrayDataset,
    out_dir: str | Path,
    *,
    codecs: Iterable[Codec | str] = DEFAULT_CUT_CODECS,
) -> list[CutCodec]:
    """Measure each codec at ``parts.cut``; the first row is the raw ``fp32`` baseline.

    Examples
    --------
    >>> from tierflow.compress.cut import split_at
    >>> from tierflow.data import load_dataset
    >>> from tierflow.models import resolve_model
    >>> net, (x,) = resolve_model("zoo:lenet")
    >>> test = load_dataset("mnist5k").test
    >>> rows = measure_cut_codecs(split_at(net, x, "pool2"), x, test, "/tmp/cc", codecs=["fp16"])
    >>> [(r.name, r.ratio_vs_fp32) for r in rows][0]
    ('fp32', 1.0)
    """
    _check_data(data)
    out = Path(out_dir)
    lower_path = _export(parts.lower, example, out / "lower.onnx", ("x", "activation"))
    with torch.no_grad():
        activation = parts.lower(example)
    upper_path = _export(parts.upper, activation, out / "upper.onnx", ("activation", "logits"))
    lower, upper = ort_session(lower_path), ort_session(upper_path)
    activations = np.concatenate([lower.run(None, {"x": x})[0] for x, _ in data.batches(_BATCH)])

    def accuracy(decoded: NDArray[np.float32]) -> float:
        logits = np.concatenate(
            [
                upper.run(None, {"activation": decoded[i : i + _BATCH]})[0]
                for i in range(0, len(decoded), _BATCH)
            ]
        )
        return float(np.mean(np.argmax(logits, axis=1) == data.y))

    base = parts.fp32_bytes_per_sample
    rows = [CutCodec("fp32", parts.cut, float(base), base, accuracy(activations))]
    for item in codecs:
        codec = codec_from_spec(item) if isinstance(item, str) else item
        payloads = [codec.encode(activations[i : i + 1]) for i in range(len(activations))]
        decoded = np.concatenate([decode_any(p) for p in payloads]).astype(np.float32)
        size = float(np.mean([len(p) for p in payloads]))
        rows.append(CutCodec(codec.name, parts.cut, size, base, accuracy(decoded)))
    return rows


def cut_codecs_table(rows: Sequence[CutCodec], *, baseline: float | None = None) -> str:
    """A plain-text table of ``rows``; accuracy loss is against ``baseline`` (default: fp32).

    Examples
    --------
    >>> print(cut_codecs_table([CutCodec("fp32", "pool2", 1600.0, 1600, 0.95)]))
    codec                cut       bytes/sample  ratio_vs_fp32  accuracy  loss_pp
    fp32                 pool2           1600.0          1.00x    95.00%     0.00
    """
    if baseline is None:
        baseline = next((r.accuracy for r in rows if r.name == "fp32"), None)
    lines = [
        f"{'codec':<20} {'cut':<8} {'bytes/sample':>13} {'ratio_vs_fp32':>14} "
        f"{'accuracy':>9} {'loss_pp':>8}"
    ]
    for r in rows:
        loss = "-" if baseline is None else f"{100 * (baseline - r.accuracy):.2f}"
        lines.append(
            f"{r.name:<20} {r.cut:<8} {r.bytes_per_sample:>13.1f} {r.ratio_vs_fp32:>13.2f}x "
            f"{100 * r.accuracy:>8.2f}% {loss:>8}"
        )
    return "\n".join(lines)


def _check_data(data: ArrayDataset) -> None:
    if len(data) == 0:
        raise CompressionError(f"cut measurement: dataset {data.name!r} is empty")


def _export(module: nn.Module, example: torch.Tensor, path: Path, names: tuple[str, str]) -> Path:
    """Like ``onnx_measure.export_onnx``, with the input and output names given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = module.training
    module.eval()
    source, target = names
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(
                module,
                (example,),
                str(path),
                input_names=[source],
                output_names=[target],
                dynamic_axes={source: {0: "batch"}, target: {0: "batch"}},
                opset_version=ONNX_OPSET,
                dynamo=False,
            )
    except Exception as exc:
        raise CompressionError(
            f"cannot export {type(module).__name__} to {path}: {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        module.train(was_training)
    return path
