"""The fusion tiers' logic: device, edge (gather, fuse, exit), cloud, raw-offload cloud.

Each is a :class:`~tierflow.fusion.server.FusionHandler`, put on a socket by
:class:`~tierflow.fusion.server.FusionServer`; the protocol is Note [Fusion protocol] in
:mod:`tierflow.fusion.protocol`. Devices and the edge reach the next tier through
:class:`tierflow.runtime.transport.GrpcTransport`, tensors go through
:mod:`tierflow.runtime.serde`, as in every other tierflow tier.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from tierflow.errors import ServiceError, WireError
from tierflow.exits.policy import ExitPolicy, policy_by_name
from tierflow.fusion.bundle import VIEW_SHAPE, FusionBundle
from tierflow.fusion.collector import Arrival, Collector
from tierflow.fusion.onnx_graph import OnnxGraph
from tierflow.fusion.protocol import FUSION_DEVICE, FUSION_ID, FUSION_TRACE, FusionTrace, LinkBytes
from tierflow.runtime import serde
from tierflow.runtime._proto import grpc_predict_v2_pb2 as pb
from tierflow.runtime.executor import IOSpec
from tierflow.runtime.transport import GrpcTransport, Transport
from tierflow.runtime.wire import InferRequest, InferResponse

MODEL = "fusion"
PLATFORM = "tierflow-fusion"
VIEW = IOSpec("view", (-1, *VIEW_SHAPE), "float32")
_CALL_MARGIN_S = 0.005  # kept back from the caller's deadline to answer it


def _tensor(tier: str, request: InferRequest, spec: IOSpec) -> NDArray[np.generic]:
    """The request's tensor ``spec.name``; INVALID_ARGUMENT naming it if absent or wrong."""
    try:
        tensors = serde.tensors_from_request(request)
    except WireError as error:
        raise ServiceError("INVALID_ARGUMENT", f"tier {tier!r}: {error}") from error
    array = tensors.get(spec.name)
    want = f"{spec.dtype} {list(spec.shape)} (-1: any size)"
    if array is None:
        raise ServiceError(
            "INVALID_ARGUMENT", f"tier {tier!r}: missing input tensor {spec.name!r} ({want})"
        )
    if not spec.accepts(array):
        raise ServiceError(
            "INVALID_ARGUMENT",
            f"tier {tier!r}: tensor {spec.name!r} is {array.dtype.name} {list(array.shape)},"
            f" expected {want}",
        )
    return array


def _parameter(tier: str, request: InferRequest, name: str) -> str:
    value = serde.string_parameters(request.header.parameters).get(name)
    if not value:
        raise ServiceError(
            "INVALID_ARGUMENT", f"tier {tier!r}: request lacks string parameter {name!r}"
        )
    return value


def _left(timeout_s: float | None) -> float | None:
    return None if timeout_s is None else max(0.001, timeout_s - _CALL_MARGIN_S)


class DeviceService:
    """End device ``index``: runs its branch on its view, sends the uint8 features to the
    edge, and answers with the edge's (shared) result.

    With ``graph=None`` the device offloads its raw float32 view instead (the raw-offload
    baseline), to a :class:`RawCloudService`.
    """

    def __init__(
        self,
        index: int,
        graph: OnnxGraph | None,
        *,
        upstream: str,
        upstream_tier: str = "edge",
        transport: Transport | None = None,
    ) -> None:
        self.index = index
        self._graph = graph
        self._upstream, self._upstream_tier = upstream, upstream_tier
        self._transport: Transport = transport or GrpcTransport()

    @property
    def tier(self) -> str:
        return f"device{self.index}"

    @property
    def model(self) -> str:
        return MODEL

    def metadata(self) -> pb.ModelMetadataResponse:
        outputs = (IOSpec("logits", (-1, -1), "float32"),)
        return serde.metadata_from_specs(MODEL, (VIEW,), outputs, platform=PLATFORM)

    def infer(
        self, request: InferRequest, *, received_bytes: int, timeout_s: float | None
    ) -> InferResponse:
        fusion_id = _parameter(self.tier, request, FUSION_ID)
        view = _tensor(self.tier, request, VIEW)
        if self._graph is None:
            name, tensor = "view", view
        else:
            name, tensor = "features", self._graph.run({"view": view})["features"]
        # The fusion id travels once, as a parameter, not also as the OIP request id: at one
        # sample per request the header, not the 32-byte payload, dominates the wire bytes.
        upward = serde.request_from_tensors(
            MODEL,
            {name: tensor},
            parameters={FUSION_ID: fusion_id, FUSION_DEVICE: str(self.index)},
        )
        return self._transport.infer(
            self._upstream, upward, tier=self._upstream_tier, timeout_s=_left(timeout_s)
        )

    def close(self) -> None:
        self._transport.close()


