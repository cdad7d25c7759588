"""Where a tier service sends tensors after computing its segment.

A :class:`Route` is plain data so that a testbed (or ``tierflow serve``) can derive it
from a build manifest: the cut tensors leaving this tier, plus any tensors merely relayed
through it, go ``forward`` to the upstream tier; ``outputs`` names the model's final
outputs, which the tier returns to its caller whether it computed them or the upstream did.
``codecs`` optionally compresses forwarded tensors on the link upward (see
:mod:`tierflow.runtime.link_codecs` for the wire format).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tierflow.compress.codecs import codec_from_spec
from tierflow.errors import CodecError, TopologyError


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
    codecs:
        ``{tensor: codec spec}`` (``"int8+zstd"``, ...) for forwarded tensors sent
        compressed; the others travel as raw bytes. Every name must be in ``forward``.

    Examples
    --------
    >>> route = Route(
    ...     "edge",
    ...     forward=("h1",),
    ...     upstream=Upstream("cloud", "10.0.0.2:8001"),
    ...     codecs={"h1": "int8+zstd"},
    ... )
    >>> Route.from_dict(route.to_dict()) == route
    True
    """

    tier: str
    outputs: tuple[str, ...] = ()
    forward: tuple[str, ...] = ()
    upstream: Upstream | None = None
    codecs: Mapping[str, str] = field(default_factory=dict)

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
        # A private copy: the route is frozen, the caller's mapping may not be.
        object.__setattr__(self, "codecs", dict(self.codecs))
        for tensor, spec in self.codecs.items():
            if tensor not in self.forward:
                raise TopologyError(
                    f"route of tier {self.tier!r}: codec {spec!r} for tensor {tensor!r},"
                    f" which the tier does not forward (forward: {list(self.forward)})"
                )
            try:
                codec_from_spec(spec)
            except CodecError as error:
                raise TopologyError(
                    f"route of tier {self.tier!r}: tensor {tensor!r}: {error}"
                ) from error

    def to_dict(self) -> dict[str, Any]:
        upstream = None if self.upstream is None else vars(self.upstream).copy()
        document: dict[str, Any] = {
            "tier": self.tier,
            "outputs": list(self.outputs),
            "forward": list(self.forward),
            "upstream": upstream,
        }
        if self.codecs:  # absent rather than empty: documents without codecs read as before
            document["codecs"] = dict(self.codecs)
        return document

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
                codecs={str(k): str(v) for k, v in document.get("codecs", {}).items()},
            )
        except (KeyError, TypeError, AttributeError) as error:
            raise TopologyError(
                f"route document is malformed: missing or wrong field {error}"
            ) from error
