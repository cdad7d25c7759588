"""A tier's per-request service cost, measured inside its CPU budget.

Receiving a request, decoding it, encoding the reply and gRPC's own threads all run in the
tier's process, so under the testbed's CPU quota they are slowed like the segment is. The
probe serves a sink (an executor that ignores its input) under the tier's quota and times
requests carrying an input-sized tensor from outside the quota; the mean is the tier's
``service_ms`` (docs/concepts.md, "The cost of one input").

Note [mean under a CPU quota]
    Under a CFS quota with a 10 ms period, a request that needs less CPU than is left in
    the period runs at full speed, and one that exhausts it waits for the next period:
    latencies of short requests are bimodal (measured on a tier at speed 0.1: about 1 ms
    and 9 ms, alternating). Their median lands on either mode depending on the phase of
    the period (service_ms 0.7 ms in one profiling run, 3.0 ms in another), while their
    mean is stable and is what a sequence of requests costs on average, so that is what
    the probe reports; the cost model's latency is an expectation too.

Run as ``python -m tierflow.measure.service_probe``: it prints ``listening HOST:PORT``
and serves until SIGTERM.
"""

from __future__ import annotations

import selectors
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Mapping

import numpy as np
from numpy.typing import NDArray

from tierflow.errors import ProfileError
from tierflow.runtime.client import connect
from tierflow.runtime.executor import IOSpec
from tierflow.runtime.route import Route
from tierflow.runtime.server import TierServer
from tierflow.runtime.service import TierService
from tierflow.testbed.cpu import apply_deferred_quota, cpu_limited

PROBE_MODEL = "tierflow-service-probe"


class _Sink:
    """Takes any float32 vector and answers one float: only the service stack does work."""

    inputs = (IOSpec("x", (-1,), "float32"),)
    outputs = (IOSpec("y", (1,), "float32"),)

    def run(self, inputs: Mapping[str, NDArray[np.generic]]) -> dict[str, NDArray[np.generic]]:
        return {"y": np.zeros(1, dtype=np.float32)}


def _serve() -> None:
    from tierflow.runtime.allocator import tune_allocator

    tune_allocator()  # as `tierflow serve` does
    service = TierService(PROBE_MODEL, [_Sink()], route=Route("probe", outputs=("y",)))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with TierServer(service) as server:
        apply_deferred_quota()
        print(f"listening {server.address}", flush=True)
        stop.wait()


def time_served(
    args: list[str],
    *,
    speed: float,
    model: str,
    request: Mapping[str, NDArray[np.generic]],
    requests: int = 30,
    timeout_s: float = 120.0,
) -> tuple[float, str | None]:
    """Mean latency of ``request`` against a server started by ``args`` at ``speed``.

    ``args`` must start a process that prints ``listening HOST:PORT`` when ready (as
    ``tierflow serve`` and this module do). It runs under the tier's CPU quota; the
    requests are sent from this, unthrottled, process. Returns the mean in ms (Note [mean
    under a CPU quota]) and why the server ran unthrottled (``None`` if it was throttled).
    """
    with cpu_limited(
        args,
        speed=speed,
        name="probe",
        stdout=subprocess.PIPE,
        text=True,
        defer_until_ready=True,
    ) as child:
        stdout = child.process.stdout
        assert stdout is not None
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(stdout, selectors.EVENT_READ)
                if not selector.select(timeout=timeout_s):
                    raise ProfileError(f"probe server did not start within {timeout_s:.0f} s")
            line = str(stdout.readline()).strip()
            if not line.startswith("listening "):
                raise ProfileError(f"probe server failed to start: {line!r}")
            address = line.removeprefix("listening ")
            with connect(address, model=model, timeout_s=timeout_s) as client:
                for _ in range(3):
                    client.infer(request)
                samples = []
                for _ in range(requests):
                    started = time.perf_counter()
                    client.infer(request)
                    samples.append((time.perf_counter() - started) * 1000)
        finally:
            stdout.close()
        return statistics.fmean(samples), child.reason


def measure_service_ms(speed: float, *, input_bytes: int, requests: int = 30) -> float:
    """Per-request cost of a tier's service stack at ``speed``, with an input-sized request."""
    x = np.zeros(max(1, input_bytes // 4), dtype=np.float32)
    args = [sys.executable, "-m", "tierflow.measure.service_probe"]
    ms, _ = time_served(args, speed=speed, model=PROBE_MODEL, request={"x": x}, requests=requests)
    return ms


if __name__ == "__main__":
    _serve()
