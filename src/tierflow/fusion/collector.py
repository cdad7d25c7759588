"""Gathering the devices' arrivals of one fusion id until all came or the wait ran out.

Note [Gathering by fusion id]
-----------------------------
Each device's request is a gRPC call blocked in its own server thread. The first arrival
of a fusion id opens a gathering and starts its clock; each later arrival joins it. A
gathering closes when all ``V`` devices arrived or ``wait_s`` passed since the first
arrival; the thread that finds it closable becomes its *leader*, fuses the arrivals
(outside the lock: fusing may call the cloud) and publishes the outcome; every other
thread of that fusion id waits for the outcome and answers its device with it. An arrival
after closing (a late device) gets the same outcome, in which it is listed missing.
Finished gatherings are kept ``retain_s`` so late arrivals still find them, then dropped.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np
from numpy.typing import NDArray

from tierflow.errors import ServiceError

Outcome = TypeVar("Outcome")


@dataclass(frozen=True)
class Arrival:
    """One device's tensor for a fusion id, and the bytes its message took."""

    device: int
    tensor: NDArray[np.generic]
    payload_bytes: int
    wire_bytes: int


@dataclass
class _Gathering(Generic[Outcome]):
    opened_s: float
    arrivals: dict[int, Arrival] = field(default_factory=dict)
    closed: bool = False
    closed_s: float = 0.0
    outcome: Outcome | None = None
    error: ServiceError | None = None


class Collector(Generic[Outcome]):
    """Gathers arrivals per fusion id for ``views`` devices (Note [Gathering by fusion id]).

    Parameters
    ----------
    tier:
        The gathering tier's name, for error messages.
    views:
        Devices expected per fusion id.
    wait_s:
        How long after the first arrival to wait for the others.
    retain_s:
        How long a finished gathering is kept for late arrivals.
    """

    def __init__(self, tier: str, *, views: int, wait_s: float, retain_s: float = 30.0) -> None:
        if wait_s < 0:
            raise ValueError(f"wait_s must be >= 0, got {wait_s}")
        self.tier, self.views, self.wait_s, self.retain_s = tier, views, wait_s, retain_s
        self._gatherings: dict[str, _Gathering[Outcome]] = {}
        self._cond = threading.Condition()

    def submit(
        self,
        fusion_id: str,
        arrival: Arrival,
        fuse: Callable[[dict[int, Arrival], float], Outcome],
    ) -> Outcome:
        """Add ``arrival`` to ``fusion_id``'s gathering; return the fused outcome.

        ``fuse(arrivals, waited_s)`` runs once per fusion id, in the leader's thread.
        """
        with self._cond:
            self._forget_old(time.monotonic())
            gathering = self._gatherings.get(fusion_id)
            if gathering is None:
                gathering = _Gathering(opened_s=time.monotonic())
                self._gatherings[fusion_id] = gathering
            if not gathering.closed:
                self._join(gathering, fusion_id, arrival)
            leader = False
            while not gathering.closed:
                left_s = gathering.opened_s + self.wait_s - time.monotonic()
                if len(gathering.arrivals) == self.views or left_s <= 0:
                    gathering.closed, gathering.closed_s, leader = True, time.monotonic(), True
                    break
                self._cond.wait(left_s)
            if not leader:
                while gathering.outcome is None and gathering.error is None:
                    self._cond.wait()
                if gathering.error is not None:
                    raise gathering.error
                assert gathering.outcome is not None
                return gathering.outcome
            arrivals = dict(gathering.arrivals)
            waited_s = gathering.closed_s - gathering.opened_s
        try:
            outcome = fuse(arrivals, waited_s)
        except ServiceError as error:
            self._publish(gathering, None, error)
            raise
        except Exception as error:
            failure = ServiceError(
                "INTERNAL", f"tier {self.tier!r}: fusing {fusion_id!r} failed: {error}"
            )
            self._publish(gathering, None, failure)
            raise failure from error
        self._publish(gathering, outcome, None)
        return outcome

    def _join(self, gathering: _Gathering[Outcome], fusion_id: str, arrival: Arrival) -> None:
        if arrival.device in gathering.arrivals:
            raise ServiceError(
                "ALREADY_EXISTS",
                f"tier {self.tier!r}: device {arrival.device} already sent fusion id {fusion_id!r}",
            )
        other = next(iter(gathering.arrivals.values()), None)
        if other is not None and other.tensor.shape[0] != arrival.tensor.shape[0]:
            raise ServiceError(
                "INVALID_ARGUMENT",
                f"tier {self.tier!r}: device {arrival.device} sent a batch of"
                f" {arrival.tensor.shape[0]} for fusion id {fusion_id!r}, device"
                f" {other.device} sent {other.tensor.shape[0]}",
            )
        gathering.arrivals[arrival.device] = arrival
        if len(gathering.arrivals) == self.views:
            self._cond.notify_all()

    def _publish(
        self, gathering: _Gathering[Outcome], outcome: Outcome | None, error: ServiceError | None
    ) -> None:
        with self._cond:
            gathering.outcome, gathering.error = outcome, error
            gathering.closed_s = time.monotonic()
            self._cond.notify_all()

    def _forget_old(self, now_s: float) -> None:
        done = [
            key
            for key, g in self._gatherings.items()
            if (g.outcome is not None or g.error is not None) and now_s - g.closed_s > self.retain_s
        ]
        for key in done:
            del self._gatherings[key]
