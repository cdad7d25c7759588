"""The tier topology: pydantic models validated from YAML.

A topology is a path of tiers ordered from where data is born (an end device) to the
cloud, with one link between each pair of neighbours.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, model_validator

from tierflow.errors import TopologyError

TierKind = Literal["device", "edge", "cloud"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Compute(_Strict):
    """How fast a tier computes.

    Either ``speed``, relative to the host that produced the profile (``0.1`` is ten times
    slower), or ``profile``, the path of a profile measured on the tier itself.
    """

    speed: PositiveFloat | None = None
    profile: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Compute:
        if (self.speed is None) == (self.profile is None):
            raise ValueError("give exactly one of 'speed' or 'profile'")
        return self


class Power(_Strict):
    """Electrical power of a tier in watts, for the energy objective."""

    active_w: float = Field(ge=0)
    idle_w: float = Field(ge=0)
    transmit_w: float = Field(ge=0)


class Tier(_Strict):
    name: str = Field(min_length=1)
    kind: TierKind
    compute: Compute
    memory_mb: PositiveFloat | None = None
    power: Power | None = None

    @property
    def memory_bytes(self) -> float | None:
        return None if self.memory_mb is None else self.memory_mb * 1024 * 1024


class Link(_Strict):
    """A network link between two neighbouring tiers.

    ``bandwidth_mbps`` is the uplink (towards the cloud); ``downlink_mbps`` defaults to it.
    ``rtt_ms`` is the round-trip time; one way costs half of it. ``weight`` scales the
    link's bytes in the ``bytes`` objective (for example a metered cellular uplink).
    """

    src: str = Field(alias="from", min_length=1)
    dst: str = Field(alias="to", min_length=1)
    bandwidth_mbps: PositiveFloat
    rtt_ms: float = Field(ge=0)
    downlink_mbps: PositiveFloat | None = None
    weight: float = Field(default=1.0, ge=0)

    @property
    def name(self) -> str:
        return f"{self.src}->{self.dst}"

    @property
    def down_mbps(self) -> float:
        return self.bandwidth_mbps if self.downlink_mbps is None else self.downlink_mbps


class Topology(_Strict):
    """Tiers in order from data source to cloud, and the links between neighbours."""

    tiers: tuple[Tier, ...] = Field(min_length=1)
    links: tuple[Link, ...] = ()

    @model_validator(mode="after")
    def _is_a_path(self) -> Topology:
        names = [t.name for t in self.tiers]
        seen: set[str] = set()
        for i, name in enumerate(names):
            if name in seen:
                raise ValueError(f"tiers.{i}.name: duplicate tier name {name!r}")
            seen.add(name)
        if len(self.links) != len(self.tiers) - 1:
            raise ValueError(
                f"links: {len(self.tiers)} tiers need {len(self.tiers) - 1} links "
                f"(one between each pair of neighbours), got {len(self.links)}"
            )
        for i, link in enumerate(self.links):
            expected = (names[i], names[i + 1])
            if (link.src, link.dst) != expected:
                for end, field_name in ((link.src, "from"), (link.dst, "to")):
                    if end not in seen:
                        raise ValueError(f"links.{i}.{field_name}: unknown tier {end!r}")
                raise ValueError(
                    f"links.{i}: expected {expected[0]} -> {expected[1]} (links follow the tier "
                    f"order), got {link.src} -> {link.dst}"
                )
        return self

    @property
    def tier_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tiers)

    def tier(self, name: str) -> Tier:
        for tier in self.tiers:
            if tier.name == name:
                return tier
        raise TopologyError(f"no tier named {name!r}; tiers are {', '.join(self.tier_names)}")

    def tier_index(self, name: str) -> int:
        return self.tier_names.index(self.tier(name).name)

    def __str__(self) -> str:
        parts = [self.tiers[0].name]
        for link, tier in zip(self.links, self.tiers[1:], strict=True):
            parts.append(f"--{link.bandwidth_mbps:g} Mbps/{link.rtt_ms:g} ms--> {tier.name}")
        return " ".join(parts)
