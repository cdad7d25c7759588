"""Calling the fusion runtime: every device gets its view at once, one fusion id for all."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType

import grpc
import numpy as np
from numpy.typing import NDArray

from tierflow.errors import FusionError, ServiceError, WireError
from tierflow.fusion.protocol import FUSION_ID, FUSION_TRACE, FusionTrace
from tierflow.fusion.services import MODEL
from tierflow.runtime import serde, wire
from tierflow.runtime.transport import DEFAULT_MAX_MESSAGE_BYTES, channel_options, method_path


@dataclass(frozen=True)
class FusionResult:
    """The fused answer: ``logits`` ``[B, C]``, its trace, and per-device call errors."""

    logits: NDArray[np.float32]
    trace: FusionTrace
    errors: dict[int, ServiceError]

    @property
    def predictions(self) -> NDArray[np.int64]:
        return np.asarray(self.logits.argmax(axis=1), dtype=np.int64)


class FusionClient:
    """Sends view ``i`` to device ``i`` concurrently under one fusion id.

    Every device that answers returns the same fused result; the client returns the first
    and keeps the other devices' errors (a device that is down fails its own call only).

    Examples
    --------
    >>> with FusionClient(["127.0.0.1:9001", "127.0.0.1:9002"]) as client:  # doctest: +SKIP
    ...     result = client.infer([view0, view1])
    ...     print(result.trace.fused, result.trace.missing)
    """

    def __init__(self, device_addresses: Sequence[str], *, timeout_s: float = 30.0) -> None:
        if not device_addresses:
            raise FusionError("device_addresses: the fusion client needs at least one device")
        self.addresses = tuple(device_addresses)
        self.timeout_s = timeout_s
        options = channel_options(DEFAULT_MAX_MESSAGE_BYTES)
        self._channels = [grpc.insecure_channel(a, options=options) for a in self.addresses]
        self._calls = [c.unary_unary(method_path("ModelInfer")) for c in self._channels]

    def infer(
        self, views: Sequence[NDArray[np.float32]], *, fusion_id: str | None = None
    ) -> FusionResult:
        """Fuse one batch: ``views[i]`` ``[B, 1, H, W]`` goes to device ``i``.

        Raises
        ------
        FusionError
            If the number of views is not the number of devices.
        ServiceError
            If no device answered (the status and message of each device's failure).
        """
        if len(views) != len(self.addresses):
            raise FusionError(
                f"views: {len(views)} views for {len(self.addresses)} devices; send one each"
            )
        fusion_id = fusion_id or uuid.uuid4().hex
        futures = [
            call.future(
                wire.encode_request(
                    serde.request_from_tensors(
                        MODEL,
                        {"view": view},
                        request_id=fusion_id,
                        parameters={FUSION_ID: fusion_id},
                    )
                ),
                timeout=self.timeout_s,
            )
            for call, view in zip(self._calls, views, strict=True)
        ]
        errors: dict[int, ServiceError] = {}
        answer: FusionResult | None = None
        for index, future in enumerate(futures):
            try:
                reply: bytes = future.result()
            except grpc.RpcError as error:
                errors[index] = _error(error, self.addresses[index])
                continue
            if answer is None:
                answer = _decode(reply, self.addresses[index])
        if answer is None:
            details = "; ".join(f"device{i}: {e.status} {e}" for i, e in errors.items())
            status = next(iter(errors.values())).status
            raise ServiceError(status, f"no device answered fusion id {fusion_id!r}: {details}")
        return FusionResult(answer.logits, answer.trace, errors)

    def close(self) -> None:
        for channel in self._channels:
            channel.close()

    def __enter__(self) -> FusionClient:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _error(error: grpc.RpcError, address: str) -> ServiceError:
    if isinstance(error, grpc.Call):
        return ServiceError(error.code().name, f"{address}: {error.details()}")
    return ServiceError("UNKNOWN", f"{address}: {error}")


def _decode(reply: bytes, address: str) -> FusionResult:
    try:
        response = wire.decode_response(reply)
        logits = serde.tensors_from_response(response)["logits"]
        trace = FusionTrace.from_json(
            serde.string_parameters(response.header.parameters)[FUSION_TRACE]
        )
    except (WireError, KeyError) as error:
        raise ServiceError("INTERNAL", f"{address}: malformed fusion answer: {error!r}") from error
    return FusionResult(np.array(logits, dtype=np.float32), trace, {})  # writable, small
