"""Wire tensors ↔ numpy arrays: raw little-endian bytes, sizes checked."""

from __future__ import annotations

import numpy as np
import pytest

from tierflow.errors import WireError
from tierflow.runtime import serde, wire
from tierflow.runtime.route import Route, Upstream
from tierflow.runtime.trace import LinkHop, TierHop, Trace

DTYPES = ["float32", "float16", "float64", "int64", "int32", "int8", "uint8", "bool"]


@pytest.mark.parametrize("dtype", DTYPES)
def test_each_dtype_round_trips_through_raw_bytes(dtype: str) -> None:
    array = (np.arange(24).reshape(2, 3, 4) % 7).astype(dtype)

    request = serde.request_from_tensors("m", {"x": array})
    decoded = serde.tensors_from_request(wire.decode_request(wire.encode_request(request)))

    assert decoded["x"].dtype == array.dtype
    np.testing.assert_array_equal(decoded["x"], array)
    assert request.raw[0] == array.astype(array.dtype.newbyteorder("<")).tobytes()


def test_responses_round_trip_with_string_parameters() -> None:
    outputs = {"y": np.ones((1, 5), np.float32), "z": np.zeros(3, np.int64)}

    response = serde.response_from_tensors("m", outputs, parameters={"k": "v"})
    decoded = wire.decode_response(wire.encode_response(response))

    assert set(serde.tensors_from_response(decoded)) == {"y", "z"}
    assert serde.string_parameters(decoded.header.parameters) == {"k": "v"}


def test_a_tensor_with_the_wrong_byte_count_is_refused_naming_it() -> None:
    sent = serde.request_from_tensors("m", {"pixels": np.ones((2, 3), np.float32)})
    request = wire.InferRequest(sent.header, (sent.raw[0][:-4],))

    with pytest.raises(WireError, match=r"'pixels'.*needs 24 bytes, got 20"):
        serde.tensors_from_request(request)


def test_missing_raw_contents_are_refused() -> None:
    request = wire.InferRequest(serde.request_from_tensors("m", {"x": np.ones(2)}).header, ())

    with pytest.raises(WireError, match="raw contents"):
        serde.tensors_from_request(request)


def test_an_unknown_datatype_is_refused() -> None:
    request = serde.request_from_tensors("m", {"x": np.ones(2, np.float32)})
    request.header.inputs[0].datatype = "BF16"

    with pytest.raises(WireError, match=r"'x'.*unsupported datatype 'BF16'"):
        serde.tensors_from_request(request)


def test_decoding_does_not_copy_the_received_bytes() -> None:
    data = wire.encode_request(serde.request_from_tensors("m", {"x": np.ones(1000, np.float32)}))

    decoded = serde.tensors_from_request(wire.decode_request(data))["x"]

    assert not decoded.flags.writeable  # a view of the message's bytes, not a copy
    assert np.shares_memory(decoded, np.frombuffer(data, np.uint8))


def test_encoding_does_not_copy_the_arrays() -> None:
    array = np.ones(1000, np.float32)

    request = serde.request_from_tensors("m", {"x": array})

    assert np.shares_memory(np.asarray(request.raw[0]), array)


def test_a_trace_round_trips_through_json() -> None:
    trace = Trace(
        "cloud",
        (TierHop("device", 1.0, 0.0, 9.0), TierHop("cloud", 2.0, 0.5, 3.0)),
        (LinkHop("device", "cloud", 100, 50, 4.0),),
    )

    assert Trace.from_json(trace.to_json()) == trace
    assert "device→cloud" in str(trace)


def test_a_route_round_trips_through_a_dict() -> None:
    route = Route("edge", outputs=("y",), forward=("h",), upstream=Upstream("cloud", "h:1"))

    assert Route.from_dict(route.to_dict()) == route
