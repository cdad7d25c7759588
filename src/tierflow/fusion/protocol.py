"""The fusion protocol's names on the wire and the trace every answer carries.

Note [Fusion protocol]
----------------------
All calls are Open Inference Protocol ``ModelInfer`` requests, tensors as raw bytes.

* client → device ``i``: tensor ``view`` (float32 ``[B, 1, 14, 14]``), string parameter
  ``tierflow-fusion-id`` (shared by the ``V`` calls of one fused inference).
* device ``i`` → edge: tensor ``features`` (uint8 ``[B, D]``; the raw ``view`` in raw
  offload), parameters ``tierflow-fusion-id`` and ``tierflow-fusion-device`` = ``i``.
* The edge gathers arrivals per fusion id until all ``V`` devices arrived or ``wait_ms``
  passed since the first one, fuses what arrived, exits the samples whose confidence
  reaches the threshold and sends the others' uint8 ``edge_features`` to the cloud (same
  fusion id). Every device call is answered with the same ``logits`` ``[B, C]`` and the
  same :class:`FusionTrace` in the string parameter ``tierflow-fusion-trace``.

Bytes are counted where a message is received or sent: ``payload_bytes`` is the tensor
bytes, ``wire_bytes`` the whole encoded ModelInfer message (header, names, parameters;
gRPC/HTTP2 framing excluded).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from tierflow.errors import WireError

FUSION_ID = "tierflow-fusion-id"
FUSION_DEVICE = "tierflow-fusion-device"
FUSION_TRACE = "tierflow-fusion-trace"


@dataclass(frozen=True)
class LinkBytes:
    """Bytes that went up one link for one fused inference."""

    source: str
    target: str
    payload_bytes: int
    wire_bytes: int


@dataclass(frozen=True)
class FusionTrace:
    """What happened to one fused inference.

    ``fused`` lists the device indices whose features were fused, ``missing`` the others
    (down, slow or late); ``exits`` names, per sample, the tier whose logits were returned
    (``"edge"`` or ``"cloud"``); ``wait_ms`` is the time from the first arrival to fusing.
    """

    fusion_id: str
    fused: tuple[int, ...]
    missing: tuple[int, ...]
    exits: tuple[str, ...]
    links: tuple[LinkBytes, ...] = field(default_factory=tuple)
    wait_ms: float = 0.0

    @property
    def edge_exits(self) -> int:
        return sum(1 for tier in self.exits if tier == "edge")

    def upward_bytes(self) -> tuple[int, int]:
        """(payload, wire) bytes sent up every link together."""
        return (
            sum(link.payload_bytes for link in self.links),
            sum(link.wire_bytes for link in self.links),
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> FusionTrace:
        try:
            document: dict[str, Any] = json.loads(text)
            return cls(
                fusion_id=str(document["fusion_id"]),
                fused=tuple(int(i) for i in document["fused"]),
                missing=tuple(int(i) for i in document["missing"]),
                exits=tuple(str(tier) for tier in document["exits"]),
                links=tuple(LinkBytes(**link) for link in document["links"]),
                wait_ms=float(document["wait_ms"]),
            )
        except (ValueError, KeyError, TypeError) as error:
            raise WireError(f"parameter {FUSION_TRACE!r} is malformed: {error}") from error

    def __str__(self) -> str:
        payload, wire = self.upward_bytes()
        return (
            f"fusion {self.fusion_id}: fused {list(self.fused)}, missing {list(self.missing)},"
            f" {self.edge_exits}/{len(self.exits)} edge exits, {payload} B payload"
            f" ({wire} B on the wire) upward"
        )
