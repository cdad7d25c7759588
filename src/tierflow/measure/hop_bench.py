"""Per-hop overhead of a tier service against a raw TCP exchange on loopback.

``tierflow bench-hop`` answers one question: how much does a tierflow hop (Open Inference
Protocol over gRPC, serde to and from numpy) cost on top of moving the same bytes over a
plain socket? Both are measured side by side in one run, interleaved call by call so that
a noisy machine slows both alike.

Note [Fair hop baseline]
------------------------
Both cases are a round trip that carries the tensor both ways, in float32:

* **raw TCP**: the client sends an 8-byte length and the tensor's bytes (zero-copy from
  the array, ``TCP_NODELAY``); a server thread reads them all into a fresh buffer and
  sends the same bytes back; the client reads them into a fresh buffer and views it as an
  array. This is the floor for any protocol that returns an output as large as its input.
* **tier**: a :class:`~tierflow.runtime.server.TierServer` whose executor returns its input
  (identity, ``float32 [-1]``), called with :func:`~tierflow.runtime.client.connect`'s
  ``Client.infer``. Request and response each carry the tensor, as a tier whose output is
  as large as its input.
* **relay** (optional): the same call made through a pass-through tier (no executors,
  routes the tensor upstream) in front of the identity tier, so ``relay − tier`` is the
  cost of one forwarding hop.
* **gRPC echo** (optional): the ceiling for any hop made with grpcio, measured rather than
  assumed. A bytes-in/bytes-out unary method (no protobuf, no serde) on its own gRPC server
  in the identity tier's process, same message limits; the client hands it
  ``x.tobytes()`` (gRPC's Python API takes only ``bytes``, so any client copies the tensor
  once, as the tier codec does) and views the reply as an array. tier/raw cannot exceed
  echo/raw by more than noise: the tier call adds only the OIP framing around the same
  gRPC call.

Every client runs in the calling process, so a process-wide setting there reaches all of
them alike: ``tierflow bench-hop`` calls
:func:`~tierflow.runtime.allocator.tune_allocator` in its own process (``--no-tune-allocator``
to measure glibc's defaults), as its servers do. That makes the raw TCP client faster too
(its fresh reply buffers stop faulting), so the ratio stays fair.

Every server runs in its own process (``spawn``), so the GIL never serialises the client
with a server. Throughput counts the tensor bytes carried in both directions over the
median round trip: ``2 × size / p50``; the tier/raw throughput ratio is ``raw p50 / tier
p50``.
"""

from __future__ import annotations

import multiprocessing
import socket
import statistics
import struct
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent import futures
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from multiprocessing.connection import Connection
from typing import Any

import grpc
import numpy as np
from numpy.typing import NDArray

from tierflow.errors import ServiceError, WireError
from tierflow.runtime.allocator import tune_allocator
from tierflow.runtime.client import Client, connect
from tierflow.runtime.executor import IOSpec
from tierflow.runtime.route import Route, Upstream
from tierflow.runtime.server import TierServer
from tierflow.runtime.service import TierService
from tierflow.runtime.transport import DEFAULT_MAX_MESSAGE_BYTES, GrpcTransport, channel_options

ECHO_SERVICE = "tierflow.bench.Echo"  # the gRPC echo's service name (not an OIP service)
#: Tensor sizes of the issue's benchmark: 4 KB, 100 KB, 1 MB, 10 MB (float32, decimal units).
DEFAULT_SIZES_BYTES = (4_000, 100_000, 1_000_000, 10_000_000)
MODEL = "identity"
_HEADER = struct.Struct("<Q")  # raw TCP framing: the payload length, little-endian u64
_START_TIMEOUT_S = 60.0  # a spawned server imports tierflow (and torch): seconds, not ms


