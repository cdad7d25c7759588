"""The one place that converts Open Inference Protocol messages to and from numpy arrays.

Tensors travel as raw little-endian bytes in ``raw_input_contents`` /
``raw_output_contents`` (the OIP's "raw" representation: flattened, row-major, no
padding), never as typed lists, JSON or pickle. Messages are
:class:`~tierflow.runtime.wire.InferMessage` s, which keep the tensor bytes apart from the
protobuf header (see Note [Raw contents beside protobuf] in :mod:`tierflow.runtime.wire`):

* encoding copies nothing: the message holds ``memoryview`` s of the (C-contiguous,
  little-endian) arrays, so they must not be modified until the message is sent;
* decoding copies nothing: the arrays returned are **read-only** ``numpy.frombuffer``
  views of the received bytes (possibly not aligned to their dtype, which numpy, ONNX
  Runtime and PyTorch accept); copy one (``array.copy()``) to write into it.

String parameters carry metadata such as the ``tierflow-trace`` (see
:mod:`tierflow.runtime.trace`); tensor parameters mark compressed tensors (see
:mod:`tierflow.runtime.link_codecs`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from tierflow.errors import WireError
from tierflow.runtime._proto import grpc_predict_v2_pb2 as pb
from tierflow.runtime.executor import IOSpec
from tierflow.runtime.wire import InferRequest, InferResponse

if TYPE_CHECKING:
    from google.protobuf.internal.containers import MessageMap

TensorMap = dict[str, NDArray[np.generic]]

# OIP datatype names (KServe v2 spec, "Tensor Data Types") and their numpy twins. BF16 and
# BYTES have no fixed-size numpy dtype and are refused.
_DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
_NAMES: dict[str, str] = {dtype.name: datatype for datatype, dtype in _DATATYPES.items()}


def datatype_of(dtype: np.dtype[Any] | str, *, tensor: str = "?") -> str:
    """The OIP datatype name (``"FP32"``, ...) for a numpy dtype; WireError if it has none."""
    name = np.dtype(dtype).name
    if name not in _NAMES:
        supported = ", ".join(sorted(_NAMES))
        raise WireError(f"tensor {tensor!r}: dtype {name} has no OIP datatype ({supported})")
    return _NAMES[name]


def dtype_of(datatype: str, *, tensor: str = "?") -> np.dtype[Any]:
    """The little-endian numpy dtype for an OIP datatype name; WireError if unsupported."""
    if datatype not in _DATATYPES:
        supported = ", ".join(_DATATYPES)
        raise WireError(f"tensor {tensor!r}: unsupported datatype {datatype!r} ({supported})")
    return _DATATYPES[datatype]


def _encode(name: str, array: NDArray[np.generic]) -> tuple[str, list[int], memoryview]:
    datatype = datatype_of(array.dtype, tensor=name)
    wire = np.ascontiguousarray(array, dtype=_DATATYPES[datatype])  # no copy if it already is
    return datatype, list(wire.shape), wire.reshape(-1).view(np.uint8).data


def _decode(name: str, datatype: str, shape: Sequence[int], raw: memoryview) -> NDArray[np.generic]:
    dtype = dtype_of(datatype, tensor=name)
    if any(dim < 0 for dim in shape):
        raise WireError(f"tensor {name!r}: shape {list(shape)} has a negative dimension")
    expected = math.prod(shape) * dtype.itemsize
    if raw.nbytes != expected:
        raise WireError(
            f"tensor {name!r}: {datatype} {list(shape)} needs {expected} bytes, got {raw.nbytes}"
        )
    array: NDArray[np.generic] = np.frombuffer(raw, dtype=dtype).reshape(tuple(shape))
    if array.dtype.byteorder not in ("=", "|"):  # a big-endian host: native order for compute
        array = array.astype(array.dtype.newbyteorder("="))
    return array


def _check_raw_count(kind: str, tensors: int, raw: int) -> None:
    if tensors != raw:
        raise WireError(
            f"{kind}: {tensors} tensors but {raw} raw contents; tierflow needs one raw"
            " little-endian buffer per tensor (typed contents are not supported)"
        )


def set_string_parameters(
    target: MessageMap[str, pb.InferParameter], values: Mapping[str, str]
) -> None:
    """Write ``values`` as OIP string parameters into a message's ``parameters`` map."""
    for key, value in values.items():
        target[key].string_param = value


