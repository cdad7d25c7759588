"""ModelInfer messages on the wire with their tensor bytes held apart: no extra copies.

Note [Raw contents beside protobuf]
-----------------------------------
A 10 MB tensor sent through protobuf's Python API is copied several times: ``tobytes``,
appending to ``raw_input_contents``, ``SerializeToString``, and once more on every read of
``raw_output_contents`` (upb hands out a fresh ``bytes`` each time). This module frames
the message itself, byte for byte in protobuf's wire format, so any Open Inference
Protocol peer (tritonclient, Triton, KServe) reads and writes the same bytes:

* **encoding**: protobuf serialises the message *without* its raw contents (small), then
  each tensor is appended as one more occurrence of the repeated ``bytes`` field: the
  tag ``(field_number << 3) | 2`` as a varint, the length as a varint, the bytes. The
  protobuf encoding spec allows fields in any order and a repeated field to be split
  ("Last One Wins" / "Repeated Elements" in protobuf.dev/programming-guides/encoding), so
  this is a valid message. ``b"".join`` of the pieces makes the one copy gRPC needs: its
  serializer must return ``bytes``.
* **decoding**: a tiny varint reader walks the top-level fields of the received bytes;
  the raw contents become ``memoryview`` slices of them (no copy), every other field's
  bytes (model name, id, tensor specs, parameters: small) are handed to protobuf.

The raw-contents field numbers come from the generated descriptors, not from literals.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from google.protobuf.message import DecodeError

from tierflow.errors import WireError
from tierflow.runtime._proto import grpc_predict_v2_pb2 as pb

Header = TypeVar("Header", pb.ModelInferRequest, pb.ModelInferResponse)

# Protobuf wire types (protobuf.dev/programming-guides/encoding, "Message Structure").
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
_MAX_VARINT_BYTES = 10  # a 64-bit value in 7-bit groups


@dataclass(frozen=True, eq=False)
class InferMessage(Generic[Header]):
    """A ModelInfer request or response: the protobuf ``header`` without its raw contents,
    and the raw tensor bytes, one flat little-endian buffer per tensor, in ``raw``.

    ``raw`` holds ``memoryview`` s: of the arrays being sent (encoding side) or of the
    received message's bytes (decoding side), so building and reading messages copies no
    tensor. Build and read these through :mod:`tierflow.runtime.serde`.
    """

    header: Header
    raw: tuple[memoryview, ...]

    def __post_init__(self) -> None:
        if len(_raw_field_of(self.header)):
            raise WireError(
                f"{type(self.header).__name__}: the header must not carry raw contents;"
                " pass them as `raw`"
            )

    @property
    def nbytes(self) -> int:
        """The size of the encoded message in bytes (what crosses the network)."""
        number = _raw_number(type(self.header))
        return self.header.ByteSize() + sum(
            _field_overhead(number, b.nbytes) + b.nbytes for b in self.raw
        )


InferRequest = InferMessage[pb.ModelInferRequest]
InferResponse = InferMessage[pb.ModelInferResponse]

_RAW_FIELDS = {
    pb.ModelInferRequest: "raw_input_contents",
    pb.ModelInferResponse: "raw_output_contents",
}


def _raw_number(header_type: type[pb.ModelInferRequest] | type[pb.ModelInferResponse]) -> int:
    number: int = header_type.DESCRIPTOR.fields_by_name[_RAW_FIELDS[header_type]].number
    return number


def _raw_field_of(header: pb.ModelInferRequest | pb.ModelInferResponse) -> list[bytes]:
    field: list[bytes] = getattr(header, _RAW_FIELDS[type(header)])
    return field


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field_overhead(number: int, length: int) -> int:
    return len(_varint(number << 3 | _LEN)) + len(_varint(length))


def _read_varint(view: memoryview, pos: int, what: str) -> tuple[int, int]:
    """(value, position after it) of the varint at ``pos``; WireError if malformed."""
    value = shift = 0
    for index in range(pos, min(pos + _MAX_VARINT_BYTES, len(view))):
        byte = view[index]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, index + 1
        shift += 7
    if pos + _MAX_VARINT_BYTES <= len(view):
        raise WireError(f"{what} at byte {pos}: varint longer than {_MAX_VARINT_BYTES} bytes")
    raise WireError(f"{what} at byte {pos}: varint truncated by the end of the message")


def _skip(view: memoryview, pos: int, size: int, what: str) -> int:
    if size > len(view) - pos:
        raise WireError(
            f"{what} at byte {pos}: {size} bytes run past the end of the message"
            f" ({len(view)} bytes)"
        )
    return pos + size


class _Codec(Generic[Header]):
    """Encodes and decodes one message type (see Note [Raw contents beside protobuf])."""

    def __init__(self, header_type: type[Header]) -> None:
        self._type: type[Header] = header_type
        self._name = header_type.__name__
        self._raw_name = _RAW_FIELDS[header_type]
        self._raw_number = _raw_number(header_type)
        self._raw_tag = _varint(self._raw_number << 3 | _LEN)

    def encode(self, message: InferMessage[Header]) -> bytes:
        parts: list[bytes | memoryview] = [message.header.SerializeToString()]
        for raw in message.raw:
            parts += (self._raw_tag, _varint(raw.nbytes), raw)
        return b"".join(parts)

    def decode(self, data: bytes | bytearray | memoryview) -> InferMessage[Header]:
        view = memoryview(data).cast("B")
        raw: list[memoryview] = []
        spans: list[list[int]] = []  # [start, end) of the header's fields, adjacent merged
        pos, end = 0, len(view)
        while pos < end:
            start = pos
            key, pos = _read_varint(view, pos, f"{self._name}: field tag")
            number, kind = key >> 3, key & 7
            what = f"{self._name}: field {number}"
            if number == 0:
                raise WireError(f"{self._name} at byte {start}: field number 0 is invalid")
            if number == self._raw_number and kind != _LEN:
                raise WireError(
                    f"{what} ({self._raw_name}) at byte {start} has wire type {kind},"
                    f" expected {_LEN} (length-delimited)"
                )
            if kind == _VARINT:
                pos = _read_varint(view, pos, what)[1]
            elif kind == _I64:
                pos = _skip(view, pos, 8, what)
            elif kind == _I32:
                pos = _skip(view, pos, 4, what)
            elif kind == _LEN:
                length, pos = _read_varint(view, pos, f"{what}: length")
                begin, pos = pos, _skip(view, pos, length, what)
                if number == self._raw_number:
                    raw.append(view[begin:pos])
                    continue
            else:  # 3 and 4 (groups) are not used by the OIP; 6 and 7 do not exist
                raise WireError(f"{what} at byte {start} has unsupported wire type {kind}")
            if spans and spans[-1][1] == start:
                spans[-1][1] = pos
            else:
                spans.append([start, pos])
        header = self._type()
        try:
            # The header's fields are small (names, shapes, parameters): copying them is cheap.
            header.ParseFromString(b"".join(view[s:e] for s, e in spans))
        except DecodeError as error:
            raise WireError(f"{self._name}: malformed fields: {error}") from error
        return InferMessage(header, tuple(raw))


_REQUEST = _Codec(pb.ModelInferRequest)
_RESPONSE = _Codec(pb.ModelInferResponse)

#: ``InferRequest`` → wire bytes (a gRPC ``request_serializer``).
encode_request: Callable[[InferRequest], bytes] = _REQUEST.encode
#: Wire bytes → ``InferRequest``; WireError if malformed (a gRPC ``request_deserializer``).
decode_request: Callable[[bytes], InferRequest] = _REQUEST.decode
#: ``InferResponse`` → wire bytes (a gRPC ``response_serializer``).
encode_response: Callable[[InferResponse], bytes] = _RESPONSE.encode
#: Wire bytes → ``InferResponse``; WireError if malformed (a gRPC ``response_deserializer``).
decode_response: Callable[[bytes], InferResponse] = _RESPONSE.decode
