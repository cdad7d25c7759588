"""A fusion service on a gRPC socket, speaking the Open Inference Protocol (KServe v2).

The same plumbing as :class:`tierflow.runtime.server.TierServer` (synchronous gRPC with a
thread pool, methods registered by path, bytes in and bytes out through
:mod:`tierflow.runtime.wire`), for handlers that also need the size of the message they
received: the edge counts each device's upward bytes where they arrive. A thread pool is
required rather than optional here: an edge request blocks while it waits for the other
devices of its fusion id, so the pool must hold at least ``V`` waiting requests.
"""

from __future__ import annotations

from concurrent import futures
from types import TracebackType
from typing import Protocol

import grpc

from tierflow.errors import ServiceError, WireError
from tierflow.runtime import wire
from tierflow.runtime._proto import grpc_predict_v2_pb2 as pb
from tierflow.runtime.transport import DEFAULT_MAX_MESSAGE_BYTES, SERVICE_NAME, channel_options
from tierflow.runtime.wire import InferRequest, InferResponse

_NO_DEADLINE_S = 1e6  # grpc reports ~1e10 s without a caller deadline (see runtime/server.py)


class FusionHandler(Protocol):
    """What a :class:`FusionServer` serves: a device, the edge or the cloud."""

    @property
    def tier(self) -> str: ...

    @property
    def model(self) -> str: ...

    def metadata(self) -> pb.ModelMetadataResponse: ...

    def infer(
        self, request: InferRequest, *, received_bytes: int, timeout_s: float | None
    ) -> InferResponse: ...

    def close(self) -> None: ...


class FusionServer:
    """Serves one :class:`FusionHandler` over gRPC on ``host:port`` (0: a free port).

    Examples
    --------
    >>> with FusionServer(EdgeService(bundle, cloud="127.0.0.1:9000")) as edge:  # doctest: +SKIP
    ...     print(edge.address)
    """

    def __init__(
        self,
        handler: FusionHandler,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_workers: int = 16,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self.handler = handler
        self.host = host
        self.port = 0
        self._requested_port = port
        self._pool = futures.ThreadPoolExecutor(max_workers, thread_name_prefix=handler.tier)
        self._server = grpc.server(self._pool, options=channel_options(max_message_bytes))
        self._server.add_generic_rpc_handlers((self._handlers(),))

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> FusionServer:
        self.port = self._server.add_insecure_port(f"{self.host}:{self._requested_port}")
        self._server.start()
        return self

    def stop(self, grace_s: float | None = 0.5) -> None:
        self._server.stop(grace_s).wait()
        self._pool.shutdown(wait=True)
        self.handler.close()

    def __enter__(self) -> FusionServer:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _handlers(self) -> grpc.GenericRpcHandler:
        handler = self.handler

        def model_infer(data: bytes, context: grpc.ServicerContext) -> bytes:
            try:
                try:
                    request = wire.decode_request(data)
                except WireError as error:
                    raise ServiceError(
                        "INVALID_ARGUMENT", f"tier {handler.tier!r}: {error}"
                    ) from error
                if request.header.model_name != handler.model:
                    raise ServiceError(
                        "NOT_FOUND",
                        f"tier {handler.tier!r} serves model {handler.model!r},"
                        f" not {request.header.model_name!r}",
                    )
                remaining = context.time_remaining()
                if remaining is not None and remaining > _NO_DEADLINE_S:
                    remaining = None
                response = handler.infer(request, received_bytes=len(data), timeout_s=remaining)
                return wire.encode_response(response)
            except ServiceError as error:
                context.abort(grpc.StatusCode[error.status], str(error))
            except Exception as error:
                context.abort(
                    grpc.StatusCode.INTERNAL,
                    f"tier {handler.tier!r}: {type(error).__name__}: {error}",
                )
            raise AssertionError("unreachable: context.abort raises")

        def model_metadata(data: bytes, context: grpc.ServicerContext) -> bytes:
            return handler.metadata().SerializeToString()

        def server_live(data: bytes, context: grpc.ServicerContext) -> bytes:
            return pb.ServerLiveResponse(live=True).SerializeToString()

        methods = {
            "ModelInfer": model_infer,
            "ModelMetadata": model_metadata,
            "ServerLive": server_live,
            "ServerReady": lambda data, context: pb.ServerReadyResponse(
                ready=True
            ).SerializeToString(),
        }
        return grpc.method_handlers_generic_handler(
            SERVICE_NAME,
            {name: grpc.unary_unary_rpc_method_handler(fn) for name, fn in methods.items()},
        )