def string_parameters(source: MessageMap[str, pb.InferParameter]) -> dict[str, str]:
    """The string-valued parameters of a message (other kinds are skipped)."""
    return {
        key: value.string_param
        for key, value in source.items()
        if value.WhichOneof("parameter_choice") == "string_param"
    }


def _add_tensors(
    specs: Any,
    tensors: Mapping[str, NDArray[np.generic]],
    parameters: Mapping[str, Mapping[str, str]] | None = None,
) -> tuple[memoryview, ...]:
    """Describe each tensor in ``specs`` (a header's inputs or outputs); return its bytes.

    ``parameters`` adds string parameters to the named tensors' descriptions.
    """
    raw = []
    for name, array in tensors.items():
        datatype, shape, data = _encode(name, np.asarray(array))
        spec = specs.add(name=name, datatype=datatype, shape=shape)
        if parameters and name in parameters:
            set_string_parameters(spec.parameters, parameters[name])
        raw.append(data)
    return tuple(raw)


def _read_tensors(what: str, specs: Any, raw: Sequence[memoryview]) -> TensorMap:
    """Named read-only views of ``raw``, as ``specs`` describe them; WireError if malformed."""
    _check_raw_count(what, len(specs), len(raw))
    return {
        spec.name: _decode(spec.name, spec.datatype, spec.shape, data)
        for spec, data in zip(specs, raw, strict=True)
    }


def request_from_tensors(
    model: str,
    tensors: Mapping[str, NDArray[np.generic]],
    *,
    request_id: str = "",
    parameters: Mapping[str, str] | None = None,
    tensor_parameters: Mapping[str, Mapping[str, str]] | None = None,
) -> InferRequest:
    """A ModelInfer request carrying ``tensors`` as raw little-endian bytes (not copied).

    ``parameters`` are the request's string parameters, ``tensor_parameters`` those of
    individual input tensors, by tensor name.
    """
    header = pb.ModelInferRequest(model_name=model, id=request_id)
    raw = _add_tensors(header.inputs, tensors, tensor_parameters)
    set_string_parameters(header.parameters, parameters or {})
    return InferRequest(header, raw)


def tensors_from_request(request: InferRequest) -> TensorMap:
    """The request's input tensors as read-only numpy views; WireError if malformed."""
    return _read_tensors("request", request.header.inputs, request.raw)


def input_parameters(request: InferRequest) -> dict[str, dict[str, str]]:
    """String parameters of the request's input tensors, by tensor name; tensors without
    any are left out (so a request without tensor parameters gives ``{}``)."""
    return {
        spec.name: string_parameters(spec.parameters)
        for spec in request.header.inputs
        if spec.parameters
    }


def response_from_tensors(
    model: str,
    tensors: Mapping[str, NDArray[np.generic]],
    *,
    request_id: str = "",
    parameters: Mapping[str, str] | None = None,
) -> InferResponse:
    """A ModelInfer response carrying ``tensors`` as raw little-endian bytes (not copied)."""
    header = pb.ModelInferResponse(model_name=model, id=request_id)
    raw = _add_tensors(header.outputs, tensors)
    set_string_parameters(header.parameters, parameters or {})
    return InferResponse(header, raw)


def tensors_from_response(response: InferResponse) -> TensorMap:
    """The response's output tensors as read-only numpy views; WireError if malformed."""
    return _read_tensors("response", response.header.outputs, response.raw)


def metadata_from_specs(
    model: str, inputs: Sequence[IOSpec], outputs: Sequence[IOSpec], *, platform: str
) -> pb.ModelMetadataResponse:
    """A ModelMetadataResponse describing a model's input and output tensors."""
    response = pb.ModelMetadataResponse(name=model, versions=["1"], platform=platform)
    for target, specs in ((response.inputs, inputs), (response.outputs, outputs)):
        for spec in specs:
            datatype = datatype_of(spec.dtype, tensor=spec.name)
            target.add(name=spec.name, datatype=datatype, shape=list(spec.shape))
    return response


def specs_from_metadata(
    response: pb.ModelMetadataResponse,
) -> tuple[tuple[IOSpec, ...], tuple[IOSpec, ...]]:
    """The (inputs, outputs) IOSpecs a ModelMetadataResponse describes."""

    def convert(spec: pb.ModelMetadataResponse.TensorMetadata) -> IOSpec:
        dtype = dtype_of(spec.datatype, tensor=spec.name)
        return IOSpec(spec.name, tuple(spec.shape), np.dtype(dtype.type).name)

    return tuple(map(convert, response.inputs)), tuple(map(convert, response.outputs))
