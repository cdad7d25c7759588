"""Where a tier service sends tensors after computing its segment.

A :class:`Route` is plain data so that a testbed (or ``tierflow serve``) can derive it
from a build manifest: the cut tensors leaving this tier, plus any tensors merely relayed
through it, go ``forward`` to the upstream tier; ``outputs`` names the model's final
outputs, which the tier returns to its caller whether it computed them or the upstream did.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tierflow.errors import TopologyError


@dataclass(frozen=True)
class Upstream:
    """The next tier towards the cloud: its name (for traces and errors) and address."""

    tier: str
    address: str


@dataclass(frozen=True)
class Route:
    """Routing of one tier.

    Parameters
    ----------
    tier:
        This tier's name, e.g. ``"edge"``.
    outputs:
        Names of the final model outputs returned to the caller; empty means "whatever
        the last executor (or the upstream) returns".
    forward:
        Names of tensors sent upstream: cut tensors computed here and tensors relayed from
        the caller. Must be empty without an upstream, non-empty with one.
    upstream:
        The next tier, or ``None`` for the last tier of the path.

    Examples
    --------
    >>> route = Route("edge", forward=("h1",), upstream=Upstream("cloud", "10.0.0.2:8001"))
    >>> Route.from_dict(route.to_dict()) == route
    True
    """

    tier: str
    outputs: tuple[str, ...] = ()
    forward: tuple[str, ...] = ()
    upstream: Upstream | None = None

    def __post_init__(self) -> None:
        if not self.tier:
            raise TopologyError("route: tier name is empty")
        if self.upstream is None and self.forward:
            raise TopologyError(
                f"route of tier {self.tier!r}: forward {self.forward} without an upstream"
            )
        if self.upstream is not None and not self.forward:
            raise TopologyError(
                f"route of tier {self.tier!r}: upstream {self.upstream.tier!r},"
                " but nothing to forward"
            )

    def to_dict(self) -> dict[str, Any]:
        upstream = None if self.upstream is None else vars(self.upstream).copy()
        return {
            "tier": self.tier,
            "outputs": list(self.outputs),
            "forward": list(self.forward),
            "upstream": upstream,
        }

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> Route:
        try:
            raw = document.get("upstream")
            upstream = None if raw is None else Upstream(str(raw["tier"]), str(raw["address"]))
            return cls(
                tier=str(document["tier"]),
                outputs=tuple(str(name) for name in document.get("outputs", ())),
                forward=tuple(str(name) for name in document.get("forward", ())),
                upstream=upstream,
            )
        except (KeyError, TypeError) as error:
            raise TopologyError(
                f"route document is malformed: missing or wrong field {error}"
            ) from error
