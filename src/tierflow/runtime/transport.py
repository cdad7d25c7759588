"""The seam between tier services: send a ModelInfer request to a tier, get its response.

:class:`GrpcTransport` speaks the Open Inference Protocol over gRPC; :class:`InMemoryTransport`
hands the request to a service object in the same process (tests, simulation), through the
same wire bytes so that the codec, serde and byte counts are exercised as on a network.
Failures surface as :class:`~tierflow.errors.ServiceError` with the gRPC status name.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Protocol

import grpc

from tierflow.errors import ServiceError, WireError
from tierflow.runtime import wire
from tierflow.runtime.security import TlsFiles, bearer_metadata
from tierflow.runtime.wire import InferRequest, InferResponse

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

    def infer(self, request: InferRequest, *, timeout_s: float | None = None) -> InferResponse: ...


class Transport(Protocol):
    """Sends one inference request to the tier at ``address``; ``tier`` names it in errors."""

    def infer(
        self, address: str, request: InferRequest, *, tier: str, timeout_s: float | None
    ) -> InferResponse: ...

    def close(self) -> None: ...


class InMemoryTransport:
    """Delivers requests to in-process handlers keyed by address (no sockets)."""

    def __init__(self, handlers: Mapping[str, InferenceHandler] | None = None) -> None:
        self._handlers: dict[str, InferenceHandler] = dict(handlers or {})

    def register(self, address: str, handler: InferenceHandler) -> None:
        self._handlers[address] = handler

    def infer(
        self, address: str, request: InferRequest, *, tier: str, timeout_s: float | None
    ) -> InferResponse:
        handler = self._handlers.get(address)
        if handler is None:
            raise ServiceError("UNAVAILABLE", f"upstream tier {tier!r} at {address} is unreachable")
        # A round trip through bytes, as on a network: no aliasing between tiers.
        response = handler.infer(
            wire.decode_request(wire.encode_request(request)), timeout_s=timeout_s
        )
        return wire.decode_response(wire.encode_response(response))

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
        self, address: str, request: InferRequest, *, tier: str, timeout_s: float | None
    ) -> InferResponse:
        # Bytes in, bytes out (no gRPC serializers): the codec runs here, so a malformed
        # answer is a WireError naming the tier rather than gRPC's "Exception deserializing".
        call = self._channel(address).unary_unary(method_path("ModelInfer"))
        try:
            reply: bytes = call(
                wire.encode_request(request), timeout=timeout_s, metadata=self._metadata
            )
        except grpc.RpcError as error:
            raise _service_error(error, tier=tier, address=address) from error
        try:
            return wire.decode_response(reply)
        except WireError as error:
            raise ServiceError(
                "INTERNAL", f"upstream tier {tier!r} at {address} answered malformed bytes: {error}"
            ) from error

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
