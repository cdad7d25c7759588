"""Probes that measure a link: echo and sink servers, round-trip and goodput clients.

They are plain blocking sockets, independent of the emulator they measure, so that the
testbed's accuracy (bandwidth within ±10 %, delay within ±2 ms) can be checked on any
link, emulated or real: put a server behind the link and run a client through it.
"""

from __future__ import annotations

import socket
import socketserver
import statistics
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

from tierflow.errors import TestbedError

Address = tuple[str, int]


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while data := sock.recv(65536):
            sock.sendall(data)


class _Sink(socketserver.BaseRequestHandler):
    """Reads until the client half-closes, then answers the byte count (8 bytes)."""

    def handle(self) -> None:
        sock: socket.socket = self.request
        total = 0
        while data := sock.recv(1 << 20):
            total += len(data)
        sock.sendall(struct.pack("!Q", total))


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@contextmanager
def serve(kind: Literal["echo", "sink"]) -> Iterator[Address]:
    """An ``"echo"`` or ``"sink"`` server on a free loopback port, for the block."""
    handler = {"echo": _Echo, "sink": _Sink}[kind]
    server = _Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield str(host), int(port)
    finally:
        server.shutdown()
        server.server_close()


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    """Read exactly ``size`` bytes; :class:`ConnectionError` if the peer closes first."""
    parts = []
    while size:
        part = sock.recv(size)
        if not part:
            raise ConnectionError(f"peer closed with {size} bytes still expected")
        parts.append(part)
        size -= len(part)
    return b"".join(parts)


def median_round_trip_s(address: Address, *, rounds: int = 40, size: int = 64) -> float:
    """Median time to echo ``size`` bytes over one connection."""
    with socket.create_connection(address, timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        message = b"x" * size
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            sock.sendall(message)
            recv_exactly(sock, size)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def upload_s(address: Address, size_bytes: int) -> float:
    """Seconds from the first byte sent to the sink's acknowledgement of all of them."""
    payload = b"\0" * size_bytes
    with socket.create_connection(address, timeout=30) as sock:
        start = time.perf_counter()
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        (received,) = struct.unpack("!Q", recv_exactly(sock, 8))
        elapsed = time.perf_counter() - start
    if received != size_bytes:
        where = f"{address[0]}:{address[1]}"
        raise TestbedError(f"sink at {where} received {received} of {size_bytes} bytes")
    return elapsed