@dataclass(frozen=True)
class _Answer:
    logits: NDArray[np.float32]
    trace: FusionTrace


class _GatheringService:
    """What the edge and the raw-offload cloud share: gather per fusion id, then fuse."""

    def __init__(self, tier: str, spec: IOSpec, *, views: int, wait_s: float) -> None:
        self._tier, self._spec, self.views = tier, spec, views
        self._collector: Collector[_Answer] = Collector(tier, views=views, wait_s=wait_s)

    @property
    def tier(self) -> str:
        return self._tier

    @property
    def model(self) -> str:
        return MODEL

    def metadata(self) -> pb.ModelMetadataResponse:
        outputs = (IOSpec("logits", (-1, -1), "float32"),)
        return serde.metadata_from_specs(MODEL, (self._spec,), outputs, platform=PLATFORM)

    def infer(
        self, request: InferRequest, *, received_bytes: int, timeout_s: float | None
    ) -> InferResponse:
        fusion_id = _parameter(self.tier, request, FUSION_ID)
        device_text = _parameter(self.tier, request, FUSION_DEVICE)
        if not device_text.isdigit() or int(device_text) >= self.views:
            raise ServiceError(
                "INVALID_ARGUMENT",
                f"tier {self.tier!r}: parameter {FUSION_DEVICE!r} is {device_text!r},"
                f" not a device index in [0, {self.views})",
            )
        tensor = _tensor(self.tier, request, self._spec)
        arrival = Arrival(int(device_text), tensor, tensor.nbytes, received_bytes)

        def fuse(arrivals: dict[int, Arrival], waited_s: float) -> _Answer:
            return self._fuse(fusion_id, arrivals, waited_s, _left(timeout_s))

        answer = self._collector.submit(fusion_id, arrival, fuse)
        return serde.response_from_tensors(
            MODEL,
            {"logits": answer.logits},
            request_id=fusion_id,
            parameters={FUSION_TRACE: answer.trace.to_json()},
        )

    def _stack(self, arrivals: Mapping[int, Arrival]) -> tuple[NDArray[np.generic], list[int]]:
        """Arrivals stacked ``[V, B, ...]``, zeros where a device is missing (Note
        [Fusing the devices present] in :mod:`tierflow.fusion.model`)."""
        first = next(iter(arrivals.values())).tensor
        stacked = np.zeros((self.views, *first.shape), dtype=first.dtype)
        for device, arrival in arrivals.items():
            stacked[device] = arrival.tensor
        return stacked, [i for i in range(self.views) if i not in arrivals]

    def _links(self, arrivals: Mapping[int, Arrival]) -> list[LinkBytes]:
        return [
            LinkBytes(f"device{i}", self.tier, a.payload_bytes, a.wire_bytes)
            for i, a in sorted(arrivals.items())
        ]

    def _fuse(
        self,
        fusion_id: str,
        arrivals: dict[int, Arrival],
        waited_s: float,
        timeout_s: float | None,
    ) -> _Answer:
        raise NotImplementedError

    def close(self) -> None:
        return None


