"""The :class:`Codec` extension point, the built-in codecs and their spec strings.

A built-in codec is a lossy (or raw) stage followed by an optional lossless stage, named by
a spec string ``STAGE[+LOSSLESS]``:

=============  ==============================================================
``raw``        the array's bytes, exact
``fp16``       half precision
``int8``       per-channel affine 8-bit quantisation (channel = axis 1)
``int4``       the same with 4 bits, two codes per byte
``topk[:K]``   keep the K largest magnitudes; K an integer count or a fraction
               with a decimal point (``topk:0.05``); default ``topk:0.1``
``+zlib``      ``+zstd``, ``+lz4``: lossless stage on the body; ``+lossless``
               picks the measured default (:data:`DEFAULT_LOSSLESS`)
=============  ==============================================================

A lossless name alone (``"zstd"``) means ``raw+zstd``. Every payload carries its codec in
its header (see :mod:`tierflow.compress.codecs.header`), so :func:`decode_any` needs no
configuration on the receiving tier.

Note: choosing the lossless stage
---------------------------------
``+lossless`` means zstd at level 1. Measured with ``python -m
tierflow.compress.codecs.bench`` (ReLU activations of random-init resnet18 at 224x224 after
layer2 and layer3, and zoo:lenet on 16 MNIST digits after pool2; a shared 2-core x86 CPU,
zstandard 0.25, lz4 4.4, Python's zlib; best of 7):

* Ratio: zstd-1 is the best or within 2% of the best stage on every cut and codec
  (int4 body after layer2: zstd-1 x1.45, zstd-3 x1.45, zlib-6 x1.43, zlib-1 x1.40,
  lz4 x1.25; raw float32: zstd-1 x1.65, zlib-6 x1.66, lz4 x1.45).
* Speed: zstd-1 encodes 10-15x faster than zlib-1 (raw after layer2: 0.62 ms against
  9.6 ms; int4: 0.07 ms against 0.72 ms) and decodes ~5x faster. lz4 is another 2-3x
  faster (int4 after layer2: 0.02 ms encode) but sends 15% more bytes.
* Break-even: on the int4 body after layer2, lz4 saves ~0.09 ms of CPU and costs 5.3 KB
  more on the wire, which only pays on links above ~500 Mbit/s. Edge links (Wi-Fi, LTE,
  5G uplinks: 10-300 Mbit/s) are slower, so zstd-1 is the default and lz4 the choice for
  datacentre hops; zlib is kept for peers without zstd.
* zstd-3 gains < 1% over zstd-1 at 1.5-2x the encode time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from tierflow.compress.codecs.affine import AffineInt
from tierflow.compress.codecs.floats import Float16, Raw
from tierflow.compress.codecs.header import (
    CodecId,
    Header,
    check_shape,
    dtype_id,
    pack_header,
    read_header,
)
from tierflow.compress.codecs.lossless import Lossless, compress, decompress
from tierflow.compress.codecs.stage import Activation, Stage
from tierflow.compress.codecs.topk import TopK
from tierflow.errors import CodecError

DEFAULT_LOSSLESS = Lossless.ZSTD

# The wire format's table of stages: a decoder needs no parameters beyond the header.
_DECODERS: dict[CodecId, Stage] = {
    CodecId.RAW: Raw(),
    CodecId.FP16: Float16(),
    CodecId.INT8: AffineInt(8),
    CodecId.INT4: AffineInt(4),
    CodecId.TOPK: TopK(),
}


@runtime_checkable
class Codec(Protocol):
    """How an activation crosses a cut: bytes out, an array back, and a stated error.

    Implementations must satisfy ``max |decode(encode(x)) - x| <= max_abs_error(x)`` for
    every array they accept, and raise :class:`~tierflow.errors.CodecError` (never another
    exception) on arrays they refuse and on malformed payloads.
    """

    @property
    def name(self) -> str:
        """A short name; for built-ins, the spec string :func:`codec_from_spec` reads."""
        ...

    def encode(self, array: Activation) -> bytes:
        """Encode an activation into a self-describing payload."""
        ...

    def decode(self, payload: bytes) -> Activation:
        """Decode a payload produced by :meth:`encode`."""
        ...

    def max_abs_error(self, array: Activation) -> float:
        """Upper bound on the absolute error :meth:`encode` then :meth:`decode` introduce."""
        ...


@dataclass(frozen=True)
class ActivationCodec:
    """A built-in codec: a lossy (or raw) stage, then an optional lossless stage.

    Examples
    --------
    >>> import numpy as np
    >>> codec = ActivationCodec(AffineInt(4), Lossless.ZSTD)
    >>> codec.name
    'int4+zstd'
    >>> x = np.maximum(np.random.default_rng(0).normal(size=(1, 8, 4, 4)), 0).astype("f4")
    >>> y = codec.decode(codec.encode(x))
    >>> bool(np.abs(y - x).max() <= codec.max_abs_error(x))
    True
    """

    stage: Stage
    lossless: Lossless = Lossless.NONE

    @property
    def name(self) -> str:
        """The spec string, e.g. ``"int4+zstd"``."""
        if self.lossless is Lossless.NONE:
            return self.stage.spec
        return f"{self.stage.spec}+{self.lossless.value}"

    def encode(self, array: Activation) -> bytes:
        """Header (with this codec's id and parameters) followed by the body."""
        arr = np.asarray(array)
        dtype = arr.dtype
        dtype_id(dtype)  # refuses non-float dtypes, naming them
        check_shape(arr.shape, what="activation shape")
        # astype, not ascontiguousarray, which turns a 0-d array into 1-d.
        arr = arr.astype(dtype.newbyteorder("<"), order="C", copy=False)
        encoded = self.stage.encode(arr)
        header = Header(
            self.stage.codec_id,
            self.lossless.wire_id,
            arr.dtype,
            tuple(int(d) for d in arr.shape),
            encoded.k,
            encoded.scale,
            encoded.zero_point,
        )
        return pack_header(header) + compress(encoded.body, self.lossless)

    def decode(self, payload: bytes) -> Activation:
        """Decode a payload of this codec; one from another codec is refused by name."""
        header, offset = read_header(payload)
        lossless = Lossless.from_wire_id(header.lossless_id)
        if header.codec_id != self.stage.codec_id or lossless is not self.lossless:
            raise CodecError(
                f"codec payload was encoded with {_describe(header)}, not {self.name!r}; "
                "use decode_any to accept any codec"
            )
        return _decode_body(header, payload, offset)

    def max_abs_error(self, array: Activation) -> float:
        """The lossy stage's bound; the lossless stage adds nothing."""
        arr = np.asarray(array)
        dtype_id(arr.dtype)
        return self.stage.max_abs_error(
            arr.astype(arr.dtype.newbyteorder("<"), order="C", copy=False)
        )


def decode_any(payload: bytes) -> Activation:
    """Decode a payload of any built-in codec, reading the codec from its header.

    Raises
    ------
    CodecError
        If the payload is malformed; the message names the field at fault.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.arange(6, dtype=np.float32).reshape(1, 2, 3)
    >>> decode_any(codec_from_spec("raw+lz4").encode(x)).tolist()
    [[[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]]
    """
    header, offset = read_header(payload)
    return _decode_body(header, payload, offset)


def codec_from_spec(spec: str) -> ActivationCodec:
    """Build a built-in codec from its spec string (see the module docstring).

    Examples
    --------
    >>> codec_from_spec("int4+zstd").name
    'int4+zstd'
    >>> codec_from_spec("topk:0.05+lossless").name
    'topk:0.05+zstd'
    """
    parts = spec.strip().lower().split("+")
    if len(parts) > 2 or not all(parts):
        raise CodecError(f"codec spec {spec!r} is not of the form STAGE[+LOSSLESS]")
    if len(parts) == 1 and _lossless(parts[0]) is not None:
        parts = ["raw", parts[0]]
    stage = _stage(parts[0], spec)
    lossless = Lossless.NONE
    if len(parts) == 2:
        found = _lossless(parts[1])
        if found is None:
            raise CodecError(
                f"codec spec {spec!r}: unknown lossless stage {parts[1]!r} "
                "(known: zlib, zstd, lz4, lossless, none)"
            )
        lossless = found
    return ActivationCodec(stage, lossless)


def _lossless(name: str) -> Lossless | None:
    if name == "lossless":
        return DEFAULT_LOSSLESS
    try:
        return Lossless(name)
    except ValueError:
        return None


def _stage(text: str, spec: str) -> Stage:
    name, _, arg = text.partition(":")
    simple: dict[str, Stage] = {
        "raw": Raw(),
        "fp16": Float16(),
        "int8": AffineInt(8),
        "int4": AffineInt(4),
    }
    if name in simple and not arg:
        return simple[name]
    if name == "topk":
        if not arg:
            return TopK()
        try:
            is_fraction = "." in arg or "e" in arg
            return TopK(fraction=float(arg)) if is_fraction else TopK(k=int(arg))
        except ValueError:
            raise CodecError(
                f"codec spec {spec!r}: topk takes an integer count or a fraction like 0.1, "
                f"not {arg!r}"
            ) from None
    raise CodecError(
        f"codec spec {spec!r}: unknown codec {text!r} (known: raw, fp16, int8, int4, topk[:K])"
    )


def _describe(header: Header) -> str:
    stage = _DECODERS[header.codec_id].spec.split(":")[0]
    lossless = Lossless.from_wire_id(header.lossless_id)
    return repr(stage if lossless is Lossless.NONE else f"{stage}+{lossless.value}")


def _decode_body(header: Header, payload: bytes, offset: int) -> Activation:
    stage = _DECODERS[header.codec_id]
    lossless = Lossless.from_wire_id(header.lossless_id)
    size = stage.body_size(header)
    stored = memoryview(payload)[offset:]
    if lossless is Lossless.NONE:
        if len(stored) != size:
            raise CodecError(
                f"codec payload body is {len(stored)} bytes; codec "
                f"{_describe(header)} with shape {header.shape} needs {size}"
            )
        body = bytes(stored)
    else:
        body = decompress(bytes(stored), lossless, size=size)
    return stage.decode(header, body)