@dataclass(frozen=True)
class HopTiming:
    """Round-trip times for one tensor size (ms), raw TCP beside the tier call."""

    size_bytes: int
    samples: int
    raw_p50_ms: float
    raw_p95_ms: float
    tier_p50_ms: float
    tier_p95_ms: float
    relay_p50_ms: float | None = None  # through a pass-through tier in front (one more hop)
    relay_p95_ms: float | None = None
    echo_p50_ms: float | None = None  # bytes-only gRPC echo: the ceiling for a gRPC hop
    echo_p95_ms: float | None = None

    @property
    def added_ms(self) -> float:
        """What the tier call adds to the raw TCP round trip (median)."""
        return self.tier_p50_ms - self.raw_p50_ms

    @property
    def raw_mbps(self) -> float:
        return _mbps(self.size_bytes, self.raw_p50_ms)

    @property
    def tier_mbps(self) -> float:
        return _mbps(self.size_bytes, self.tier_p50_ms)

    @property
    def throughput_ratio(self) -> float:
        """Tier throughput as a fraction of raw TCP's (1.0: no overhead)."""
        return self.raw_p50_ms / self.tier_p50_ms

    @property
    def echo_ratio(self) -> float | None:
        """gRPC bytes-echo throughput as a fraction of raw TCP's: the tier's ceiling."""
        return None if self.echo_p50_ms is None else self.raw_p50_ms / self.echo_p50_ms

    @property
    def relay_added_ms(self) -> float | None:
        """The cost of one forwarding hop: relayed call minus direct call (median)."""
        return None if self.relay_p50_ms is None else self.relay_p50_ms - self.tier_p50_ms

    def to_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "bytes": self.size_bytes,
            "samples": self.samples,
            "raw_p50_ms": round(self.raw_p50_ms, 4),
            "raw_p95_ms": round(self.raw_p95_ms, 4),
            "tier_p50_ms": round(self.tier_p50_ms, 4),
            "tier_p95_ms": round(self.tier_p95_ms, 4),
            "added_ms": round(self.added_ms, 4),
            "raw_mbps": round(self.raw_mbps, 1),
            "tier_mbps": round(self.tier_mbps, 1),
            "throughput_ratio": round(self.throughput_ratio, 4),
        }
        if self.relay_p50_ms is not None and self.relay_p95_ms is not None:
            document["relay_p50_ms"] = round(self.relay_p50_ms, 4)
            document["relay_p95_ms"] = round(self.relay_p95_ms, 4)
            document["relay_added_ms"] = round(self.relay_p50_ms - self.tier_p50_ms, 4)
        if self.echo_p50_ms is not None and self.echo_p95_ms is not None:
            document["echo_p50_ms"] = round(self.echo_p50_ms, 4)
            document["echo_p95_ms"] = round(self.echo_p95_ms, 4)
            document["echo_ratio"] = round(self.raw_p50_ms / self.echo_p50_ms, 4)
        return document


def _mbps(size_bytes: int, p50_ms: float) -> float:
    return 2 * size_bytes / (p50_ms / 1000.0) / 1e6  # both directions, MB = 10^6 bytes


# --- servers (each in its own process) -------------------------------------------------


class Identity:
    """An executor returning its float32 input ``x`` unchanged as ``y`` (no copy)."""

    inputs = (IOSpec("x", (-1,), "float32"),)
    outputs = (IOSpec("y", (-1,), "float32"),)

    def run(self, inputs: Mapping[str, NDArray[np.generic]]) -> dict[str, NDArray[np.generic]]:
        return {"y": inputs["x"]}


def _recv_exactly(sock: socket.socket, buffer: memoryview) -> None:
    received = 0
    while received < len(buffer):
        got = sock.recv_into(buffer[received:])
        if got == 0:
            raise ConnectionError("raw TCP peer closed mid-message")
        received += got


