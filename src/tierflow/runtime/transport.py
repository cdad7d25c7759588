"""The seam between tier services: send a ModelInferRequest to a tier, get its response.

:class:`GrpcTransport` speaks the Open Inference Protocol over gRPC; :class:`InMemoryTransport`
hands the request to a service object in the same process (tests, simulation), through the
same wire messages so that serde and byte counts are exercised exactly as on a network.
Failures surface as :class:`~tierflow.errors.ServiceError` with the gRPC status name.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Protocol

import grpc

from tierflow.errors import ServiceError
from tierflow.runtime._proto import grpc_predict_v2_pb2 as pb
from tierflow.runtime.security import TlsFiles, bearer_metadata

SERVICE_NAME = "inference.GRPCInferenceService"
DEFAULT_MAX_MESSAGE_BYTES = (
    256 * 1024 * 1024
)  # gRPC's own default is 4 MiB: too small for cut tensors


def method_path(method: str) -> str:
    """The gRPC path of an OIP method, e.g. ``/inference.GRPCInferenceService/ModelInfer``."""
    return f"/{SERVICE_NAME}/{method}"


def channel_options(max_message_bytes: int) -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
    ]


class InferenceHandler(Protocol):
    """What a transport delivers requests to (a :class:`~tierflow.runtime.service.TierService`)."""

    def infer(
        self, request: pb.ModelInferRequest, *, timeout_s: float | None = None
    ) -> pb.ModelInferResponse: ...


class Transport(Protocol):
    """Sends one inference request to the tier at ``address``; ``tier`` names it in errors."""

    def infer(
        self, address: str, request: pb.ModelInferRequest, *, tier: str, timeout_s: float | None
    ) -> pb.ModelInferResponse: ...

    def close(self) -> None: ...


class InMemoryTransport:
    """Delivers requests to in-process handlers keyed by address (no sockets)."""

    def __init__(self, handlers: Mapping[str, InferenceHandler] | None = None) -> None:
        self._handlers: dict[str, InferenceHandler] = dict(handlers or {})

    def register(self, address: str, handler: InferenceHandler) -> None:
        self._handlers[address] = handler

    def infer(
        self, address: str, request: pb.ModelInferRequest, *, tier: str, timeout_s: float | None
    ) -> pb.ModelInferResponse:
        handler = self._handlers.get(address)
        if handler is None:
            raise ServiceError("UNAVAILABLE", f"upstream tier {tier!r} at {address} is unreachable")
        # A round trip through bytes, as on a network: no aliasing between tiers.
        wire = pb.ModelInferRequest.FromString(request.SerializeToString())
        response = handler.infer(wire, timeout_s=timeout_s)
        return pb.ModelInferResponse.FromString(response.SerializeToString())

    def close(self) -> None:
        self._handlers.clear()


class GrpcTransport:
    """OIP ModelInfer over gRPC, one channel per upstream address (reused across calls)."""

    def __init__(
        self,
        *,
        token: str | None = None,
        tls: TlsFiles | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self._metadata = bearer_metadata(token)
        self._tls = tls
        self._options = channel_options(max_message_bytes)
        self._channels: dict[str, grpc.Channel] = {}
        self._lock = threading.Lock()

    def _channel(self, address: str) -> grpc.Channel:
        with self._lock:
            if address not in self._channels:
                if self._tls is None:
                    channel = grpc.insecure_channel(address, options=self._options)
                else:
                    credentials = self._tls.channel_credentials()
                    channel = grpc.secure_channel(address, credentials, options=self._options)
                self._channels[address] = channel
            return self._channels[address]

    def infer(
        self, address: str, request: pb.ModelInferRequest, *, tier: str, timeout_s: float | None
    ) -> pb.ModelInferResponse:
        call = self._channel(address).unary_unary(
            method_path("ModelInfer"),
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        try:
            response: pb.ModelInferResponse = call(
                request, timeout=timeout_s, metadata=self._metadata
            )
        except grpc.RpcError as error:
            raise _service_error(error, tier=tier, address=address) from error
        return response

    def close(self) -> None:
        with self._lock:
            for channel in self._channels.values():
                channel.close()
            self._channels.clear()


def _service_error(error: grpc.RpcError, *, tier: str, address: str) -> ServiceError:
    code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = error.details() if isinstance(error, grpc.Call) else str(error)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
        return ServiceError(
            "UNAVAILABLE", f"upstream tier {tier!r} at {address} is unavailable: {details}"
        )
    return ServiceError(code.name, f"upstream tier {tier!r} at {address}: {details}")
