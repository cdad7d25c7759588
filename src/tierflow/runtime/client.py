"""Calling a tier service: one request, many pipelined requests, or asyncio.

Any Open Inference Protocol server answers these clients; tierflow tier services also
return a :class:`~tierflow.runtime.trace.Trace` with each result. ModelInfer messages go
through :mod:`tierflow.runtime.wire` (protobuf's wire format, tensors not copied): the
request is encoded before the call returns control, so inputs may be reused once
``infer`` returns (or ``infer_many`` has moved past them), and outputs are **read-only**
views of the received bytes (``result.output.copy()`` to modify one).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import grpc
import grpc.aio
import numpy as np
from numpy.typing import NDArray

from tierflow.errors import ServiceError, WireError
from tierflow.runtime import serde, wire
from tierflow.runtime._proto import grpc_predict_v2_pb2 as pb
from tierflow.runtime.executor import IOSpec
from tierflow.runtime.security import TlsFiles, bearer_metadata
from tierflow.runtime.trace import TRACE_PARAMETER, Trace
from tierflow.runtime.transport import DEFAULT_MAX_MESSAGE_BYTES, channel_options, method_path

Inputs = NDArray[np.generic] | Mapping[str, NDArray[np.generic]]


@dataclass(frozen=True)
class Result:
    """The outputs of one inference and the trace of the tiers that computed them."""

    outputs: dict[str, NDArray[np.generic]]
    trace: Trace | None

    @property
    def output(self) -> NDArray[np.generic]:
        """The only output; ValueError if the model has several."""
        if len(self.outputs) != 1:
            raise ValueError(f"the model has {len(self.outputs)} outputs: {sorted(self.outputs)}")
        return next(iter(self.outputs.values()))


def _result(reply: bytes, address: str) -> Result:
    try:
        response = wire.decode_response(reply)
        outputs = serde.tensors_from_response(response)
    except WireError as error:
        raise ServiceError("INTERNAL", f"{address}: malformed answer: {error}") from error
    trace_json = serde.string_parameters(response.header.parameters).get(TRACE_PARAMETER)
    trace = None if trace_json is None else Trace.from_json(trace_json)
    return Result(outputs, trace)


def _error(error: grpc.RpcError | grpc.aio.AioRpcError, address: str) -> ServiceError:
    if isinstance(error, grpc.Call | grpc.aio.AioRpcError):
        return ServiceError(error.code().name, f"{address}: {error.details()}")
    return ServiceError("UNKNOWN", f"{address}: {error}")


class _Endpoint:
    """What both clients share: the model, its inputs, credentials and request building."""

    def __init__(
        self,
        address: str,
        model: str,
        inputs: tuple[IOSpec, ...],
        *,
        token: str | None,
        timeout_s: float,
    ) -> None:
        self.address = address
        self.model = model
        self.inputs = inputs
        self._metadata = bearer_metadata(token)
        self.timeout_s = timeout_s

    def request(self, x: Inputs) -> bytes:
        """The encoded ModelInfer request for ``x`` (the tensors' one copy, into bytes)."""
        if isinstance(x, np.ndarray):
            if len(self.inputs) != 1:
                names = [spec.name for spec in self.inputs]
                raise ValueError(f"model {self.model!r} takes {names}: pass a dict of arrays")
            x = {self.inputs[0].name: x}
        return wire.encode_request(serde.request_from_tensors(self.model, x))


class Client(_Endpoint):
    """A blocking OIP client over one gRPC channel; use :func:`connect` to make one."""

    def __init__(
        self,
        channel: grpc.Channel,
        *,
        address: str,
        model: str,
        inputs: tuple[IOSpec, ...],
        token: str | None,
        timeout_s: float,
    ) -> None:
        super().__init__(address, model, inputs, token=token, timeout_s=timeout_s)
        self._channel = channel
        # Bytes in, bytes out: the codec runs in `request` and `_result`.
        self._infer = channel.unary_unary(method_path("ModelInfer"))

    def infer(self, x: Inputs, *, timeout_s: float | None = None) -> Result:
        """Run the model on one input (an array for a one-input model, or named arrays)."""
        try:
            reply: bytes = self._infer(
                self.request(x), timeout=timeout_s or self.timeout_s, metadata=self._metadata
            )
        except grpc.RpcError as error:
            raise _error(error, self.address) from error
        return _result(reply, self.address)

    def infer_many(
        self, xs: Iterable[Inputs], *, max_in_flight: int = 8, timeout_s: float | None = None
    ) -> Iterator[Result]:
        """Pipeline many inputs, ``max_in_flight`` requests outstanding at most; in order."""
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, got {max_in_flight}")
        pending: deque[grpc.Future] = deque()
        for x in xs:
            if len(pending) >= max_in_flight:
                yield self._collect(pending.popleft())
            call = self._infer.future(
                self.request(x), timeout=timeout_s or self.timeout_s, metadata=self._metadata
            )
            pending.append(call)
        while pending:
            yield self._collect(pending.popleft())

    def _collect(self, call: grpc.Future) -> Result:
        try:
            reply: bytes = call.result()
        except grpc.RpcError as error:
            raise _error(error, self.address) from error
        return _result(reply, self.address)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _channel_for(address: str, tls: TlsFiles | None, max_message_bytes: int) -> grpc.Channel:
    options = channel_options(max_message_bytes)
    if tls is None:
        return grpc.insecure_channel(address, options=options)
    return grpc.secure_channel(address, tls.channel_credentials(), options=options)


def connect(
    address: str,
    *,
    model: str | None = None,
    token: str | None = None,
    tls: TlsFiles | None = None,
    timeout_s: float = 30.0,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> Client:
    """Connect to a tier service and fetch its model's metadata.

    Examples
    --------
    >>> with connect("127.0.0.1:8001") as client:  # doctest: +SKIP
    ...     y = client.infer(np.ones((1, 4), np.float32)).output
    """
    channel = _channel_for(address, tls, max_message_bytes)
    metadata_call = channel.unary_unary(
        method_path("ModelMetadata"),
        request_serializer=pb.ModelMetadataRequest.SerializeToString,
        response_deserializer=pb.ModelMetadataResponse.FromString,
    )
    try:
        meta: pb.ModelMetadataResponse = metadata_call(
            pb.ModelMetadataRequest(name=model or ""),
            timeout=timeout_s,
            metadata=bearer_metadata(token),
        )
    except grpc.RpcError as error:
        channel.close()
        raise _error(error, address) from error
    inputs, _ = serde.specs_from_metadata(meta)
    return Client(
        channel, address=address, model=meta.name, inputs=inputs, token=token, timeout_s=timeout_s
    )


class AsyncClient(_Endpoint):
    """An asyncio OIP client (grpc.aio); use :meth:`connect`."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        address: str,
        model: str,
        inputs: tuple[IOSpec, ...],
        token: str | None,
        timeout_s: float,
    ) -> None:
        super().__init__(address, model, inputs, token=token, timeout_s=timeout_s)
        self._channel = channel

    @classmethod
    async def connect(
        cls,
        address: str,
        *,
        model: str | None = None,
        token: str | None = None,
        tls: TlsFiles | None = None,
        timeout_s: float = 30.0,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> AsyncClient:
        options = channel_options(max_message_bytes)
        if tls is None:
            channel = grpc.aio.insecure_channel(address, options=options)
        else:
            channel = grpc.aio.secure_channel(address, tls.channel_credentials(), options=options)
        call = channel.unary_unary(
            method_path("ModelMetadata"),
            request_serializer=pb.ModelMetadataRequest.SerializeToString,
            response_deserializer=pb.ModelMetadataResponse.FromString,
        )
        try:
            meta: pb.ModelMetadataResponse = await call(
                pb.ModelMetadataRequest(name=model or ""),
                timeout=timeout_s,
                metadata=bearer_metadata(token),
            )
        except grpc.aio.AioRpcError as error:
            await channel.close()
            raise _error(error, address) from error
        inputs, _ = serde.specs_from_metadata(meta)
        return cls(
            channel,
            address=address,
            model=meta.name,
            inputs=inputs,
            token=token,
            timeout_s=timeout_s,
        )

    async def infer(self, x: Inputs, *, timeout_s: float | None = None) -> Result:
        call = self._channel.unary_unary(method_path("ModelInfer"))
        try:
            reply: bytes = await call(
                self.request(x), timeout=timeout_s or self.timeout_s, metadata=self._metadata
            )
        except grpc.aio.AioRpcError as error:
            raise _error(error, self.address) from error
        return _result(reply, self.address)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()
