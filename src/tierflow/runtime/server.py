"""A tier service on a gRPC socket, speaking the Open Inference Protocol (KServe v2).

The server is gRPC's synchronous one with a thread pool, not grpc.aio: a request's work is
blocking (executors are numpy / ONNX Runtime calls that release the GIL, forwarding is a
blocking call upstream), so a worker thread per in-flight request pipelines compute and
transfer with no event loop to keep unblocked. Service methods are registered by path
(``/inference.GRPCInferenceService/ModelInfer``) rather than through grpcio-tools' stubs,
which pin a minimum grpcio at import time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent import futures
from types import TracebackType
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message

from tierflow.errors import ServiceError, WireError
from tierflow.runtime import wire
from tierflow.runtime._proto import grpc_predict_v2_pb2 as pb
from tierflow.runtime.metrics import TierMetrics
from tierflow.runtime.security import TlsFiles, token_matches
from tierflow.runtime.service import TierService
from tierflow.runtime.transport import DEFAULT_MAX_MESSAGE_BYTES, SERVICE_NAME, channel_options
from tierflow.runtime.wire import InferRequest, InferResponse

Request = TypeVar("Request")
Response = TypeVar("Response")
Parsed = TypeVar("Parsed", bound=Message)
_VERSION = "0.1.0"


_NO_DEADLINE_S = 1e6  # anything longer than ~11 days means "no deadline"


class TierServer:
    """Serves one :class:`TierService` over gRPC.

    Parameters
    ----------
    service:
        The tier's logic (executors, route, transport upstream).
    host, port:
        Where to listen; loopback by default, port 0 picks a free port (see ``.port``).
    token:
        If given, every call must carry ``authorization: Bearer <token>``.
    tls:
        Certificate and key for TLS; with ``ca_path`` clients must present certificates.
    metrics_port:
        If given, Prometheus metrics on ``http://host:metrics_port/metrics`` (0: free port).
    max_message_bytes:
        Largest request or response accepted (default 256 MiB); larger → RESOURCE_EXHAUSTED.

    Examples
    --------
    >>> with TierServer(service) as server:  # doctest: +SKIP
    ...     client = connect(server.address)
    """

    def __init__(
        self,
        service: TierService,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        tls: TlsFiles | None = None,
        metrics_port: int | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        max_workers: int = 8,
    ) -> None:
        self.service = service
        self.host = host
        self.token = token
        self.metrics = TierMetrics(service.tier)
        service.on_answer(self.metrics.count_answer)
        self._requested_port = port
        self._tls = tls
        self._metrics_port = metrics_port
        self._max_message_bytes = max_message_bytes
        self._pool = futures.ThreadPoolExecutor(
            max_workers, thread_name_prefix=f"tier-{service.tier}"
        )
        self._server = grpc.server(self._pool, options=channel_options(max_message_bytes))
        self._server.add_generic_rpc_handlers((self._handlers(),))
        self.port = 0
        self.metrics_port: int | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> TierServer:
        target = f"{self.host}:{self._requested_port}"
        if self._tls is None:
            self.port = self._server.add_insecure_port(target)
        else:
            self.port = self._server.add_secure_port(target, self._tls.server_credentials())
        self._server.start()
        if self._metrics_port is not None:
            self.metrics_port = self.metrics.serve(self.host, self._metrics_port)
        return self

    def stop(self, grace_s: float | None = 1.0) -> None:
        self._server.stop(grace_s).wait()
        self._pool.shutdown(wait=True)
        self.metrics.close()
        if self.service.transport is not None:
            self.service.transport.close()

    def __enter__(self) -> TierServer:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _handlers(self) -> grpc.GenericRpcHandler:
        service = self.service

        def model_ready(request: pb.ModelReadyRequest, _: float | None) -> pb.ModelReadyResponse:
            service.check_model(request.name)
            return pb.ModelReadyResponse(ready=True)

        def model_metadata(
            request: pb.ModelMetadataRequest, _: float | None
        ) -> pb.ModelMetadataResponse:
            if request.name:  # an empty name asks for the one model served (tierflow's connect)
                service.check_model(request.name)
            return service.metadata()

        def model_infer(request: InferRequest, remaining_s: float | None) -> InferResponse:
            return service.infer(request, timeout_s=remaining_s)

        methods: dict[str, grpc.RpcMethodHandler] = {
            "ServerLive": self._unary(
                "ServerLive",
                _parser(pb.ServerLiveRequest),
                lambda r, t: pb.ServerLiveResponse(live=True),
                _serialize,
            ),
            "ServerReady": self._unary(
                "ServerReady",
                _parser(pb.ServerReadyRequest),
                lambda r, t: pb.ServerReadyResponse(ready=True),
                _serialize,
            ),
            "ServerMetadata": self._unary(
                "ServerMetadata",
                _parser(pb.ServerMetadataRequest),
                lambda r, t: pb.ServerMetadataResponse(name="tierflow", version=_VERSION),
                _serialize,
            ),
            "ModelReady": self._unary(
                "ModelReady", _parser(pb.ModelReadyRequest), model_ready, _serialize
            ),
            "ModelMetadata": self._unary(
                "ModelMetadata", _parser(pb.ModelMetadataRequest), model_metadata, _serialize
            ),
            # Tensors are not copied on the way in (views of the received bytes) and copied
            # once on the way out (into the bytes gRPC sends): see tierflow.runtime.wire.
            "ModelInfer": self._unary(
                "ModelInfer", wire.decode_request, model_infer, wire.encode_response
            ),
        }
        return grpc.method_handlers_generic_handler(SERVICE_NAME, methods)

    def _unary(
        self,
        method: str,
        decode: Callable[[bytes], Request],
        behaviour: Callable[[Request, float | None], Response],
        encode: Callable[[Response], bytes],
    ) -> grpc.RpcMethodHandler:
        # Bytes in, bytes out (no gRPC serializers): a malformed request is answered
        # INVALID_ARGUMENT naming what is wrong (gRPC's own would be INTERNAL), and the
        # metrics count the bytes that crossed the socket.
        def handle(data: bytes, context: grpc.ServicerContext) -> bytes:
            started = time.perf_counter()
            code, reply_bytes = "OK", 0
            try:
                if self.token is not None and not token_matches(
                    context.invocation_metadata(), self.token
                ):
                    raise ServiceError(
                        "UNAUTHENTICATED",
                        f"tier {self.service.tier!r} requires 'authorization: Bearer <token>'",
                    )
                try:
                    request = decode(data)
                except WireError as error:
                    raise ServiceError(
                        "INVALID_ARGUMENT", f"tier {self.service.tier!r}: {error}"
                    ) from error
                remaining = context.time_remaining()
                # Without a caller deadline grpc reports ~1e10 s; passing that upstream
                # would overflow its deadline and fail the call at once.
                if remaining is not None and remaining > _NO_DEADLINE_S:
                    remaining = None
                reply = encode(behaviour(request, remaining))
                reply_bytes = len(reply)
                return reply
            except ServiceError as error:
                code = error.status
                context.abort(grpc.StatusCode[error.status], str(error))
            except Exception as error:
                code = "INTERNAL"
                message = f"tier {self.service.tier!r}: {type(error).__name__}: {error}"
                context.abort(grpc.StatusCode.INTERNAL, message)
            finally:
                elapsed = time.perf_counter() - started
                self.metrics.observe(method, code, elapsed, len(data), reply_bytes)
            raise AssertionError("unreachable: context.abort raises")

        return grpc.unary_unary_rpc_method_handler(handle)


def _parser(message_type: type[Parsed]) -> Callable[[bytes], Parsed]:
    """Parse a small protobuf message, refusing malformed bytes with WireError."""

    def parse(data: bytes) -> Parsed:
        message = message_type()
        try:
            message.ParseFromString(data)
            return message
        except DecodeError as error:
            raise WireError(f"{message_type.__name__}: malformed: {error}") from error

    return parse


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def serve(service: TierService, **options: Any) -> TierServer:
    """Start a :class:`TierServer` for ``service`` (same keyword options) and return it."""
    return TierServer(service, **options).start()
