"""Measure codecs on one activation: size, compression ratio, error and speed.

:func:`measure_codecs` is what ``tierflow compress`` reports per cut; it is pure (no model,
no files) so that it can run on any activation a profile or a live tier captured.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

import numpy as np

from tierflow.compress.codecs.codec import Codec, codec_from_spec
from tierflow.compress.codecs.stage import Activation
from tierflow.errors import CodecError

T = TypeVar("T")


@dataclass(frozen=True)
class CodecResult:
    """One codec measured on one activation.

    Attributes
    ----------
    name:
        The codec's name (its spec string for built-ins).
    size_bytes:
        Payload size, header included.
    ratio_vs_fp32:
        ``4 * elements / size_bytes``: how many times smaller than raw float32.
    max_abs_error:
        Measured ``max |decode(encode(x)) - x|``.
    error_bound:
        The codec's stated bound, ``codec.max_abs_error(x)``.
    encode_ms, decode_ms:
        Best of ``repeats`` wall-clock timings, in milliseconds.
    """

    name: str
    size_bytes: int
    ratio_vs_fp32: float
    max_abs_error: float
    error_bound: float
    encode_ms: float
    decode_ms: float

    def __str__(self) -> str:
        return (
            f"{self.name:<18} {self.size_bytes:>10,} B  x{self.ratio_vs_fp32:6.2f}  "
            f"err {self.max_abs_error:.3g} (bound {self.error_bound:.3g})  "
            f"enc {self.encode_ms:.2f} ms  dec {self.decode_ms:.2f} ms"
        )


def measure_codecs(
    activation: Activation, codecs: Iterable[Codec | str], *, repeats: int = 5
) -> list[CodecResult]:
    """Encode and decode ``activation`` with each codec and measure the outcome.

    Parameters
    ----------
    activation:
        A float array, e.g. the output of a cut, ``[B, C, H, W]``.
    codecs:
        Codec objects, or spec strings for :func:`codec_from_spec`.
    repeats:
        Timings are the best of this many runs (the minimum is the least noisy estimate
        of the cost on a shared machine).

    Returns
    -------
    list[CodecResult]
        One result per codec, in order.

    Raises
    ------
    CodecError
        If a spec is invalid, a codec refuses the activation, or ``repeats < 1``.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.maximum(np.random.default_rng(0).normal(size=(1, 16, 8, 8)), 0).astype("f4")
    >>> [r.name for r in measure_codecs(x, ["fp16", "int4+zstd"], repeats=1)]
    ['fp16', 'int4+zstd']
    """
    if repeats < 1:
        raise CodecError(f"measure_codecs repeats={repeats}; it must be at least 1")
    array = np.asarray(activation)
    fp32_bytes = 4 * array.size
    results = []
    for item in codecs:
        codec = codec_from_spec(item) if isinstance(item, str) else item
        payload, encode_ms = _best(partial(codec.encode, array), repeats)
        decoded, decode_ms = _best(partial(codec.decode, payload), repeats)
        diff = np.abs(decoded.astype(np.float64) - array.astype(np.float64))
        results.append(
            CodecResult(
                name=codec.name,
                size_bytes=len(payload),
                ratio_vs_fp32=fp32_bytes / len(payload),
                max_abs_error=float(diff.max(initial=0.0)),
                error_bound=codec.max_abs_error(array),
                encode_ms=encode_ms,
                decode_ms=decode_ms,
            )
        )
    return results


def _best(run: Callable[[], T], repeats: int) -> tuple[T, float]:
    start = time.perf_counter()
    out = run()
    best = time.perf_counter() - start
    for _ in range(repeats - 1):
        start = time.perf_counter()
        out = run()
        best = min(best, time.perf_counter() - start)
    return out, best * 1e3