def _echo_connection(sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    header = bytearray(_HEADER.size)
    with sock:
        while True:
            try:
                _recv_exactly(sock, memoryview(header))
            except ConnectionError:
                return
            (size,) = _HEADER.unpack(header)
            payload = bytearray(size)
            _recv_exactly(sock, memoryview(payload))
            sock.sendall(header)
            sock.sendall(payload)


def _echo_server(listener: socket.socket) -> None:
    while True:
        try:
            sock, _ = listener.accept()
        except OSError:  # closed at shutdown
            return
        threading.Thread(target=_echo_connection, args=(sock,), daemon=True).start()


def _echo_bytes(data: bytes, context: grpc.ServicerContext) -> bytes:
    return data


@contextmanager
def _grpc_echo_server() -> Iterator[str]:
    """A bytes-in/bytes-out gRPC echo on loopback (same message limits as a tier); its address."""
    server = grpc.server(
        futures.ThreadPoolExecutor(2), options=channel_options(DEFAULT_MAX_MESSAGE_BYTES)
    )
    handler = grpc.unary_unary_rpc_method_handler(_echo_bytes)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(ECHO_SERVICE, {"Echo": handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(None).wait()


def _serve(conn: Connection, upstream: str | None) -> None:
    """Process body: an identity tier, a raw echo server and a gRPC echo, or a relay tier to
    ``upstream``.

    Sends ``(tier address, raw echo port or None, gRPC echo address or None)`` through
    ``conn``, then serves until any message arrives on it.
    """
    tune_allocator()  # as `tierflow serve` does: this process only serves
    with ExitStack() as stack:
        echo_port = grpc_echo = None
        if upstream is None:
            service = TierService(MODEL, [Identity()], route=Route("identity"))
            listener = stack.enter_context(socket.create_server(("127.0.0.1", 0)))
            echo_port = listener.getsockname()[1]
            threading.Thread(target=_echo_server, args=(listener,), daemon=True).start()
            grpc_echo = stack.enter_context(_grpc_echo_server())
        else:
            route = Route("relay", forward=("x",), upstream=Upstream("identity", upstream))
            service = TierService(MODEL, [], route=route, transport=GrpcTransport())
        server = stack.enter_context(TierServer(service))
        conn.send((server.address, echo_port, grpc_echo))
        conn.recv()


@contextmanager
def server_process(upstream: str | None) -> Iterator[tuple[str, int | None, str | None]]:
    """Run :func:`_serve` in a fresh process.

    Yields (tier address, raw echo port or None, gRPC echo address or None): the echoes run
    beside the identity tier only (``upstream`` None).
    """
    context = multiprocessing.get_context("spawn")  # grpc's threads do not survive fork
    ours, theirs = context.Pipe()
    process = context.Process(target=_serve, args=(theirs, upstream), daemon=True)
    process.start()
    theirs.close()  # the child holds it now: if the child dies, recv() sees end of file
    try:
        try:
            if not ours.poll(_START_TIMEOUT_S):
                raise TimeoutError(f"no answer in {_START_TIMEOUT_S} s")
            address, echo_port, grpc_echo = ours.recv()
        except (EOFError, TimeoutError) as error:
            raise ServiceError(
                "UNAVAILABLE",
                f"hop bench: the {'relay' if upstream else 'identity'} tier"
                f" process did not start ({error or 'it exited'})",
            ) from error
        yield address, echo_port, grpc_echo
    finally:
        if process.is_alive():
            ours.send("stop")
        process.join(10.0)
        if process.is_alive():
            process.kill()
        ours.close()


# --- clients -----------------------------------------------------------------------------


class RawClient:
    """The raw TCP side of the baseline (see Note [Fair hop baseline])."""

    def __init__(self, port: int) -> None:
        self._sock = socket.create_connection(("127.0.0.1", port))
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def round_trip(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        payload = x.data.cast("B")  # zero-copy, like the best a protocol could do
        self._sock.sendall(_HEADER.pack(len(payload)))
        self._sock.sendall(payload)
        header = bytearray(_HEADER.size)
        _recv_exactly(self._sock, memoryview(header))
        (size,) = _HEADER.unpack(header)
        reply = bytearray(size)
        _recv_exactly(self._sock, memoryview(reply))
        return np.frombuffer(reply, dtype=np.float32)

    def close(self) -> None:
        self._sock.close()


class GrpcEchoClient:
    """The gRPC echo side of the ceiling (see Note [Fair hop baseline])."""

    def __init__(self, address: str) -> None:
        self._channel = grpc.insecure_channel(
            address, options=channel_options(DEFAULT_MAX_MESSAGE_BYTES)
        )
        self._echo = self._channel.unary_unary(f"/{ECHO_SERVICE}/Echo")

    def round_trip(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        reply: bytes = self._echo(x.tobytes(), timeout=_START_TIMEOUT_S)
        return np.frombuffer(reply, dtype=np.float32)

    def close(self) -> None:
        self._channel.close()


def _percentile(samples_ms: Sequence[float], fraction: float) -> float:
    ordered = sorted(samples_ms)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def _check_identity(case: str, x: NDArray[np.float32], y: NDArray[np.generic]) -> None:
    if y.shape != x.shape or not np.array_equal(x, y):
        raise WireError(f"hop bench: the {case} round trip did not return its input")


def _infer(client: Client, x: NDArray[np.float32]) -> NDArray[np.generic]:
    return client.infer({"x": x}).output  # by name: a relay tier declares no inputs


def _timed_ms(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1000.0


def run_hop_bench(
    sizes_bytes: Sequence[int] = DEFAULT_SIZES_BYTES,
    *,
    repeats: int = 300,
    min_repeats: int = 15,
    budget_s: float = 8.0,
    warmup: int = 5,
    relay: bool = True,
    grpc_echo: bool = True,
    progress: Callable[[str], None] | None = None,
) -> list[HopTiming]:
    """Time raw TCP, tier and (optionally) relayed tier round trips for each size.

    Each size gets ``warmup`` untimed rounds (the first one checks that every case returns
    its input exactly), then up to ``repeats`` timed rounds, stopping early once
    ``budget_s`` has passed and at least ``min_repeats`` were taken. Within a round the
    cases run back to back, so drift on a shared machine hits them alike. ``grpc_echo``
    adds the bytes-only gRPC echo (the ceiling for a gRPC hop) to the cases.

    The clients run in this process with its allocator as it is: the caller decides
    (``tierflow bench-hop`` calls :func:`~tierflow.runtime.allocator.tune_allocator`).

    Examples
    --------
    >>> [t.to_dict()["added_ms"] for t in run_hop_bench([4_000], repeats=20)]  # doctest: +SKIP
    [0.41]
    """
    bad = [size for size in sizes_bytes if size <= 0 or size % 4]
    if bad:
        raise ValueError(f"tensor sizes must be positive multiples of 4 bytes, got {bad}")
    rng = np.random.default_rng(0)
    timings = []
    with ExitStack() as stack:
        address, echo_port, echo_address = stack.enter_context(server_process(None))
        assert echo_port is not None and echo_address is not None  # beside the identity tier
        relay_address = stack.enter_context(server_process(address))[0] if relay else None
        raw = RawClient(echo_port)
        stack.callback(raw.close)
        echo = None
        if grpc_echo:
            echo = GrpcEchoClient(echo_address)
            stack.callback(echo.close)
        tier = stack.enter_context(connect(address))
        relayed = None if relay_address is None else stack.enter_context(connect(relay_address))
        for size in sizes_bytes:
            x = rng.standard_normal(size // 4, dtype=np.float32)
            cases: dict[str, Callable[[], NDArray[np.generic]]] = {
                "raw TCP": partial(raw.round_trip, x),
                "tier": partial(_infer, tier, x),
            }
            if relayed is not None:
                cases["relay"] = partial(_infer, relayed, x)
            if echo is not None:
                cases["gRPC echo"] = partial(echo.round_trip, x)
            for name, case in cases.items():
                _check_identity(name, x, case())
            for _ in range(warmup - 1):
                for case in cases.values():
                    case()
            samples: dict[str, list[float]] = {name: [] for name in cases}
            started = time.perf_counter()
            for done in range(repeats):
                if done >= min_repeats and time.perf_counter() - started > budget_s:
                    break
                for name, case in cases.items():
                    samples[name].append(_timed_ms(case))
            timing = HopTiming(
                size_bytes=size,
                samples=len(samples["tier"]),
                raw_p50_ms=statistics.median(samples["raw TCP"]),
                raw_p95_ms=_percentile(samples["raw TCP"], 0.95),
                tier_p50_ms=statistics.median(samples["tier"]),
                tier_p95_ms=_percentile(samples["tier"], 0.95),
                relay_p50_ms=statistics.median(samples["relay"]) if "relay" in samples else None,
                relay_p95_ms=_percentile(samples["relay"], 0.95) if "relay" in samples else None,
                echo_p50_ms=(
                    statistics.median(samples["gRPC echo"]) if "gRPC echo" in samples else None
                ),
                echo_p95_ms=(
                    _percentile(samples["gRPC echo"], 0.95) if "gRPC echo" in samples else None
                ),
            )
            timings.append(timing)
            if progress is not None:
                progress(f"{size} B: {timing.samples} rounds, added {timing.added_ms:.3f} ms")
    return timings


def hop_report(
    timings: Sequence[HopTiming], *, client_allocator_tuned: bool | None = None
) -> dict[str, Any]:
    """The JSON document of ``tierflow bench-hop --json`` and ``reports/bench/hop.json``.

    ``client_allocator_tuned`` records whether the client process ran with
    :func:`~tierflow.runtime.allocator.tune_allocator` (left out when not given).
    """
    document: dict[str, Any] = {}
    if client_allocator_tuned is not None:
        document["client_allocator_tuned"] = client_allocator_tuned
    document["sizes"] = [timing.to_dict() for timing in timings]
    return document
