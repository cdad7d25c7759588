"""The zero-copy ModelInfer codec speaks protobuf's wire format and refuses malformed bytes."""

from __future__ import annotations

from collections.abc import Mapping

import grpc
import numpy as np
import pytest
from numpy.typing import NDArray

from tierflow.errors import WireError
from tierflow.runtime import serde, wire
from tierflow.runtime._proto import grpc_predict_v2_pb2 as pb
from tierflow.runtime.client import connect
from tierflow.runtime.executor import IOSpec
from tierflow.runtime.route import Route
from tierflow.runtime.server import TierServer
from tierflow.runtime.service import TierService

X = np.arange(6, dtype=np.float32).reshape(2, 3)
IDS = np.array([7, -1], dtype=np.int64)
RAW_INPUT = pb.ModelInferRequest.DESCRIPTOR.fields_by_name["raw_input_contents"].number


def _protobuf_request() -> pb.ModelInferRequest:
    """The request protobuf's own API builds for X and IDS, with a parameter."""
    request = pb.ModelInferRequest(model_name="m", id="r1")
    request.inputs.add(name="x", datatype="FP32", shape=[2, 3])
    request.inputs.add(name="ids", datatype="INT64", shape=[2])
    request.raw_input_contents.extend([X.tobytes(), IDS.tobytes()])
    request.parameters["k"].string_param = "v"
    return request


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes([*out, value])


def test_our_request_bytes_parse_with_protobuf_to_the_message_it_builds() -> None:
    request = serde.request_from_tensors(
        "m", {"x": X, "ids": IDS}, request_id="r1", parameters={"k": "v"}
    )

    parsed = pb.ModelInferRequest.FromString(wire.encode_request(request))

    assert parsed == _protobuf_request()


def test_our_response_bytes_parse_with_protobuf_to_the_message_it_builds() -> None:
    response = serde.response_from_tensors("m", {"y": X}, request_id="r1")
    expected = pb.ModelInferResponse(model_name="m", id="r1", raw_output_contents=[X.tobytes()])
    expected.outputs.add(name="y", datatype="FP32", shape=[2, 3])

    assert pb.ModelInferResponse.FromString(wire.encode_response(response)) == expected


def test_protobuf_serialised_bytes_decode_to_the_same_tensors() -> None:
    data = _protobuf_request().SerializeToString()

    request = wire.decode_request(data)
    tensors = serde.tensors_from_request(request)

    assert request.header.model_name == "m" and request.header.id == "r1"
    assert len(request.header.raw_input_contents) == 0  # held apart, as views
    assert serde.string_parameters(request.header.parameters) == {"k": "v"}
    np.testing.assert_array_equal(tensors["x"], X)
    np.testing.assert_array_equal(tensors["ids"], IDS)


def test_encoded_size_is_what_nbytes_predicts() -> None:
    request = serde.request_from_tensors("m", {"x": np.ones(40_000, np.float32)})

    assert request.nbytes == len(wire.encode_request(request))


def test_raw_contents_split_around_other_fields_are_collected_in_order() -> None:
    header = pb.ModelInferRequest(model_name="m")
    header.inputs.add(name="x", datatype="FP32", shape=[2, 3])
    tag = _varint(RAW_INPUT << 3 | 2)
    raw = X.tobytes()
    # raw first, then the header: fields may come in any order
    data = tag + _varint(len(raw)) + raw + header.SerializeToString()

    tensors = serde.tensors_from_request(wire.decode_request(data))

    np.testing.assert_array_equal(tensors["x"], X)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x0a\x05mo", r"run past the end"),  # model_name claims 5 bytes, has 2
        (b"\x0a", r"varint truncated"),  # a tag, then no length
        (b"\x0a\xff\xff", r"varint truncated"),  # length varint never ends
        (b"\x0a" + b"\xff" * 10 + b"\x01", r"longer than 10 bytes"),
        (b"\x3a\xff\xff\xff\xff\x0f", r"run past the end"),  # raw field, 4 GiB claimed
        (b"\x38\x01", r"field 7 \(raw_input_contents\).*wire type 0"),
        (b"\x0b", r"unsupported wire type 3"),
        (b"\x02\x00", r"field number 0"),
        (b"\x1a\x02\xff\xfe", r"malformed fields"),  # id is a string: invalid UTF-8
    ],
)
def test_malformed_requests_are_refused_with_a_wire_error(data: bytes, message: str) -> None:
    with pytest.raises(WireError, match=message):
        wire.decode_request(data)


def test_a_header_carrying_raw_contents_is_refused() -> None:
    with pytest.raises(WireError, match="must not carry raw contents"):
        wire.InferRequest(pb.ModelInferRequest(raw_input_contents=[b"1234"]), ())


class _Identity:
    inputs = (IOSpec("x", (-1,), "float32"),)
    outputs = (IOSpec("y", (-1,), "float32"),)

    def run(self, inputs: Mapping[str, NDArray[np.generic]]) -> dict[str, NDArray[np.generic]]:
        return {"y": inputs["x"]}


def test_a_server_answers_malformed_bytes_invalid_argument_naming_the_problem() -> None:
    service = TierService("m", [_Identity()], route=Route("cloud"))
    with TierServer(service) as server, connect(server.address) as client:
        call = client._channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        with pytest.raises(grpc.RpcError) as caught:
            call(b"\x38\x01", timeout=10)
        result = client.infer(np.ones(4, np.float32))

    assert isinstance(caught.value, grpc.Call)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "wire type 0" in str(caught.value.details())
    assert not result.output.flags.writeable  # a read-only view of the received bytes
    np.testing.assert_array_equal(result.output, np.ones(4, np.float32))
