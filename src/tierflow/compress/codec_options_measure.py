"""Measure the codec candidates the planner chooses from (``codecs.json``).

:func:`codec_options_for` turns a model, its validation data and a list of codecs into
:class:`~tierflow.plan.codec_options.CodecOptions`: per (cut value, codec) the mean
compression ratio, the host's encode and decode time for one request, and the accuracy
the model loses when only that value is round-tripped through the codec. It is the
measuring step before :func:`~tierflow.plan.variant_planner.plan_with_codecs`; the plan's
``link_codecs`` then go into the build manifest, so ``tierflow serve`` applies them.

Note [How codec candidates are measured]
    * Values: by default the model input and every node after which exactly one 4-D
      float tensor crosses (:func:`default_nodes`), the values a codec is meant for
      (images, conv feature maps); ``nodes=`` measures others too (e.g. a fully
      connected layer's output), as long as a single tensor crosses there.
    * Data: the *validation* split, so that test accuracy stays untouched by the choice;
      at most ``limit`` samples (default 500: 0.2 pp resolution, and lenet_large's cut
      nodes x 3 codecs measure in seconds on 2 CPU cores).
    * The parts run in PyTorch (eval mode, batches of 256), not ONNX Runtime as
      :mod:`~tierflow.compress.cut_measure` does: the accuracy of a round-tripped value
      depends on the codec, not on the engine (float32 kernels differ by ~1e-6), and
      PyTorch needs no export per node.
    * Each request is encoded on its own, as one request on the wire pays its own header;
      a request carries as many samples as ``example`` (its batch dimension): ``ratio``
      is the mean of (payload bytes / float32 bytes) over the requests, header included,
      and ``encode_ms`` / ``decode_ms`` are medians of those per-request calls (the
      median shrugs off the scheduler hiccups of a shared host).
    * ``accuracy_drop_pp`` = 100 x (accuracy with raw values - accuracy with decoded
      values) on the same samples; a measured gain is recorded as 0, as
      :class:`~tierflow.plan.codec_options.CodecOptions` requires.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from tierflow.compress.codecs import Codec, codec_from_spec, decode_any
from tierflow.compress.cut import CutParts, cut_candidates, split_at
from tierflow.data.dataset import ArrayDataset, DatasetSplits
from tierflow.errors import CompressionError
from tierflow.graph import trace
from tierflow.plan.codec_options import CodecCandidate, CodecOptions

__all__ = ["DEFAULT_OPTION_CODECS", "codec_options_for", "default_nodes"]

# The Auto-Split-style menu (fp16, int8, int4) with zstd-1, the measured default lossless
# stage (Note: choosing the lossless stage, in compress.codecs.codec).
DEFAULT_OPTION_CODECS = ("fp16", "int8+zstd", "int4+zstd")
DEFAULT_LIMIT = 500
_BATCH = 256  # PyTorch batch for the parts; results do not depend on it


@dataclass(frozen=True)
class _Measured:
    ratio: float
    encode_ms: float
    decode_ms: float
    decoded: NDArray[np.float32]


def codec_options_for(
    model: nn.Module,
    example: torch.Tensor,
    data: ArrayDataset | DatasetSplits,
    *,
    nodes: Sequence[str] | None = None,
    codecs: Sequence[str | Codec] = DEFAULT_OPTION_CODECS,
    limit: int | None = DEFAULT_LIMIT,
) -> CodecOptions:
    """Measure every (value, codec) pair on validation data (Note [How codec candidates
    are measured]).

    Parameters
    ----------
    model, example:
        The (trained) model and one example input; the model is not modified.
    data:
        Labelled samples shaped like ``example``; given all splits, the ``val`` split.
    nodes:
        Values to measure (graph node names); default: :func:`default_nodes`.
    codecs:
        Codec specs or objects (not ``raw``, which the planner always has).
    limit:
        Measure at most the first ``limit`` samples; ``None``: all of them.

    Returns
    -------
    CodecOptions
        One candidate per (node, codec), nodes in order, then codecs in order.

    Raises
    ------
    CompressionError
        If ``data`` is empty or shaped unlike ``example``, a node is unknown, not a
        single-tensor cut or not floating point, ``codecs`` is empty, or ``limit < 1``.

    Examples
    --------
    >>> from tierflow.data import load_dataset
    >>> from tierflow.models import resolve_model
    >>> net, (x,) = resolve_model("zoo:lenet")
    >>> options = codec_options_for(net, x, load_dataset("mnist5k"), nodes=["pool2"],
    ...                             codecs=["int8+zstd"], limit=64)
    >>> [(c.node, c.codec, c.ratio < 1) for c in options.candidates]
    [('pool2', 'int8+zstd', True)]
    """
    samples = _samples(data, example, limit)
    specs = [codec_from_spec(c) if isinstance(c, str) else c for c in codecs]
    if not specs:
        raise CompressionError("codecs: give at least one codec to measure")
    chosen = list(nodes) if nodes is not None else default_nodes(model, example)
    candidates: list[CodecCandidate] = []
    for node in chosen:
        parts = split_at(model, example, node)
        activation = _activation(parts, samples.x)
        if activation is None:
            if nodes is not None:
                raise CompressionError(
                    f"nodes: {node!r} outputs a non-float tensor, which codecs do not compress"
                )
            continue
        baseline = _accuracy(parts, activation, samples.y)
        for codec in specs:
            measured = _measure(codec, activation, batch=max(1, int(example.shape[0])))
            drop_pp = 100.0 * (baseline - _accuracy(parts, measured.decoded, samples.y))
            candidates.append(
                CodecCandidate(
                    node=node,
                    codec=codec.name,
                    ratio=measured.ratio,
                    encode_ms=measured.encode_ms,
                    decode_ms=measured.decode_ms,
                    accuracy_drop_pp=max(0.0, drop_pp),
                )
            )
    return CodecOptions(tuple(candidates), batch=max(1, int(example.shape[0])))


def default_nodes(model: nn.Module, example: torch.Tensor) -> list[str]:
    """The model's input, then every node after which one 4-D tensor alone crosses.

    The input counts because a plan may send it raw from the first tier (a slow camera
    forwarding the image); a codec on it is a choice like any other.

    Examples
    --------
    >>> from tierflow.models import resolve_model
    >>> net, (x,) = resolve_model("zoo:lenet")
    >>> default_nodes(net, x)
    ['x', 'conv1', 'relu', 'pool1', 'conv2', 'relu_1', 'pool2']
    """
    traced = trace(model, (example,), tracer="fx")
    inputs = [n.name for n in traced.module.graph.nodes if n.op == "placeholder"]
    return [*inputs[:1], *cut_candidates(model, example)]


def _samples(
    data: ArrayDataset | DatasetSplits, example: torch.Tensor, limit: int | None
) -> ArrayDataset:
    split = data.val if isinstance(data, DatasetSplits) else data
    if limit is not None and limit < 1:
        raise CompressionError(f"limit must be >= 1 (or None for all samples), got {limit}")
    if len(split) == 0:
        raise CompressionError(f"data: dataset {split.name!r} is empty")
    if tuple(split.x.shape[1:]) != tuple(example.shape[1:]):
        raise CompressionError(
            f"data: samples of {split.name!r} are {tuple(split.x.shape[1:])}, but the model "
            f"takes {tuple(example.shape[1:])}"
        )
    if limit is None or limit >= len(split):
        return split
    return split.subset(np.arange(limit, dtype=np.int64), f"{split.name}[:{limit}]")


def _activation(parts: CutParts, x: NDArray[np.float32]) -> NDArray[np.float32] | None:
    """The value at the cut for every sample, float32; ``None`` if it is not floating."""
    parts.lower.eval()
    outputs = []
    with torch.no_grad():
        for start in range(0, len(x), _BATCH):
            out = parts.lower(torch.from_numpy(x[start : start + _BATCH]))
            if not out.is_floating_point():
                return None
            outputs.append(out.float().numpy())
    return np.ascontiguousarray(np.concatenate(outputs))


def _accuracy(parts: CutParts, activation: NDArray[np.float32], y: NDArray[np.int64]) -> float:
    parts.upper.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(activation), _BATCH):
            logits = parts.upper(torch.from_numpy(activation[start : start + _BATCH]))
            predicted = logits.argmax(dim=1).numpy()
            correct += int(np.sum(predicted == y[start : start + _BATCH]))
    return correct / len(y)


def _measure(codec: Codec, activation: NDArray[np.float32], *, batch: int) -> _Measured:
    """Encode and decode each request of ``batch`` samples on its own, timing every call."""
    ratios: list[float] = []
    encode_s: list[float] = []
    decode_s: list[float] = []
    decoded: list[NDArray[np.float32]] = []
    for index in range(0, len(activation), batch):
        sample = activation[index : index + batch]
        fp32_bytes = 4 * sample.size
        started = time.perf_counter()
        payload = codec.encode(sample)
        encoded = time.perf_counter()
        restored = decode_any(payload)
        done = time.perf_counter()
        encode_s.append(encoded - started)
        decode_s.append(done - encoded)
        ratios.append(len(payload) / fp32_bytes)
        decoded.append(np.asarray(restored, dtype=np.float32).reshape(sample.shape))
    return _Measured(
        ratio=float(np.mean(ratios)),
        encode_ms=1e3 * statistics.median(encode_s),
        decode_ms=1e3 * statistics.median(decode_s),
        decoded=np.concatenate(decoded),
    )
