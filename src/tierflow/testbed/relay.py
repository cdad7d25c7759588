"""Relaying one TCP connection through an emulated link, byte for byte, both directions.

The relay makes no assumption about what the bytes mean (gRPC's HTTP/2 passes through
untouched) and forwards half-closes: when one side shuts down its sending half, the other
side sees end-of-file after the last byte has crossed the link, while the reverse
direction keeps flowing.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Protocol

from tierflow.testbed.shaping import LinkParams, Transmitter, chunk_bytes

# asyncio wakes timers late by up to one millisecond: the selector rounds its timeout up
# to whole milliseconds (CPython's epoll and selectors). Waking half a millisecond early
# centres the release-time error on zero instead of +0.5 ms.
_TIMER_LEAD_S = 0.0005

# Bytes a connection may have crossed the link but not yet delivered to a slow reader,
# beyond the link's bandwidth-delay product, before the relay stops reading its sender.
_DELIVERY_SLACK_BYTES = 1024 * 1024


class LinkState(Protocol):
    """What a relay needs from the link it crosses (see :mod:`tierflow.testbed.link`)."""

    @property
    def params(self) -> LinkParams: ...

    def transmitter(self, *, downstream: bool) -> Transmitter: ...

    async def wait_transmit(self, *, downstream: bool) -> None:
        """Return once the link is up and its backlog is short enough to queue more."""

    def delivered(self, size_bytes: int, *, downstream: bool) -> None: ...


class Pipe:
    """One direction of one connection: read, schedule on the link, deliver on time."""

    def __init__(
        self,
        link: LinkState,
        *,
        downstream: bool,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
    ) -> None:
        self._link = link
        self._downstream = downstream
        self._source = source
        self._sink = sink
        # (release time, bytes); ``None`` marks the sender's end-of-file.
        self._queue: deque[tuple[float, bytes | None]] = deque()
        self._queued_bytes = 0
        self._last_release = 0.0
        self._ready = asyncio.Event()
        self._space = asyncio.Event()

    async def pump_in(self) -> None:
        """Read the sender and put its bytes on the link until end-of-file."""
        loop = asyncio.get_running_loop()
        while True:
            await self._wait_for_space()
            await self._link.wait_transmit(downstream=self._downstream)
            params = self._link.params
            data = await self._source.read(
                chunk_bytes(params.rate_mbps(downstream=self._downstream))
            )
            if data:
                # The link may have gone down while we waited for the sender.
                await self._link.wait_transmit(downstream=self._downstream)
                tx = self._link.transmitter(downstream=self._downstream)
                release = tx.send(
                    loop.time(), len(data), self._link.params, downstream=self._downstream
                )
            else:
                release = loop.time() + self._link.params.rtt_ms / 2e3
            self._last_release = max(release, self._last_release)  # never reorder
            self._queue.append((self._last_release, data or None))
            self._queued_bytes += len(data)
            self._ready.set()
            if not data:
                return

    async def pump_out(self) -> None:
        """Deliver queued bytes to the receiver at their release times."""
        loop = asyncio.get_running_loop()
        while True:
            while not self._queue:
                self._ready.clear()
                await self._ready.wait()
            release, data = self._queue[0]
            wait_s = release - _TIMER_LEAD_S - loop.time()
            if wait_s > 0:
                await asyncio.sleep(wait_s)
            self._queue.popleft()
            if data is None:
                if self._sink.can_write_eof():
                    self._sink.write_eof()
                return
            self._sink.write(data)
            self._queued_bytes -= len(data)
            self._space.set()
            self._link.delivered(len(data), downstream=self._downstream)
            await self._sink.drain()

    async def _wait_for_space(self) -> None:
        while True:
            params = self._link.params
            bdp_bytes = (
                params.rate_mbps(downstream=self._downstream) * 1e6 / 8 * params.rtt_ms / 1e3
            )
            if self._queued_bytes <= _DELIVERY_SLACK_BYTES + bdp_bytes:
                return
            self._space.clear()
            await self._space.wait()


async def relay(
    link: LinkState,
    client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
) -> None:
    """Relay until both directions have ended; a reset on either side aborts both."""
    up = Pipe(link, downstream=False, source=client[0], sink=upstream[1])
    down = Pipe(link, downstream=True, source=upstream[0], sink=client[1])
    try:
        async with asyncio.TaskGroup() as group:
            for pipe in (up, down):
                group.create_task(pipe.pump_in())
                group.create_task(pipe.pump_out())
    except* OSError:
        for _, writer in (client, upstream):
            writer.transport.abort()
    finally:
        for _, writer in (client, upstream):
            writer.close()
