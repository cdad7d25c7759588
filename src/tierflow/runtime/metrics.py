"""Prometheus metrics of one tier server, in a registry of its own.

A registry per server (not prometheus_client's global one) lets several tier services run
in one process, as the testbed and the tests do, without duplicate-metric errors.
"""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

# Histogram buckets in seconds, from sub-millisecond loopback calls to slow WAN uplinks.
_LATENCY_BUCKETS_S = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
)


class TierMetrics:
    """Request count, latency and bytes in/out of one tier server, and the answers it gave
    itself per exit (``exit="final"``: the backbone's output computed on this tier)."""

    def __init__(self, tier: str) -> None:
        self.registry = CollectorRegistry()
        labels = ["tier", "method"]
        self.requests = Counter(
            "tierflow_requests", "OIP requests answered", [*labels, "code"], registry=self.registry
        )
        self.latency = Histogram(
            "tierflow_request_latency_seconds",
            "Time to answer an OIP request",
            labels,
            buckets=_LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.bytes_in = Counter(
            "tierflow_request_bytes",
            "Serialized request bytes received",
            labels,
            registry=self.registry,
        )
        self.bytes_out = Counter(
            "tierflow_response_bytes",
            "Serialized response bytes sent",
            labels,
            registry=self.registry,
        )
        self.answers = Counter(
            "tierflow_answers",
            "Inference answers given by this tier, by early exit (or final)",
            ["tier", "exit"],
            registry=self.registry,
        )
        self.tier = tier
        self._http: tuple[WSGIServer, threading.Thread] | None = None

    def observe(
        self, method: str, code: str, seconds: float, bytes_in: int, bytes_out: int
    ) -> None:
        self.requests.labels(self.tier, method, code).inc()
        self.latency.labels(self.tier, method).observe(seconds)
        self.bytes_in.labels(self.tier, method).inc(bytes_in)
        self.bytes_out.labels(self.tier, method).inc(bytes_out)

    def count_answer(self, exit_name: str) -> None:
        self.answers.labels(self.tier, exit_name).inc()

    def serve(self, host: str, port: int) -> int:
        """Expose ``/metrics`` over HTTP on ``host:port`` (0: any free port); the bound port."""
        server, thread = start_http_server(port, addr=host, registry=self.registry)
        self._http = (server, thread)
        return int(server.server_port)

    def close(self) -> None:
        if self._http is not None:
            server, thread = self._http
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
            self._http = None
