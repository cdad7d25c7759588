"""Objectives the planner minimises, and how they combine into weighted mixes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, get_args

from tierflow.errors import PlanError

Criterion = Literal["latency", "energy", "bytes", "throughput"]
CRITERIA: tuple[Criterion, ...] = get_args(Criterion)

#: Units each criterion is measured in when weights mix them (see docs/concepts.md).
CRITERION_UNITS: Mapping[Criterion, str] = {
    "latency": "ms end to end",
    "energy": "mJ on the first tier",
    "bytes": "MB, per link weighted",
    "throughput": "ms per input at the bottleneck stage",
}


@dataclass(frozen=True)
class Objective:
    """A weighted sum of criteria; a single criterion has weight 1.

    Weights apply to each criterion in its own unit (:data:`CRITERION_UNITS`), so
    ``latency=1,energy=0.5`` trades 1 ms of latency for 2 mJ of device energy.
    Throughput is minimised as its period, the time per input of the slowest pipeline
    stage (compute on a tier, or transfer on a link).
    """

    weights: tuple[tuple[Criterion, float], ...]

    @classmethod
    def parse(cls, spec: str | Objective | Mapping[str, float]) -> Objective:
        """Read ``"latency"``, ``"latency=0.7,energy=0.3"`` or ``{"latency": 1.0}``.

        Examples
        --------
        >>> Objective.parse("latency=1,bytes=0.5").weights
        (('latency', 1.0), ('bytes', 0.5))
        """
        if isinstance(spec, Objective):
            return spec
        pairs: list[tuple[str, float]] = []
        if isinstance(spec, str):
            for part in (p.strip() for p in spec.split(",")):
                if not part:
                    continue
                name, sep, weight_text = part.partition("=")
                try:
                    pairs.append((name.strip(), float(weight_text) if sep else 1.0))
                except ValueError:
                    raise PlanError(
                        f"objective {spec!r}: weight {weight_text!r} is not a number"
                    ) from None
        else:
            pairs = [(str(k), float(v)) for k, v in spec.items()]
        weights: list[tuple[Criterion, float]] = []
        for name, weight in pairs:
            if name not in CRITERIA:
                raise PlanError(
                    f"objective {name!r} is unknown; choose from {', '.join(CRITERIA)} "
                    "or a weighted mix such as 'latency=1,energy=0.5'"
                )
            if not weight >= 0:
                raise PlanError(f"objective weight of {name!r} must be >= 0, got {weight}")
            weights.append((name, weight))
        if not weights or all(w == 0 for _, w in weights):
            raise PlanError(f"objective {spec!r} has no criterion with a positive weight")
        if len({n for n, _ in weights}) != len(weights):
            raise PlanError(f"objective {spec!r} names a criterion twice")
        return cls(tuple(weights))

    def weight(self, criterion: Criterion) -> float:
        return dict(self.weights).get(criterion, 0.0)

    def __str__(self) -> str:
        if len(self.weights) == 1 and self.weights[0][1] == 1.0:
            return self.weights[0][0]
        return ",".join(f"{n}={w:g}" for n, w in self.weights)
