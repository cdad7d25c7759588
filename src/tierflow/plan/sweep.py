"""Planning across a range of one topology parameter (bandwidth, RTT, speed …)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tierflow.errors import TopologyError
from tierflow.plan.plan import Plan
from tierflow.topology.load import apply_overrides, topology_from_dict
from tierflow.topology.schema import Topology


@dataclass(frozen=True)
class SweepSpec:
    """``path=v1,v2,…``: the topology field to vary and its values."""

    path: str
    values: tuple[float, ...]

    @classmethod
    def parse(cls, text: str) -> SweepSpec:
        """Read ``"links.1.bandwidth_mbps=0.5,1,2,5"``.

        Examples
        --------
        >>> SweepSpec.parse("links.0.rtt_ms=5,50").values
        (5.0, 50.0)
        """
        path, sep, values_text = text.partition("=")
        if not sep or not path.strip():
            raise TopologyError(
                f"sweep {text!r}: expected PATH=V1,V2,… such as links.0.rtt_ms=5,50"
            )
        try:
            values = tuple(float(v) for v in values_text.split(",") if v.strip())
        except ValueError:
            raise TopologyError(f"sweep {text!r}: values must be numbers") from None
        if not values:
            raise TopologyError(f"sweep {text!r}: no values given")
        return cls(path.strip(), values)


@dataclass(frozen=True)
class SweepPoint:
    value: float
    plan: Plan


def sweep(
    raw_topology: Mapping[str, Any],
    spec: SweepSpec,
    plan_for: Callable[[Topology], Plan],
) -> list[SweepPoint]:
    """Plan once per value of ``spec``, each on the topology with that value set.

    ``plan_for`` is the planning step (usually ``functools.partial(tierflow.plan, graph,
    profile=…)`` with the topology left open), so a sweep costs one solve per point and
    never re-profiles.
    """
    points = []
    for value in spec.values:
        raw = apply_overrides(raw_topology, [f"{spec.path}={value!r}"])
        topology = topology_from_dict(raw, source=f"sweep {spec.path}={value:g}")
        points.append(SweepPoint(value, plan_for(topology)))
    return points


def sweep_to_dict(spec: SweepSpec, points: Sequence[SweepPoint]) -> dict[str, Any]:
    return {
        "sweep": {
            "path": spec.path,
            "points": [{"value": p.value, "plan": p.plan.to_dict()} for p in points],
        }
    }
