"""Link parameters and the timing model of one emulated link direction (pure, no I/O).

Note [link timing model]
------------------------
A direction of a link is one FIFO transmitter shared by every connection through it. A
chunk of ``n`` payload bytes starts transmitting when the transmitter is free (or now,
if it is idle), occupies it for ``n * 8 / bandwidth`` seconds (serialisation), and is
released to the receiver one propagation delay (``rtt_ms / 2``) after its last bit left,
plus an optional jitter drawn per chunk from a normal distribution with standard
deviation ``jitter_ms``. Propagation is pipelined: the next chunk starts transmitting as
soon as the previous one has been serialised, so the delay never lowers throughput.

Jitter never reorders bytes of one connection direction: a chunk is released no earlier
than the chunk before it on the same connection (a late chunk holds back the ones behind
it, as TCP's in-order delivery would). Different connections may overtake each other.
Jitter is applied on top of the one-way delay and clamped so that no chunk arrives before
its serialisation has finished; with ``jitter_ms`` well below ``rtt_ms / 2`` the mean
delay stays ``rtt_ms / 2``.

Bandwidth counts payload bytes only (TCP/IP headers are not emulated), and connection
set-up costs no round trip: the client's connect completes at once and its first bytes
pay the one-way delay like any other.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, replace
from typing import Any

from tierflow.errors import TestbedError
from tierflow.topology.schema import Link

# Chunks are cut to about this much link time so that concurrent connections interleave
# finely (like packets) and a bandwidth change takes effect within a few milliseconds.
_CHUNK_TIME_S = 0.005
_MIN_CHUNK_BYTES = 1460  # one Ethernet MSS
_MAX_CHUNK_BYTES = 64 * 1024


@dataclass(frozen=True)
class LinkParams:
    """What an emulated link imposes; every field can change while the link runs.

    Parameters
    ----------
    bandwidth_mbps
        Uplink rate (client towards upstream), megabits per second of payload.
    rtt_ms
        Round-trip propagation delay; each direction adds half of it.
    downlink_mbps
        Rate from upstream back to the client; ``None`` means the same as the uplink.
    jitter_ms
        Standard deviation of a random extra one-way delay per chunk (see the note).
    up
        ``False`` is an outage: no byte is transmitted and no new upstream connection
        is opened until the link is up again (connections stall; they are not reset).
    """

    bandwidth_mbps: float
    rtt_ms: float = 0.0
    downlink_mbps: float | None = None
    jitter_ms: float = 0.0
    up: bool = True

    def __post_init__(self) -> None:
        for name in ("bandwidth_mbps", "downlink_mbps"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise TestbedError(f"link {name} must be > 0, got {value!r}")
        for name in ("rtt_ms", "jitter_ms"):
            value = getattr(self, name)
            if not value >= 0:
                raise TestbedError(f"link {name} must be >= 0, got {value!r}")

    @classmethod
    def from_link(cls, link: Link) -> LinkParams:
        """The parameters of a topology link (``bandwidth_mbps``, ``rtt_ms``, downlink)."""
        return cls(
            bandwidth_mbps=link.bandwidth_mbps,
            rtt_ms=link.rtt_ms,
            downlink_mbps=link.downlink_mbps,
        )

    def updated(self, **changes: Any) -> LinkParams:
        """A copy with ``changes`` applied; unknown names raise :class:`TestbedError`."""
        unknown = set(changes) - set(asdict(self))
        if unknown:
            raise TestbedError(
                f"unknown link parameter(s) {', '.join(sorted(unknown))}; "
                f"known: {', '.join(asdict(self))}"
            )
        return replace(self, **changes)

    def rate_mbps(self, *, downstream: bool) -> float:
        if downstream and self.downlink_mbps is not None:
            return self.downlink_mbps
        return self.bandwidth_mbps

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def chunk_bytes(rate_mbps: float) -> int:
    """How many bytes to read at once: about :data:`_CHUNK_TIME_S` of link time."""
    n = int(rate_mbps * 1e6 / 8 * _CHUNK_TIME_S)
    return max(_MIN_CHUNK_BYTES, min(_MAX_CHUNK_BYTES, n))


class Transmitter:
    """The FIFO transmitter of one link direction (shared by all its connections).

    Times are seconds on any monotonic clock; the caller passes ``now``.
    """

    def __init__(self, *, rng: random.Random | None = None) -> None:
        self.free_at = 0.0
        self._rng = rng or random.Random()

    def backlog_s(self, now: float) -> float:
        """Seconds of already scheduled serialisation still ahead of ``now``."""
        return max(0.0, self.free_at - now)

    def send(self, now: float, size_bytes: int, params: LinkParams, *, downstream: bool) -> float:
        """Schedule ``size_bytes`` and return when they reach the receiver.

        The caller keeps per-connection order by taking the maximum with the release
        time of the connection's previous chunk.
        """
        start = max(now, self.free_at)
        self.free_at = start + size_bytes * 8 / (params.rate_mbps(downstream=downstream) * 1e6)
        delay_s = params.rtt_ms / 2e3
        if params.jitter_ms > 0:
            delay_s = max(0.0, delay_s + self._rng.gauss(0.0, params.jitter_ms / 1e3))
        return self.free_at + delay_s
