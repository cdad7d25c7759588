"""Activation codecs as the planner sees them: measured (value, codec) candidates.

Pure data, no torch: a measuring step compresses candidate values of a model with codecs
(:mod:`tierflow.compress.codecs`) and records, per (value, codec), how much it shrinks
the bytes, what it costs to encode and decode on the host, and how much accuracy it
costs on validation data. :func:`tierflow.plan.variant_planner.plan_with_codecs` weighs
them (docs/concepts.md, "Activation codecs in the cost model").
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tierflow.documents import check_version, parse_entries, read_json_object
from tierflow.errors import CodecError

CODECS_FORMAT_VERSION = 1
RAW = "raw"  # the implicit choice: the value travels uncompressed


@dataclass(frozen=True)
class CodecCandidate:
    """One codec measured on one value (a graph node's output).

    Attributes
    ----------
    node:
        The graph node whose output value the codec compresses.
    codec:
        The codec spec, e.g. ``"int8+zstd"`` (never ``"raw"``).
    ratio:
        Compressed bytes / the value's bytes (fp32), measured; below 1 shrinks.
    encode_ms, decode_ms:
        Encode and decode time for one request (as many samples as the model's example
        input) on the host; a tier's time is this divided
        by its ``compute.speed``, as for exit heads.
    accuracy_drop_pp:
        Accuracy lost, in percentage points, when only this value is compressed with this
        codec (validation data); 0 for a lossless codec. Measured gains are recorded as 0.
    """

    node: str
    codec: str
    ratio: float
    encode_ms: float
    decode_ms: float
    accuracy_drop_pp: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "codec": self.codec,
            "ratio": self.ratio,
            "encode_ms": self.encode_ms,
            "decode_ms": self.decode_ms,
            "accuracy_drop_pp": self.accuracy_drop_pp,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CodecCandidate:
        return cls(
            node=str(data["node"]),
            codec=str(data["codec"]),
            ratio=float(data["ratio"]),
            encode_ms=float(data["encode_ms"]),
            decode_ms=float(data["decode_ms"]),
            accuracy_drop_pp=float(data["accuracy_drop_pp"]),
        )


@dataclass(frozen=True)
class CodecOptions:
    """What the planner may choose from (the ``codecs.json`` document).

    Attributes
    ----------
    candidates:
        Measured (value, codec) pairs; each (node, codec) at most once. Raw bytes are
        always a choice and are not listed.
    batch:
        Samples per request they were measured on (the model's example batch); the
        planner refuses them for a model planned at another batch.

    Examples
    --------
    >>> options = CodecOptions((CodecCandidate("pool2", "int8+zstd", 0.2, 0.4, 0.3, 0.1),))
    >>> CodecOptions.from_dict(options.to_dict()) == options
    True
    """

    candidates: tuple[CodecCandidate, ...]
    batch: int = 1

    def __post_init__(self) -> None:
        if self.batch < 1:
            raise CodecError(f"samples_per_request must be >= 1, got {self.batch}")
        seen: set[tuple[str, str]] = set()
        for index, c in enumerate(self.candidates):
            where = f"candidates.{index}"
            if c.codec == RAW:
                raise CodecError(f"{where}.codec: {RAW!r} is implicit, do not list it")
            if (c.node, c.codec) in seen:
                raise CodecError(f"{where}: codec {c.codec!r} for node {c.node!r} is repeated")
            seen.add((c.node, c.codec))
            for name in ("ratio", "encode_ms", "decode_ms", "accuracy_drop_pp"):
                value = getattr(c, name)
                if not (math.isfinite(value) and value >= 0):
                    raise CodecError(f"{where}.{name} must be finite and >= 0, got {value}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "tierflow_codecs_version": CODECS_FORMAT_VERSION,
            "samples_per_request": self.batch,
            "candidates": [c.to_dict() for c in self.candidates],
        }

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "codecs") -> CodecOptions:
        check_version(
            data, "tierflow_codecs_version", CODECS_FORMAT_VERSION, source=source, error=CodecError
        )
        candidates = parse_entries(
            data, "candidates", CodecCandidate.from_dict, source=source, error=CodecError
        )
        try:
            batch = int(data.get("samples_per_request", 1))
        except (TypeError, ValueError):
            raise CodecError(f"{source}: samples_per_request must be an integer") from None
        return cls(tuple(candidates), batch)

    @classmethod
    def load(cls, path: str | Path) -> CodecOptions:
        return cls.from_dict(
            read_json_object(path, what="codec options", error=CodecError), source=str(path)
        )