class EdgeService(_GatheringService):
    """The local aggregator: fuses the devices that arrived, exits confident samples, and
    asks the cloud about the rest with the compact edge features.

    Parameters
    ----------
    bundle:
        The exported model (edge graph, exit policy and threshold, views).
    cloud:
        Address of the :class:`CloudService`.
    wait_s:
        How long after a fusion id's first device to wait for the others.
    exit_threshold:
        Overrides the bundle's calibrated threshold: a sample exits at the edge when its
        confidence (the bundle's policy, in [0, 1]) is at least this; above 1 never, 0 always.
    """

    def __init__(
        self,
        bundle: FusionBundle,
        *,
        cloud: str,
        wait_s: float = 0.1,
        exit_threshold: float | None = None,
        transport: Transport | None = None,
    ) -> None:
        spec = IOSpec("features", (-1, bundle.feature_dim), "uint8")
        super().__init__("edge", spec, views=bundle.views, wait_s=wait_s)
        self._graph = bundle.edge
        self._policy: ExitPolicy = policy_by_name(bundle.exit_policy)
        self.exit_threshold = bundle.exit_threshold if exit_threshold is None else exit_threshold
        self._cloud = cloud
        self._transport: Transport = transport or GrpcTransport()

    def _fuse(
        self,
        fusion_id: str,
        arrivals: dict[int, Arrival],
        waited_s: float,
        timeout_s: float | None,
    ) -> _Answer:
        features, missing = self._stack(arrivals)
        mask = np.array([0.0 if i in missing else 1.0 for i in range(self.views)], np.float32)
        out = self._graph.run({"features": features, "mask": mask})
        logits = np.array(out["edge_logits"], dtype=np.float32)
        confident = self._policy.confidence(logits) >= self.exit_threshold
        links = self._links(arrivals)
        rows = np.flatnonzero(~confident)
        if rows.size:
            upward = serde.request_from_tensors(
                MODEL,
                {"edge_features": np.ascontiguousarray(out["edge_features"][rows])},
                parameters={FUSION_ID: fusion_id},
            )
            response = self._transport.infer(self._cloud, upward, tier="cloud", timeout_s=timeout_s)
            try:
                cloud_logits = serde.tensors_from_response(response)["logits"]
            except (WireError, KeyError) as error:
                raise ServiceError(
                    "INTERNAL", f"tier 'edge': bad answer from 'cloud': {error!r}"
                ) from error
            logits[rows] = cloud_logits
            links.append(
                LinkBytes("edge", "cloud", int(sum(r.nbytes for r in upward.raw)), upward.nbytes)
            )
        trace = FusionTrace(
            fusion_id=fusion_id,
            fused=tuple(sorted(arrivals)),
            missing=tuple(missing),
            exits=tuple("edge" if c else "cloud" for c in confident),
            links=tuple(links),
            wait_ms=round(waited_s * 1000.0, 3),
        )
        return _Answer(logits, trace)

    def close(self) -> None:
        self._transport.close()


class RawCloudService(_GatheringService):
    """The raw-offload baseline's cloud: gathers the devices' float32 views per fusion id
    and classifies the reassembled image with the cloud-only reference model."""

    def __init__(self, bundle: FusionBundle, *, wait_s: float = 0.1) -> None:
        super().__init__("cloud", VIEW, views=bundle.views, wait_s=wait_s)
        self._graph = bundle.reference

    def _fuse(
        self,
        fusion_id: str,
        arrivals: dict[int, Arrival],
        waited_s: float,
        timeout_s: float | None,
    ) -> _Answer:
        views, missing = self._stack(arrivals)
        logits = np.asarray(self._graph.run({"views": views})["logits"], dtype=np.float32)
        trace = FusionTrace(
            fusion_id=fusion_id,
            fused=tuple(sorted(arrivals)),
            missing=tuple(missing),
            exits=("cloud",) * len(logits),
            links=tuple(self._links(arrivals)),
            wait_ms=round(waited_s * 1000.0, 3),
        )
        return _Answer(logits, trace)


class CloudService:
    """The cloud of the fusion model: classifies the edge's uint8 features."""

    def __init__(self, bundle: FusionBundle) -> None:
        self._graph = bundle.cloud
        self._spec = IOSpec("edge_features", (-1, bundle.edge_dim), "uint8")

    @property
    def tier(self) -> str:
        return "cloud"

    @property
    def model(self) -> str:
        return MODEL

    def metadata(self) -> pb.ModelMetadataResponse:
        return serde.metadata_from_specs(
            MODEL, (self._spec,), self._graph.outputs, platform=PLATFORM
        )

    def infer(
        self, request: InferRequest, *, received_bytes: int, timeout_s: float | None
    ) -> InferResponse:
        started = time.perf_counter()
        features = _tensor(self.tier, request, self._spec)
        logits = self._graph.run({"edge_features": features})["logits"]
        compute_ms = round((time.perf_counter() - started) * 1000.0, 3)
        return serde.response_from_tensors(
            MODEL,
            {"logits": logits},
            request_id=request.header.id,
            parameters={"tierflow-compute-ms": str(compute_ms)},
        )

    def close(self) -> None:
        return None
