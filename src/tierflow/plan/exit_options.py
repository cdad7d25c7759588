"""Early exits as the planner sees them: heads, measured operating points, chosen exits.

Pure data, no torch: ``tierflow train`` measures an exit model on validation data and
writes :class:`ExitOptions` as ``exits.json``; the exit-aware planner weighs its settings;
a :class:`Plan` records the :class:`PlannedExit` it chose, and the build and the runtime
read them from the plan.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tierflow.documents import check_version, read_json_object
from tierflow.errors import ExitError

EXITS_FORMAT_VERSION = 1
FINAL_EXIT = "final"  # the name of the backbone's own classifier in exit rates


@dataclass(frozen=True)
class ExitHead:
    """A side classifier attached to a backbone graph node.

    Attributes
    ----------
    name:
        Unique name, e.g. ``"exit1"`` (never ``"final"``).
    node:
        The backbone graph node whose output the head reads.
    output_bytes:
        Bytes of the head's output (the logits) for one sample.
    host_latency_ms:
        The head's latency for one sample measured on the host; a tier's latency is this
        divided by the tier's ``compute.speed``.
    flops:
        Analytic FLOPs of the head for one sample.
    """

    name: str
    node: str
    output_bytes: float
    host_latency_ms: float
    flops: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "node": self.node,
            "output_bytes": self.output_bytes,
            "host_latency_ms": self.host_latency_ms,
            "flops": self.flops,
        }


@dataclass(frozen=True)
class ExitSetting:
    """One operating point of the exits, measured on validation data.

    Attributes
    ----------
    thresholds:
        ``{exit name: threshold}`` of the active exits; exits not listed are off. A sample
        leaves at the first active exit whose confidence is at least its threshold.
    exit_rates:
        ``{exit name or "final": fraction of all samples answered there}``; sums to 1.
    accuracy:
        Overall accuracy in [0, 1] at this setting.
    """

    thresholds: Mapping[str, float]
    exit_rates: Mapping[str, float]
    accuracy: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "thresholds": dict(self.thresholds),
            "exit_rates": dict(self.exit_rates),
            "accuracy": self.accuracy,
        }


@dataclass(frozen=True)
class ExitOptions:
    """What a trained exit model offers the planner (the ``exits.json`` document).

    Attributes
    ----------
    policy:
        The exit policy the settings were measured with (``"max_softmax"``, ``"entropy"``).
    heads:
        The exit heads in backbone order.
    settings:
        Measured operating points; the planner chooses among them (plus "no early exit").
    final_accuracy:
        Accuracy of the backbone's final classifier alone, in [0, 1].
    """

    policy: str
    heads: tuple[ExitHead, ...]
    settings: tuple[ExitSetting, ...]
    final_accuracy: float

    def __post_init__(self) -> None:
        names = [head.name for head in self.heads]
        if len(set(names)) != len(names) or FINAL_EXIT in names:
            raise ExitError(f"exit names must be unique and not {FINAL_EXIT!r}: {names}")
        for index, setting in enumerate(self.settings):
            unknown = set(setting.thresholds) - set(names)
            if unknown:
                raise ExitError(f"settings.{index}.thresholds: unknown exits {sorted(unknown)}")
            total = sum(setting.exit_rates.values())
            if abs(total - 1.0) > 1e-6:
                raise ExitError(f"settings.{index}.exit_rates sum to {total:.6f}, not 1")
            if not 0.0 <= setting.accuracy <= 1.0:
                raise ExitError(f"settings.{index}.accuracy {setting.accuracy} is not in [0, 1]")

    def head(self, name: str) -> ExitHead:
        for head in self.heads:
            if head.name == name:
                return head
        raise ExitError(f"no exit head {name!r} (heads: {', '.join(h.name for h in self.heads)})")

    def to_dict(self) -> dict[str, Any]:
        return {
            "tierflow_exits_version": EXITS_FORMAT_VERSION,
            "policy": self.policy,
            "final_accuracy": self.final_accuracy,
            "heads": [head.to_dict() for head in self.heads],
            "settings": [setting.to_dict() for setting in self.settings],
        }

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "exits") -> ExitOptions:
        check_version(
            data, "tierflow_exits_version", EXITS_FORMAT_VERSION, source=source, error=ExitError
        )
        try:
            return cls(
                policy=str(data["policy"]),
                final_accuracy=float(data["final_accuracy"]),
                heads=tuple(
                    ExitHead(
                        name=str(h["name"]),
                        node=str(h["node"]),
                        output_bytes=float(h["output_bytes"]),
                        host_latency_ms=float(h["host_latency_ms"]),
                        flops=int(h.get("flops", 0)),
                    )
                    for h in data["heads"]
                ),
                settings=tuple(
                    ExitSetting(
                        thresholds={str(k): float(v) for k, v in s["thresholds"].items()},
                        exit_rates={str(k): float(v) for k, v in s["exit_rates"].items()},
                        accuracy=float(s["accuracy"]),
                    )
                    for s in data["settings"]
                ),
            )
        except KeyError as exc:
            raise ExitError(f"{source}: missing field {exc.args[0]!r}") from None
        except (TypeError, ValueError, AttributeError) as exc:
            raise ExitError(f"{source}: malformed exit options: {exc}") from None

    @classmethod
    def load(cls, path: str | Path) -> ExitOptions:
        return cls.from_dict(
            read_json_object(path, what="exit options", error=ExitError), source=str(path)
        )


@dataclass(frozen=True)
class PlannedExit:
    """An exit the plan keeps active: where it runs and when it answers.

    Attributes
    ----------
    name, node:
        The head and the backbone node it reads (as in :class:`ExitHead`).
    tier:
        The tier that runs the head (the tier of ``node``).
    policy, threshold:
        The tier answers when ``policy``'s confidence is at least ``threshold``.
    exit_rate:
        Fraction of all inputs expected to leave here (validation data).
    """

    name: str
    node: str
    tier: str
    policy: str
    threshold: float
    exit_rate: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "node": self.node,
            "tier": self.tier,
            "policy": self.policy,
            "threshold": self.threshold,
            "exit_rate": self.exit_rate,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PlannedExit:
        return cls(
            name=str(data["name"]),
            node=str(data["node"]),
            tier=str(data["tier"]),
            policy=str(data["policy"]),
            threshold=float(data["threshold"]),
            exit_rate=float(data["exit_rate"]),
        )
