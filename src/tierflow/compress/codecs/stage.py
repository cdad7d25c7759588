"""The lossy stage inside a codec: what turns an array into a header plus a body.

A :class:`Stage` knows one codec id. :class:`~tierflow.compress.codecs.codec.ActivationCodec`
adds the header and the lossless stage around it, so a stage never sees wire bytes other
than its own body.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from tierflow.compress.codecs.header import CodecId, Header
from tierflow.errors import CodecError

Activation = NDArray[np.floating[Any]]


def _empty() -> NDArray[np.float32]:
    return np.zeros(0, dtype=np.float32)


@dataclass(frozen=True)
class Encoded:
    """What a stage produced: the header fields it owns and the (uncompressed) body."""

    body: bytes
    k: int = 0
    scale: NDArray[np.float32] = field(default_factory=_empty)
    zero_point: NDArray[np.float32] = field(default_factory=_empty)


class Stage(Protocol):
    """One lossy (or raw) transform of an activation, identified on the wire by its id."""

    @property
    def codec_id(self) -> CodecId:
        """The id written in the payload header."""
        ...

    @property
    def spec(self) -> str:
        """The spec string naming this stage (``"int4"``, ``"topk:0.1"``)."""
        ...

    def encode(self, array: Activation) -> Encoded:
        """Encode a little-endian, C-contiguous float array (validated by the caller)."""
        ...

    def body_size(self, header: Header) -> int:
        """The exact body size, in bytes, a valid payload with ``header`` carries."""
        ...

    def decode(self, header: Header, body: bytes) -> Activation:
        """Rebuild the array from a validated header and a body of :meth:`body_size`."""
        ...

    def max_abs_error(self, array: Activation) -> float:
        """An upper bound on ``max |decode(encode(array)) - array|``."""
        ...


def check_finite(array: Activation, *, codec: str) -> None:
    """Lossy codecs state error bounds, which NaN and infinity would make meaningless."""
    if array.size and not np.isfinite(array).all():
        raise CodecError(
            f"activation holds NaN or infinite values, which codec {codec!r} cannot carry; "
            "use the 'raw' codec"
        )


def rounding_slack(array: Activation) -> float:
    """Float rounding on top of a codec's quantisation error, for the stated bounds.

    Codecs compute in float32 and return the input dtype: float32 arithmetic on the
    parameters and products costs a few float32 ulps of the largest magnitude (bounded
    here by 2**-20 relative, 16x margin over 2**-24), float16 outputs round once more
    (2**-11 relative, 2**-25 absolute for subnormals), and the float32 subnormal range
    (below ``finfo(float32).tiny``) is not resolved by the scales.
    """
    if not array.size:
        return 0.0
    amax = float(np.max(np.abs(array)))
    slack = 2.0**-20 * amax + float(np.finfo(np.float32).tiny)
    if array.dtype.itemsize == 2:
        slack += 2.0**-11 * amax + 2.0**-24
    return slack


def frombuffer(body: bytes, dtype: str | np.dtype[Any], count: int, offset: int = 0) -> Any:
    """``np.frombuffer`` that returns a writable copy.

    Read-only arrays make ``torch.from_numpy`` warn (an error under this project's
    ``filterwarnings = error``), so decoded tensors own their memory.
    """
    return np.frombuffer(body, dtype, count, offset).copy()
