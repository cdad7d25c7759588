"""`Profile`: measured per-node latency of one model on one machine (or tier)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tierflow.documents import check_version, read_json_object
from tierflow.errors import ProfileError

if TYPE_CHECKING:
    from tierflow.graph.layer_graph import LayerGraph

PROFILE_FORMAT_VERSION = 1


@dataclass(frozen=True)
class Profile:
    """Per-node latency of a model measured on one machine.

    Attributes
    ----------
    model:
        The model spec the profile was measured for.
    machine:
        Where it was measured: a host name, or a tier name for a tier's own profile.
    threads:
        The intra-op thread count fixed during measurement.
    runs:
        Timed runs per node (after warm-up); each node's latency is their median.
    node_ms:
        Median latency of each fine-grained graph node, in milliseconds.
    whole_ms:
        Median latency of the whole model run end to end, in milliseconds.
    """

    model: str
    machine: str
    threads: int
    runs: int
    node_ms: Mapping[str, float]
    whole_ms: float
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def sum_ms(self) -> float:
        """Sum of the per-node medians."""
        return sum(self.node_ms.values())

    @property
    def sum_over_whole(self) -> float:
        """How well per-node times add up to the whole model; ideally 1.0."""
        return self.sum_ms / self.whole_ms if self.whole_ms > 0 else float("nan")

    def check_matches(self, graph: LayerGraph, *, source: str | None = None) -> None:
        """Raise unless this profile was measured for ``graph``'s model and covers its nodes.

        Parameters
        ----------
        graph:
            The graph the profile is about to be used with; for a block graph every
            member of every block must be present.
        source:
            How to name the profile in errors (its file); defaults to its machine.

        Raises
        ------
        ProfileError
            Naming the profile and the first missing node.
        """
        where = source or f"profile from machine {self.machine!r}"
        if self.model != graph.model:
            raise ProfileError(
                f"{where} was measured for model {self.model!r}, not {graph.model!r}"
            )
        missing = [
            m for node in graph for m in (node.members or (node.name,)) if m not in self.node_ms
        ]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise ProfileError(
                f"{where} has no latency for node {missing[0]!r}{more} of {graph.model}; "
                "re-profile the model with this tierflow version"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "tierflow_profile_version": PROFILE_FORMAT_VERSION,
            "model": self.model,
            "machine": self.machine,
            "threads": self.threads,
            "runs": self.runs,
            "whole_ms": self.whole_ms,
            "sum_ms": self.sum_ms,
            "sum_over_whole": self.sum_over_whole,
            "node_ms": dict(self.node_ms),
            "meta": dict(self.meta),
        }

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "profile") -> Profile:
        check_version(
            data,
            "tierflow_profile_version",
            PROFILE_FORMAT_VERSION,
            source=source,
            error=ProfileError,
        )
        try:
            node_ms = {str(k): float(v) for k, v in data["node_ms"].items()}
            for name, ms in node_ms.items():
                if not ms >= 0:
                    raise ProfileError(f"{source}: node_ms.{name} is {ms}; must be >= 0")
            return cls(
                model=str(data["model"]),
                machine=str(data["machine"]),
                threads=int(data["threads"]),
                runs=int(data["runs"]),
                node_ms=node_ms,
                whole_ms=float(data["whole_ms"]),
                meta=dict(data.get("meta", {})),
            )
        except KeyError as exc:
            raise ProfileError(f"{source}: missing field {exc.args[0]!r}") from None
        except (TypeError, ValueError, AttributeError) as exc:
            raise ProfileError(f"{source}: malformed profile: {exc}") from None

    @classmethod
    def load(cls, path: str | Path) -> Profile:
        data = read_json_object(path, what="profile", error=ProfileError)
        return cls.from_dict(data, source=str(path))
