"""Compressed cut tensors on the wire: how a link carries a codec's payload.

A tier whose :class:`~tierflow.runtime.route.Route` names a codec for a forwarded tensor
sends that tensor as its codec payload (:mod:`tierflow.compress.codecs`) instead of its raw
bytes. See Note [Codec payloads on the wire]; the receiving tier needs no configuration.

Note [Codec payloads on the wire]
---------------------------------
A compressed tensor keeps its name and travels as an ordinary OIP input tensor of
datatype ``UINT8`` and shape ``[payload bytes]``, its raw contents the payload, with the
tensor parameter ``tierflow-codec`` set to the codec spec (``"int8+zstd"``). So any Open
Inference Protocol peer that does not know tierflow still sees a valid message (a byte
tensor with a parameter it may ignore), and nothing else in the request changes.

* ``UINT8`` rather than ``BYTES``: OIP's ``BYTES`` elements carry a 4-byte length prefix
  in raw contents and are meant for strings; one flat byte tensor needs neither.
* A tensor parameter rather than a request parameter: the mark stays with the tensor it
  describes, with no name mangling.
* The receiver decodes with :func:`~tierflow.compress.codecs.decode_any`: the payload's
  own header (checked there: magic, version, codec, shape, header CRC32) says how, so the
  parameter is a mark, not a second source of truth. The decoded array is then checked
  against the tier's input specs like any other tensor.
* The tier's metadata (ModelMetadata) still describes the decoded tensor: the codec is
  a property of one link, not of the model's interface.
* Responses are not compressed: they carry model outputs (logits), small next to cut
  activations.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray

from tierflow.compress.codecs import Codec, decode_any
from tierflow.errors import CodecError, WireError
from tierflow.runtime.serde import TensorMap

CODEC_PARAMETER = "tierflow-codec"


def encode_tensors(
    tensors: TensorMap, codecs: Mapping[str, Codec]
) -> tuple[TensorMap, dict[str, dict[str, str]]]:
    """The tensors to send, those named in ``codecs`` replaced by their payloads.

    Returns the tensors (same names and order) and the tensor parameters that mark the
    compressed ones, for :func:`~tierflow.runtime.serde.request_from_tensors`.

    Raises
    ------
    CodecError
        If a codec refuses its tensor (a non-float dtype, non-finite values, ...); the
        message names the tensor.

    Examples
    --------
    >>> from tierflow.compress.codecs import codec_from_spec
    >>> x = np.ones((1, 2, 3, 3), dtype=np.float32)
    >>> sent, marks = encode_tensors({"h": x}, {"h": codec_from_spec("int8")})
    >>> sent["h"].dtype.name, marks
    ('uint8', {'h': {'tierflow-codec': 'int8'}})
    """
    if not codecs:
        return tensors, {}
    sent: TensorMap = {}
    marks: dict[str, dict[str, str]] = {}
    for name, array in tensors.items():
        codec = codecs.get(name)
        if codec is None:
            sent[name] = array
            continue
        if not np.issubdtype(array.dtype, np.floating):
            raise CodecError(
                f"tensor {name!r} is {array.dtype.name}; codec {codec.name!r} compresses"
                " floating-point tensors only"
            )
        try:
            # The cast only tells mypy what the check above established.
            payload = codec.encode(cast("NDArray[np.floating[Any]]", array))
        except CodecError as error:
            raise CodecError(f"tensor {name!r} (codec {codec.name!r}): {error}") from error
        sent[name] = np.frombuffer(payload, dtype=np.uint8)
        marks[name] = {CODEC_PARAMETER: codec.name}
    return sent, marks


def decode_tensors(tensors: TensorMap, parameters: Mapping[str, Mapping[str, str]]) -> TensorMap:
    """``tensors`` with each one marked by ``tierflow-codec`` decoded from its payload.

    ``parameters`` are the request's tensor parameters
    (:func:`~tierflow.runtime.serde.input_parameters`). Unmarked tensors are returned as
    they are (no copy), so a request without codecs costs one dictionary lookup.

    Raises
    ------
    WireError
        If a marked tensor is not a 1-d ``UINT8`` tensor or its payload is malformed; the
        message names the tensor, the codec it claims and the codec error.
    """
    marked = {
        name: values[CODEC_PARAMETER]
        for name, values in parameters.items()
        if CODEC_PARAMETER in values and name in tensors
    }
    if not marked:
        return tensors
    decoded = dict(tensors)
    for name, spec in marked.items():
        payload = tensors[name]
        if payload.dtype != np.uint8 or payload.ndim != 1:
            raise WireError(
                f"tensor {name!r} is marked {CODEC_PARAMETER}={spec!r} but is "
                f"{payload.dtype.name} {list(payload.shape)}, not a 1-d UINT8 payload"
            )
        try:
            decoded[name] = np.asarray(decode_any(payload.tobytes()))
        except CodecError as error:
            raise WireError(
                f"tensor {name!r} (marked {CODEC_PARAMETER}={spec!r}): bad codec payload: {error}"
            ) from error
    return decoded
