"""Per-request traces: where time and bytes went on the way device → edge → cloud.

Each tier service appends its own :class:`TierHop` and, when it forwarded upstream, the
:class:`LinkHop` it measured; the trace rides back to the caller as one compact JSON
string parameter (``tierflow-trace``) of the ModelInferResponse: metadata, not tensors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from tierflow.errors import WireError

TRACE_PARAMETER = "tierflow-trace"
# The exit a trace names when the backbone answered (tierflow.plan.exit_options.FINAL_EXIT).
FINAL = "final"


@dataclass(frozen=True)
class TierHop:
    """Time one tier spent on a request, in milliseconds.

    ``queue_ms`` waits for the tier's executors (one request computes at a time),
    ``compute_ms`` runs them, ``service_ms`` is the whole time inside the tier, forwarding
    upstream included.
    """

    tier: str
    compute_ms: float
    queue_ms: float
    service_ms: float


@dataclass(frozen=True)
class LinkHop:
    """One forwarding hop between tiers, measured by the sending tier.

    ``transfer_ms`` is the round trip minus the time the receiving tier reported for
    itself: serialisation, network and protocol overhead in both directions (encoding
    and decoding compressed tensors are not in it). ``request_bytes`` counts what was
    sent, after compression; ``codecs`` names the codec of each tensor sent compressed
    (empty when all travelled raw).
    """

    source: str
    target: str
    request_bytes: int
    response_bytes: int
    transfer_ms: float
    codecs: dict[str, str] = field(default_factory=dict)

    def to_document(self) -> dict[str, Any]:
        # vars() rather than asdict(): see Trace.to_json. Without codecs the field is left
        # out, so such traces read the same as those of tierflow versions before codecs.
        document = vars(self).copy()
        if not self.codecs:
            del document["codecs"]
        return document

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> LinkHop:
        return cls(
            source=str(document["source"]),
            target=str(document["target"]),
            request_bytes=int(document["request_bytes"]),
            response_bytes=int(document["response_bytes"]),
            transfer_ms=float(document["transfer_ms"]),
            codecs={str(k): str(v) for k, v in document.get("codecs", {}).items()},
        )


@dataclass(frozen=True)
class Trace:
    """The tiers a request crossed (device first) and which one produced the outputs.

    ``exit`` names the early exit that answered, or ``"final"`` when the backbone's own
    output did; ``produced_by`` is the tier that ran it. Traces from tierflow versions
    without exits carry no ``exit`` and read as ``"final"``.
    """

    produced_by: str
    tiers: tuple[TierHop, ...] = field(default_factory=tuple)
    links: tuple[LinkHop, ...] = field(default_factory=tuple)
    exit: str = FINAL

    @property
    def tier_names(self) -> tuple[str, ...]:
        return tuple(hop.tier for hop in self.tiers)

    def to_json(self) -> str:
        document = {
            "produced_by": self.produced_by,
            # vars() rather than asdict(): the hops hold only scalars, and asdict's deep
            # copy was a tenth of a small request's time in a tier (profiled).
            "tiers": [vars(hop) for hop in self.tiers],
            "links": [hop.to_document() for hop in self.links],
            "exit": self.exit,
        }
        return json.dumps(document, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Trace:
        try:
            document: dict[str, Any] = json.loads(text)
            return cls(
                produced_by=str(document["produced_by"]),
                tiers=tuple(TierHop(**hop) for hop in document["tiers"]),
                links=tuple(LinkHop.from_document(hop) for hop in document["links"]),
                exit=str(document.get("exit", FINAL)),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise WireError(f"parameter {TRACE_PARAMETER!r} is malformed: {error}") from error

    def __str__(self) -> str:
        parts = [
            f"{hop.tier} {hop.compute_ms:.2f} ms compute, {hop.queue_ms:.2f} ms queue"
            for hop in self.tiers
        ]
        parts += [
            f"{hop.source}→{hop.target} {hop.request_bytes}+{hop.response_bytes} B"
            f"{_codecs_note(hop)} {hop.transfer_ms:.2f} ms"
            for hop in self.links
        ]
        answered = "" if self.exit == FINAL else f" at exit {self.exit}"
        return f"produced by {self.produced_by}{answered}: " + "; ".join(parts)


def _codecs_note(hop: LinkHop) -> str:
    if not hop.codecs:
        return ""
    return " (" + ", ".join(f"{name} {spec}" for name, spec in hop.codecs.items()) + ")"
