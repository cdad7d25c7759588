"""`Plan`: which tier runs each layer, what crosses each link, and what it costs.

Plans are frozen, validated data with a versioned JSON form; a plan read from disk
equals the plan that was written.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tierflow.documents import check_version, parse_json_object, read_json_object
from tierflow.errors import PlanError
from tierflow.plan.evaluate import Prediction
from tierflow.plan.exit_options import PlannedExit

PLAN_FORMAT_VERSION = 1


@dataclass(frozen=True)
class Cut:
    """Values that cross one link upward, each once."""

    link: str
    tensors: tuple[str, ...]
    bytes: float

    def to_dict(self) -> dict[str, Any]:
        return {"link": self.link, "tensors": list(self.tensors), "bytes": self.bytes}


@dataclass(frozen=True)
class BaselineResult:
    name: str
    description: str
    prediction: Prediction

    def to_dict(self) -> dict[str, Any]:
        return {"description": self.description, **self.prediction.to_dict()}


@dataclass(frozen=True)
class Plan:
    """A placement of every node of a model on a tier, with its predicted cost.

    Attributes
    ----------
    model:
        The model spec the plan is for.
    objective:
        The objective it minimises, e.g. ``"latency"`` or ``"latency=1,energy=0.5"``.
    tiers:
        Tier names in order, from data source to cloud.
    assignment:
        ``{node: tier}`` for every fine-grained graph node (blocks are expanded).
    cuts:
        Per link, the values that cross it upward and their bytes.
    predicted:
        The plan's predicted cost.
    baselines:
        Baselines under the same cost model (``all-<tier>``, ``neurosurgeon``, ``dads``).
    constraints:
        The constraints the plan satisfies (private input, pins, SLO, tier memory).
    solver:
        How the plan was found (status, solve time, problem size).
    exits:
        Early exits kept active, lowest first (empty for a plan without exits). With
        exits, ``predicted`` is the *expected* cost over inputs (validation exit rates).
    worst_case:
        With exits: the cost of an input that no exit answers; ``None`` without exits.
    accuracy:
        With exits: the expected accuracy in [0, 1] (validation data); else ``None``.
    link_codecs:
        Per sending tier, ``{value: codec spec}`` for the values it compresses on its link
        upward (the shape of the build manifest's ``link_codecs``); empty: all raw.
    codec_accuracy_drop_pp:
        With codecs planned: the predicted accuracy drop of the chosen codecs, in
        percentage points (summed, docs/concepts.md); else ``None``.
    tier_variants:
        ``{tier: variant}`` for each tier that runs its segments compressed (e.g.
        ``"int8-static"``, built by :func:`tierflow.build`); tiers not listed run fp32.
    compression_drop_pp:
        With variants planned (:func:`~tierflow.plan.variant_planner.plan_compressed`): the
        predicted accuracy drop of the chosen variants and codecs together, in
        percentage points; else ``None``.
    """

    model: str
    objective: str
    tiers: tuple[str, ...]
    assignment: Mapping[str, str]
    cuts: tuple[Cut, ...]
    predicted: Prediction
    baselines: Mapping[str, BaselineResult]
    granularity: str = "node"
    tracer: str = "fx"
    constraints: Mapping[str, Any] = field(default_factory=dict)
    solver: Mapping[str, Any] = field(default_factory=dict)
    exits: tuple[PlannedExit, ...] = ()
    worst_case: Prediction | None = None
    accuracy: float | None = None
    link_codecs: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    codec_accuracy_drop_pp: float | None = None
    tier_variants: Mapping[str, str] = field(default_factory=dict)
    compression_drop_pp: float | None = None

    def __post_init__(self) -> None:
        if not self.tiers:
            raise PlanError("plan has no tiers")
        for node, tier in self.assignment.items():
            if tier not in self.tiers:
                raise PlanError(f"plan assigns node {node!r} to unknown tier {tier!r}")
        links = {f"{a}->{b}" for a, b in zip(self.tiers, self.tiers[1:], strict=False)}
        for cut in self.cuts:
            if cut.link not in links:
                raise PlanError(f"plan cut names unknown link {cut.link!r}")
        for index, planned in enumerate(self.exits):
            if planned.tier not in self.tiers:
                raise PlanError(f"plan exits.{index}: unknown tier {planned.tier!r}")
            if self.assignment and self.assignment.get(planned.node) != planned.tier:
                raise PlanError(
                    f"plan exits.{index}: exit {planned.name!r} reads node {planned.node!r},"
                    f" which runs on {self.assignment.get(planned.node)!r}, not {planned.tier!r}"
                )
        for tier in self.link_codecs:
            if tier not in self.tiers[:-1]:
                raise PlanError(f"plan link_codecs.{tier}: not a tier with a link upward")
        for tier in self.tier_variants:
            if tier not in self.tiers:
                raise PlanError(f"plan tier_variants.{tier}: unknown tier")

    def segments(self) -> dict[str, list[str]]:
        """Nodes per tier, in tier order (tiers without nodes are omitted)."""
        result: dict[str, list[str]] = {}
        for tier in self.tiers:
            nodes = [n for n, t in self.assignment.items() if t == tier]
            if nodes:
                result[tier] = nodes
        return result

    def feasible_baselines(self) -> dict[str, BaselineResult]:
        return {k: b for k, b in self.baselines.items() if b.prediction.feasible}

    # -- serialisation ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "tierflow_plan_version": PLAN_FORMAT_VERSION,
            "model": self.model,
            "objective": self.objective,
            "tiers": list(self.tiers),
            "granularity": self.granularity,
            "tracer": self.tracer,
            "assignment": dict(self.assignment),
            "cuts": [cut.to_dict() for cut in self.cuts],
            "predicted": self.predicted.to_dict(),
            "baselines": {name: b.to_dict() for name, b in self.baselines.items()},
            "constraints": dict(self.constraints),
            "solver": dict(self.solver),
            "exits": [planned.to_dict() for planned in self.exits],
            "worst_case": None if self.worst_case is None else self.worst_case.to_dict(),
            "accuracy": self.accuracy,
        }
        # Optional and additive: a plan without codecs serialises exactly as before.
        if self.link_codecs:
            document["link_codecs"] = {t: dict(c) for t, c in self.link_codecs.items()}
        if self.codec_accuracy_drop_pp is not None:
            document["codec_accuracy_drop_pp"] = self.codec_accuracy_drop_pp
        if self.tier_variants:
            document["tier_variants"] = dict(self.tier_variants)
        if self.compression_drop_pp is not None:
            document["compression_drop_pp"] = self.compression_drop_pp
        return document

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "plan") -> Plan:
        check_version(
            data, "tierflow_plan_version", PLAN_FORMAT_VERSION, source=source, error=PlanError
        )
        try:
            return cls(
                model=str(data["model"]),
                objective=str(data["objective"]),
                tiers=tuple(str(t) for t in data["tiers"]),
                assignment={str(k): str(v) for k, v in data["assignment"].items()},
                cuts=tuple(
                    Cut(str(c["link"]), tuple(str(t) for t in c["tensors"]), float(c["bytes"]))
                    for c in data["cuts"]
                ),
                predicted=Prediction.from_dict(data["predicted"]),
                baselines={
                    str(name): BaselineResult(
                        str(name), str(b.get("description", "")), Prediction.from_dict(b)
                    )
                    for name, b in data["baselines"].items()
                },
                granularity=str(data.get("granularity", "node")),
                tracer=str(data.get("tracer", "fx")),
                constraints=dict(data.get("constraints", {})),
                solver=dict(data.get("solver", {})),
                exits=tuple(PlannedExit.from_dict(e) for e in data.get("exits", ())),
                worst_case=(
                    None
                    if data.get("worst_case") is None
                    else Prediction.from_dict(data["worst_case"])
                ),
                accuracy=None if data.get("accuracy") is None else float(data["accuracy"]),
                link_codecs={
                    str(tier): {str(value): str(spec) for value, spec in codecs.items()}
                    for tier, codecs in data.get("link_codecs", {}).items()
                },
                codec_accuracy_drop_pp=(
                    None
                    if data.get("codec_accuracy_drop_pp") is None
                    else float(data["codec_accuracy_drop_pp"])
                ),
                tier_variants={
                    str(tier): str(name) for tier, name in data.get("tier_variants", {}).items()
                },
                compression_drop_pp=(
                    None
                    if data.get("compression_drop_pp") is None
                    else float(data["compression_drop_pp"])
                ),
            )
        except KeyError as exc:
            raise PlanError(f"{source}: missing field {exc.args[0]!r}") from None
        except (TypeError, ValueError, AttributeError) as exc:
            raise PlanError(f"{source}: malformed plan: {exc}") from None

    @classmethod
    def from_json(cls, text: str, *, source: str = "plan") -> Plan:
        return cls.from_dict(parse_json_object(text, source=source, error=PlanError), source=source)

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        data = read_json_object(path, what="plan", error=PlanError)
        return cls.from_dict(data, source=str(path))

    # -- display ------------------------------------------------------------------------
    def __str__(self) -> str:
        lines = [f"plan for {self.model} · objective {self.objective}"]
        segments = self.segments()
        for tier in self.tiers:
            nodes = segments.get(tier, [])
            compute = self.predicted.compute_ms.get(tier, 0.0)
            lines.append(f"  {tier:<14} {len(nodes):>5} nodes  {compute:>10.2f} ms compute")
        for cut in self.cuts:
            shown = ", ".join(cut.tensors[:3]) + (" …" if len(cut.tensors) > 3 else "")
            lines.append(f"  {cut.link:<14} {cut.bytes / 1e3:>10.1f} kB up   [{shown}]")
        for planned in self.exits:
            lines.append(
                f"  exit {planned.name:<9} at {planned.node} on {planned.tier}: "
                f"{planned.policy} >= {planned.threshold:g}, answers {planned.exit_rate:.1%}"
            )
        if self.accuracy is not None:
            lines.append(f"  accuracy       {self.accuracy:.2%}")
        for tier, codecs in self.link_codecs.items():
            shown = ", ".join(f"{value}: {spec}" for value, spec in codecs.items())
            lines.append(f"  codecs from {tier}: {shown}")
        if self.codec_accuracy_drop_pp is not None:
            lines.append(f"  codec accuracy drop {self.codec_accuracy_drop_pp:.2f} pp")
        for tier, name in self.tier_variants.items():
            lines.append(f"  {tier:<14} runs {name}")
        if self.compression_drop_pp is not None:
            lines.append(f"  accuracy drop  {self.compression_drop_pp:.2f} pp (variants + codecs)")
        if self.worst_case is None:
            lines.append(_row("plan", self.predicted))
        else:  # with exits, costs are expectations over inputs
            lines.append(_row("plan expected", self.predicted))
            lines.append(_row("worst case", self.worst_case))
        for name, baseline in self.baselines.items():
            lines.append(_row(name, baseline.prediction))
        return "\n".join(lines)


def _row(name: str, p: Prediction) -> str:
    energy = "-" if p.energy_mj is None else f"{p.energy_mj:.1f} mJ"
    flag = "" if p.feasible else "  (infeasible)"
    total_kb = sum(p.bytes_per_link.values()) / 1e3
    return (
        f"  {name:<14} {p.latency_ms:>10.2f} ms  {energy:>12}  {total_kb:>10.1f} kB  "
        f"{p.throughput_rps:>8.1f} rps{flag}"
    )
