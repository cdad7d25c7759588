"""An emulated network link: a TCP proxy that imposes bandwidth, delay, jitter and outages.

:class:`EmulatedLink` listens on a local port and relays every connection to an upstream
``host:port`` through the timing model of :mod:`tierflow.testbed.shaping`. It runs its
own event loop in a background thread, so tests and the testbed launcher can use it from
plain synchronous code, and it also runs as a process of its own::

    python -m tierflow.testbed.link --listen 127.0.0.1:9000 --upstream 127.0.0.1:8000 \\
        --bandwidth-mbps 20 --rtt-ms 5 --control 127.0.0.1:9001

Parameters change while the link runs: :meth:`EmulatedLink.set` from any thread, or
the JSON line protocol of :mod:`tierflow.testbed.control` on the control port.

Outages stall, they do not reset: while the link is down no byte is transmitted and new
connections are accepted but not connected upstream, as when a radio link loses signal
and TCP keeps retransmitting. Bytes already on the wire when the link goes down still
arrive. Use :meth:`EmulatedLink.reset_connections` (``{"op": "reset"}``) to also break
the open connections.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
import signal
import threading
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any

from tierflow.errors import TestbedError
from tierflow.testbed.control import control_request, serve_control
from tierflow.testbed.relay import relay
from tierflow.testbed.shaping import LinkParams, Transmitter

_log = logging.getLogger(__name__)

# A reader may queue chunks on the transmitter until this much serialisation is pending:
# enough to keep the link busy across event-loop hiccups, short enough that a change of
# bandwidth or an outage takes effect quickly.
_BACKLOG_HORIZON_S = 0.02

Address = tuple[str, int]


@dataclass(frozen=True)
class LinkStats:
    """Byte and connection counts since the link started (payload bytes delivered)."""

    bytes_up: int
    bytes_down: int
    connections_opened: int
    connections_open: int


class _LinkServer:
    """The link's asyncio side; every method but :meth:`update` runs on its loop."""

    def __init__(self, upstream: Address, params: LinkParams, *, seed: int | None) -> None:
        self.upstream = upstream
        self._params = params
        self._params_lock = threading.Lock()
        rng = random.Random(seed)
        self._tx = {d: Transmitter(rng=random.Random(rng.random())) for d in (False, True)}
        self._bytes = {False: 0, True: 0}
        self._opened = 0
        self._connections: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()
        self._servers: list[asyncio.Server] = []

    # LinkState, used by the relays
    @property
    def params(self) -> LinkParams:
        return self._params

    def transmitter(self, *, downstream: bool) -> Transmitter:
        return self._tx[downstream]

    async def wait_transmit(self, *, downstream: bool) -> None:
        loop = asyncio.get_running_loop()
        while True:
            excess_s = self._tx[downstream].backlog_s(loop.time()) - _BACKLOG_HORIZON_S
            if self._params.up and excess_s <= 0:
                return
            changed = self._changed
            timeout = excess_s if self._params.up else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout)

    def delivered(self, size_bytes: int, *, downstream: bool) -> None:
        self._bytes[downstream] += size_bytes

    # parameters and statistics
    def update(self, changes: dict[str, Any]) -> LinkParams:
        """Apply ``changes``; thread-safe (the caller then calls :meth:`notify` on the loop)."""
        with self._params_lock:
            self._params = self._params.updated(**changes)
            return self._params

    def notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def stats(self) -> LinkStats:
        return LinkStats(
            bytes_up=self._bytes[False],
            bytes_down=self._bytes[True],
            connections_opened=self._opened,
            connections_open=len(self._handlers),
        )

    def reset_connections(self) -> int:
        writers = list(self._connections)
        for writer in writers:
            writer.transport.abort()
        return len(writers)

    def handle_control(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "get":
            return {"params": self._params.to_json(), "stats": asdict(self.stats())}
        if op == "set":
            changes = request.get("params")
            if not isinstance(changes, dict):
                raise TestbedError("'set' needs a 'params' object, e.g. {\"rtt_ms\": 20}")
            params = self.update(changes)
            self.notify()
            _log.info("link to %s:%d now %s", *self.upstream, params)
            return {"params": params.to_json()}
        if op == "reset":
            return {"reset": self.reset_connections()}
        raise TestbedError(f"unknown control op {op!r}; known: get, set, reset")

    # serving
    async def start(
        self, listen: Address, control: Address | None
    ) -> tuple[Address, Address | None]:
        server = await asyncio.start_server(self._accept, *listen)
        self._servers.append(server)
        control_address = None
        if control is not None:
            control_server = await serve_control(
                self.handle_control, host=control[0], port=control[1]
            )
            self._servers.append(control_server)
            control_address = _bound(control_server)
        return _bound(server), control_address

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        self.reset_connections()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._connections.add(writer)
        self._opened += 1
        try:
            await self._connect_and_relay(reader, writer)
        except asyncio.CancelledError:
            # Only close() cancels a handler; ending quietly keeps asyncio's server
            # callback from logging the cancellation as an error.
            writer.transport.abort()
        finally:
            self._connections.discard(writer)
            self._handlers.discard(task)

    async def _connect_and_relay(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while not self._params.up:  # an outage: the connection attempt waits for the link
            await self._changed.wait()
        try:
            upstream = await asyncio.open_connection(*self.upstream)
        except OSError as error:
            _log.warning("link upstream %s:%d unreachable: %s", *self.upstream, error)
            writer.transport.abort()
            return
        self._connections.add(upstream[1])
        try:
            await relay(self, (reader, writer), upstream)
        finally:
            self._connections.discard(upstream[1])


def _bound(server: asyncio.Server) -> Address:
    host, port = server.sockets[0].getsockname()[:2]
    return str(host), int(port)


class EmulatedLink:
    """A link emulator running in a background thread.

    Parameters
    ----------
    upstream
        ``(host, port)`` that connections are relayed to.
    params
        Bandwidth, delay, jitter and up/down state (:class:`LinkParams`).
    listen
        Where to accept connections; port ``0`` picks a free one (see :attr:`address`).
    control
        Where to serve the JSON control protocol, or ``None`` for no control port.
    seed
        Seeds the jitter, for reproducible runs.

    Examples
    --------
    >>> with EmulatedLink(("127.0.0.1", 8000), LinkParams(bandwidth_mbps=20, rtt_ms=5)) as link:
    ...     host, port = link.address     # connect here instead of to port 8000
    ...     link.set(up=False)            # an outage
    ...     link.set(up=True, bandwidth_mbps=5)
    """

    def __init__(
        self,
        upstream: Address,
        params: LinkParams,
        *,
        listen: Address = ("127.0.0.1", 0),
        control: Address | None = None,
        seed: int | None = None,
    ) -> None:
        self._upstream = upstream
        self._initial = params
        self._listen = listen
        self._control = control
        self._seed = seed
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: _LinkServer | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.address: Address = listen
        self.control_address: Address | None = None

    def start(self) -> EmulatedLink:
        """Start serving; returns once :attr:`address` accepts connections."""
        if self._thread is not None:
            raise TestbedError("this EmulatedLink was already started")
        self._thread = threading.Thread(target=self._run, name="tierflow-link", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise TestbedError(
                f"link cannot listen on {self._listen[0]}:{self._listen[1]}: {self._error}"
            ) from self._error
        return self

    def stop(self) -> None:
        """Close the listener and every connection, and end the thread."""
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop_soon.set)
            self._thread.join()

    def __enter__(self) -> EmulatedLink:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def params(self) -> LinkParams:
        return self._server.params if self._server is not None else self._initial

    def set(self, **changes: Any) -> LinkParams:
        """Change parameters (``bandwidth_mbps=``, ``rtt_ms=``, ``jitter_ms=``, ``up=``, ...).

        Thread-safe; the change applies to the next chunk each connection sends.
        """
        server = self._running()
        params = server.update(changes)
        assert self._loop is not None
        self._loop.call_soon_threadsafe(server.notify)
        return params

    def stats(self) -> LinkStats:
        return self._running().stats()

    def reset_connections(self) -> None:
        """Abort every open connection (both ends see a reset)."""
        server = self._running()
        assert self._loop is not None
        self._loop.call_soon_threadsafe(server.reset_connections)

    def _running(self) -> _LinkServer:
        if self._server is None:
            raise TestbedError("the link is not running; call start() first")
        return self._server

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_soon = asyncio.Event()
        server = _LinkServer(self._upstream, self._initial, seed=self._seed)
        try:
            self.address, self.control_address = await server.start(self._listen, self._control)
        except OSError as error:
            self._error = error
            self._ready.set()
            return
        self._server = server
        self._ready.set()
        try:
            await self._stop_soon.wait()
        finally:
            await server.close()


def _address(text: str) -> Address:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host or "127.0.0.1", int(port)


def main(argv: list[str] | None = None) -> None:
    """Run one link as a process until SIGINT or SIGTERM; print where it listens."""
    parser = argparse.ArgumentParser(prog="python -m tierflow.testbed.link", description=__doc__)
    parser.add_argument("--listen", type=_address, default=("127.0.0.1", 0))
    parser.add_argument("--upstream", type=_address, required=True)
    parser.add_argument("--bandwidth-mbps", type=float, required=True)
    parser.add_argument("--downlink-mbps", type=float, default=None)
    parser.add_argument("--rtt-ms", type=float, default=0.0)
    parser.add_argument("--jitter-ms", type=float, default=0.0)
    parser.add_argument("--control", type=_address, default=None, help="control HOST:PORT")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    params = LinkParams(
        bandwidth_mbps=args.bandwidth_mbps,
        rtt_ms=args.rtt_ms,
        downlink_mbps=args.downlink_mbps,
        jitter_ms=args.jitter_ms,
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    asyncio.run(_serve(args.upstream, params, args.listen, args.control, args.seed))


async def _serve(
    upstream: Address,
    params: LinkParams,
    listen: Address,
    control: Address | None,
    seed: int | None,
) -> None:
    server = _LinkServer(upstream, params, seed=seed)
    address, control_address = await server.start(listen, control)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    control_text = "" if control_address is None else " control {}:{}".format(*control_address)
    print(f"listening {address[0]}:{address[1]}{control_text}", flush=True)
    _log.info("relaying to %s:%d with %s", *upstream, params)
    try:
        await stop.wait()
    finally:
        await server.close()


__all__ = ["EmulatedLink", "LinkParams", "LinkStats", "control_request", "main"]

if __name__ == "__main__":
    main()
