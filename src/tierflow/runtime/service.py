"""A tier's inference logic, independent of how requests arrive.

:class:`TierService` runs the tier's executors on a request's tensors, forwards what the
:class:`~tierflow.runtime.route.Route` says to the upstream tier through a
:class:`~tierflow.runtime.transport.Transport`, and answers with the final outputs and a
trace. :mod:`tierflow.runtime.server` puts it on a gRPC socket; an
:class:`~tierflow.runtime.transport.InMemoryTransport` calls it directly.

A tier may run early exits (:class:`~tierflow.runtime.early_exit.TierExit`) between its
executors: when an exit is confident for the whole request (Note [batch rule for early
exits]), the tier answers with the exit's logits under the model's output name and runs
nothing further, here or upstream.

Tensors the route names a codec for travel upstream compressed, and compressed tensors a
caller sends are decoded before anything reads them (Note [Codec payloads on the wire] in
:mod:`tierflow.runtime.link_codecs`).
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np

from tierflow.compress.codecs import Codec, codec_from_spec
from tierflow.errors import CodecError, ServiceError, TierflowError, WireError
from tierflow.runtime import link_codecs, serde
from tierflow.runtime._proto import grpc_predict_v2_pb2 as pb
from tierflow.runtime.early_exit import TierExit
from tierflow.runtime.executor import Executor, IOSpec
from tierflow.runtime.route import Route
from tierflow.runtime.trace import FINAL, TRACE_PARAMETER, LinkHop, TierHop, Trace
from tierflow.runtime.transport import Transport
from tierflow.runtime.wire import InferRequest, InferResponse

PLATFORM = "tierflow"
# Time kept back from the caller's deadline for answering it after the upstream replies.
_DEADLINE_MARGIN_S = 0.005


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


def _describe(spec: IOSpec) -> str:
    return f"{spec.dtype} {list(spec.shape)}"


class TierService:
    """One tier of a split model: its executors, run in order, and its route onward.

    Parameters
    ----------
    model:
        The model id served (the OIP ``model_name`` callers must use).
    executors:
        Run in sequence; each takes its inputs from the request's tensors and the outputs
        of the executors before it. May be empty for a pure relay.
    route:
        What to forward upstream and which tensors are the final outputs.
    transport:
        How to reach the upstream tier; required when the route has one.
    output_specs:
        Specs of the model's final outputs, where an upstream tier computes them.
    exits:
        Early exits, each run after executor ``exit.after``; the first confident one
        answers the request.

    Examples
    --------
    >>> service = TierService("m", [executor], route=Route("cloud"))  # doctest: +SKIP
    >>> response = service.infer(serde.request_from_tensors("m", {"x": x}))  # doctest: +SKIP
    """

    def __init__(
        self,
        model: str,
        executors: Sequence[Executor],
        *,
        route: Route,
        transport: Transport | None = None,
        output_specs: Sequence[IOSpec] = (),
        exits: Sequence[TierExit] = (),
    ) -> None:
        if route.upstream is not None and transport is None:
            raise ValueError(f"tier {route.tier!r} has an upstream but no transport")
        for early in exits:
            if not 0 <= early.after < len(executors):
                raise ValueError(
                    f"tier {route.tier!r}: exit {early.name!r} runs after executor "
                    f"{early.after}, but the tier has {len(executors)}"
                )
        self.model = model
        self.route = route
        self.executors = tuple(executors)
        # Specs of the model's final outputs where they are known even though an upstream
        # tier computes them (from the build manifest), so the entry's metadata is complete.
        self.output_specs = tuple(output_specs)
        self.transport = transport
        self.exits = tuple(sorted(exits, key=lambda e: e.after))
        # Built once: the route checked the specs, requests only encode.
        self._codecs: dict[str, Codec] = {
            name: codec_from_spec(spec) for name, spec in route.codecs.items()
        }
        self._answer_listeners: list[Callable[[str], None]] = []
        # Executors need not be thread-safe (ONNX Runtime sessions are, PyTorch modules
        # with state may not be): one request computes at a time, the wait is `queue_ms`.
        self._compute_lock = threading.Lock()

    @property
    def tier(self) -> str:
        return self.route.tier

    @functools.cached_property
    def inputs(self) -> tuple[IOSpec, ...]:
        """Tensors a caller must send: the executors' inputs not produced by an earlier one.

        Cached: every request is checked against it, and the executors never change.
        """
        produced: set[str] = set()
        needed: list[IOSpec] = []
        for executor in self.executors:
            needed += [s for s in executor.inputs if s.name not in produced and s not in needed]
            produced |= {spec.name for spec in executor.outputs}
        return tuple(needed)

    @property
    def outputs(self) -> tuple[IOSpec, ...]:
        if self.output_specs:
            return self.output_specs
        specs = [spec for executor in self.executors for spec in executor.outputs]
        if self.route.outputs:
            return tuple(spec for spec in specs if spec.name in self.route.outputs)
        return self.executors[-1].outputs if self.executors else ()

    def on_answer(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(exit name)`` whenever this tier answers a request itself: at
        one of its exits, or with the final output computed here (``"final"``).
        Answers relayed from upstream are the upstream tier's to report."""
        self._answer_listeners.append(listener)

    def metadata(self) -> pb.ModelMetadataResponse:
        return serde.metadata_from_specs(self.model, self.inputs, self.outputs, platform=PLATFORM)

    def check_model(self, name: str) -> None:
        if name != self.model:
            raise ServiceError(
                "NOT_FOUND", f"tier {self.tier!r} serves model {self.model!r}, not {name!r}"
            )

    def infer(self, request: InferRequest, *, timeout_s: float | None = None) -> InferResponse:
        """Answer one ModelInfer request; raises ServiceError with a gRPC status name.

        The request's tensors are read as views of its bytes and tensors forwarded or
        answered unchanged are written from those views: a relay copies no tensor itself
        (the only copy is gRPC's ``bytes`` for each message sent). Tensors the route
        compresses, and compressed tensors received, are new arrays.
        """
        started = time.perf_counter()
        deadline = None if timeout_s is None else started + timeout_s
        self.check_model(request.header.model_name)
        try:
            pool = link_codecs.decode_tensors(
                serde.tensors_from_request(request), serde.input_parameters(request)
            )
        except WireError as error:
            raise ServiceError("INVALID_ARGUMENT", f"tier {self.tier!r}: {error}") from error

        queue_s, compute_s, last_outputs, answered = self._compute(pool)
        links: list[LinkHop] = []
        upstream_tiers: tuple[TierHop, ...] = ()
        produced_by, exit_name = self.tier, FINAL
        if answered is not None:
            exit_name, answer = answered
            outputs = answer
        else:
            if self.route.upstream is not None:
                upstream_out, trace, link = self._forward(pool, request.header.id, deadline)
                pool.update(upstream_out)
                last_outputs = upstream_out
                links = [link, *trace.links]
                upstream_tiers = trace.tiers
                produced_by, exit_name = trace.produced_by, trace.exit
            names = self.route.outputs or tuple(last_outputs)
            missing = [name for name in names if name not in pool]
            if missing:
                raise ServiceError(
                    "INTERNAL", f"tier {self.tier!r}: outputs {missing} were not produced"
                )
            outputs = {name: pool[name] for name in names}
        hop = TierHop(self.tier, _ms(compute_s), _ms(queue_s), _ms(time.perf_counter() - started))
        trace = Trace(produced_by, (hop, *upstream_tiers), tuple(links), exit=exit_name)
        if not links:  # answered here, not relayed from upstream
            for listener in self._answer_listeners:
                listener(exit_name)
        return serde.response_from_tensors(
            self.model,
            outputs,
            request_id=request.header.id,
            parameters={TRACE_PARAMETER: trace.to_json()},
        )

    def _compute(
        self, pool: serde.TensorMap
    ) -> tuple[float, float, serde.TensorMap, tuple[str, serde.TensorMap] | None]:
        """Run the executors (and exits) on ``pool``, updated in place.

        Returns queue seconds, compute seconds, the last executor's outputs, and
        ``(exit name, answer)`` when an exit answered (the executors after it not run).
        """
        if not self.executors:
            return 0.0, 0.0, dict(pool), None
        for spec in self.inputs:
            array = pool.get(spec.name)
            if array is None:
                raise ServiceError(
                    "INVALID_ARGUMENT",
                    f"tier {self.tier!r}: missing input tensor {spec.name!r} ({_describe(spec)})",
                )
            if not spec.accepts(array):
                raise ServiceError(
                    "INVALID_ARGUMENT",
                    f"tier {self.tier!r}: tensor {spec.name!r} is {array.dtype.name}"
                    f" {list(array.shape)}, expected {_describe(spec)}",
                )
        waited = time.perf_counter()
        answered: tuple[str, serde.TensorMap] | None = None
        with self._compute_lock:
            began = time.perf_counter()
            outputs: serde.TensorMap = {}
            for position, executor in enumerate(self.executors):
                outputs = executor.run({spec.name: pool[spec.name] for spec in executor.inputs})
                pool.update({name: np.asarray(value) for name, value in outputs.items()})
                answered = self._try_exits(position, pool)
                if answered is not None:
                    break
            ended = time.perf_counter()
        return began - waited, ended - began, outputs, answered

    def _try_exits(
        self, position: int, pool: serde.TensorMap
    ) -> tuple[str, serde.TensorMap] | None:
        """Run the exits placed after executor ``position``; the first confident answers."""
        for early in self.exits:
            if early.after != position:
                continue
            # The head's logits stay out of the pool: they are an answer, not a value a
            # later segment or tier consumes.
            logits = early.head.run({spec.name: pool[spec.name] for spec in early.head.inputs})
            try:
                confident = early.decide(logits[early.logits])
            except TierflowError as error:
                raise ServiceError(
                    "INTERNAL", f"tier {self.tier!r}: exit {early.name!r}: {error}"
                ) from error
            if confident:
                return early.name, {early.answers: np.asarray(logits[early.logits])}
        return None

    def _forward(
        self, pool: serde.TensorMap, request_id: str, deadline: float | None
    ) -> tuple[serde.TensorMap, Trace, LinkHop]:
        upstream = self.route.upstream
        assert upstream is not None and self.transport is not None  # checked by the caller
        missing = [name for name in self.route.forward if name not in pool]
        if missing:
            raise ServiceError(
                "INVALID_ARGUMENT",
                f"tier {self.tier!r}: tensors {missing} to forward to {upstream.tier!r} are neither"
                " received nor computed here",
            )
        try:
            tensors, marks = link_codecs.encode_tensors(
                {name: pool[name] for name in self.route.forward}, self._codecs
            )
        except CodecError as error:
            raise ServiceError(
                "INTERNAL", f"tier {self.tier!r}: cannot compress for {upstream.tier!r}: {error}"
            ) from error
        request = serde.request_from_tensors(
            self.model, tensors, request_id=request_id, tensor_parameters=marks
        )
        timeout_s = None
        if deadline is not None:
            timeout_s = deadline - time.perf_counter() - _DEADLINE_MARGIN_S
            if timeout_s <= 0:
                raise ServiceError(
                    "DEADLINE_EXCEEDED",
                    f"tier {self.tier!r}: no time left to call {upstream.tier!r}",
                )
        sent = time.perf_counter()
        response = self.transport.infer(
            upstream.address, request, tier=upstream.tier, timeout_s=timeout_s
        )
        round_trip_s = time.perf_counter() - sent
        try:
            outputs = serde.tensors_from_response(response)
            parameters = serde.string_parameters(response.header.parameters)
            trace = Trace.from_json(parameters[TRACE_PARAMETER])
        except (WireError, KeyError) as error:
            raise ServiceError(
                "INTERNAL", f"tier {self.tier!r}: bad answer from {upstream.tier!r}: {error}"
            ) from error
        upstream_ms = trace.tiers[0].service_ms if trace.tiers else 0.0
        link = LinkHop(
            source=self.tier,
            target=upstream.tier,
            request_bytes=request.nbytes,
            response_bytes=response.nbytes,
            transfer_ms=max(0.0, round(_ms(round_trip_s) - upstream_ms, 3)),
            codecs={name: codec.name for name, codec in self._codecs.items()},
        )
        return outputs, trace, link
