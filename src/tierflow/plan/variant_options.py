"""Compressed model variants as the planner sees them: measured per-node speed and size.

Pure data, no torch. A measuring step (:func:`tierflow.compress.variant_options_measure.
variant_options_for`) quantises stretches of a model and records, per variant, how much
faster and smaller each node becomes and how much accuracy the variant costs;
:func:`tierflow.plan.variant_planner.plan_compressed` chooses a variant per tier
(docs/concepts.md, "Compressed variants in the cost model").
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tierflow.documents import check_version, parse_entries, read_json_object
from tierflow.errors import CompressionError

VARIANTS_FORMAT_VERSION = 1
FP32 = "fp32"  # the implicit choice: a tier runs its segments as exported
# What a tier's segments may become, and the ONNX Runtime quantisation mode that builds it.
QuantModeName = Literal["static", "dynamic", "fp16"]
QUANT_MODES: Mapping[str, QuantModeName] = {
    "int8-static": "static",
    "int8-dynamic": "dynamic",
    "fp16": "fp16",
}


@dataclass(frozen=True)
class VariantOption:
    """One compressed variant a tier may run, measured on one model.

    Attributes
    ----------
    name:
        ``"int8-static"``, ``"int8-dynamic"`` or ``"fp16"`` (a key of ``QUANT_MODES``).
    accuracy_drop_pp:
        Accuracy lost, in percentage points, when the *whole model* runs as this variant
        (validation data). A tier running part of the model in it is charged the whole
        drop: a bound, since quantising fewer layers adds less noise (docs/concepts.md).
    time_ratio:
        ``{node: variant time / fp32 time}``, measured per stretch of the model on the
        host; nodes not listed keep their fp32 time (ratio 1).
    size_ratio:
        ``{node: variant parameter bytes / fp32 parameter bytes}``; nodes not listed 1.
    segment_ms:
        Host ms a tier running this variant pays once per request, however many nodes it
        runs (quantising its input, dequantising its output); a tier's cost is this
        divided by its ``compute.speed``.

    Examples
    --------
    >>> v = VariantOption("int8-static", 0.1, {"conv1": 0.4}, {"conv1": 0.26})
    >>> VariantOption.from_dict(v.to_dict()) == v
    True
    """

    name: str
    accuracy_drop_pp: float
    time_ratio: Mapping[str, float] = field(default_factory=dict)
    size_ratio: Mapping[str, float] = field(default_factory=dict)
    segment_ms: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "accuracy_drop_pp": self.accuracy_drop_pp,
            "time_ratio": dict(self.time_ratio),
            "size_ratio": dict(self.size_ratio),
            "segment_ms": self.segment_ms,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VariantOption:
        return cls(
            name=str(data["name"]),
            accuracy_drop_pp=float(data["accuracy_drop_pp"]),
            time_ratio={str(k): float(v) for k, v in dict(data.get("time_ratio", {})).items()},
            size_ratio={str(k): float(v) for k, v in dict(data.get("size_ratio", {})).items()},
            segment_ms=float(data.get("segment_ms", 0.0)),
        )


@dataclass(frozen=True)
class VariantOptions:
    """What the planner may choose per tier (the ``variants.json`` document).

    Attributes
    ----------
    model:
        The model spec the variants were measured on (checked against the plan's).
    variants:
        Measured variants, each name at most once; fp32 is always a choice, not listed.
    batch:
        Samples per request they were measured on (the model's example batch); the
        planner refuses them for a model planned at another batch.

    Examples
    --------
    >>> options = VariantOptions("zoo:lenet", (VariantOption("int8-static", 0.0),))
    >>> VariantOptions.from_dict(options.to_dict()) == options
    True
    """

    model: str
    variants: tuple[VariantOption, ...]
    batch: int = 1

    def __post_init__(self) -> None:
        if self.batch < 1:
            raise CompressionError(f"samples_per_request must be >= 1, got {self.batch}")
        seen: set[str] = set()
        for index, v in enumerate(self.variants):
            where = f"variants.{index}"
            if v.name == FP32:
                raise CompressionError(f"{where}.name: {FP32!r} is implicit, do not list it")
            if v.name not in QUANT_MODES:
                raise CompressionError(
                    f"{where}.name: unknown variant {v.name!r}; choose from {list(QUANT_MODES)}"
                )
            if v.name in seen:
                raise CompressionError(f"{where}: variant {v.name!r} is repeated")
            seen.add(v.name)
            for name in ("accuracy_drop_pp", "segment_ms"):
                value = getattr(v, name)
                if not (math.isfinite(value) and value >= 0):
                    raise CompressionError(f"{where}.{name} must be finite and >= 0, got {value}")
            for table in ("time_ratio", "size_ratio"):
                for node, ratio in getattr(v, table).items():
                    if not (math.isfinite(ratio) and ratio > 0):
                        raise CompressionError(
                            f"{where}.{table}.{node} must be finite and > 0, got {ratio}"
                        )

    def named(self, name: str) -> VariantOption:
        for v in self.variants:
            if v.name == name:
                return v
        raise CompressionError(f"no variant {name!r}; measured: {[v.name for v in self.variants]}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "tierflow_variants_version": VARIANTS_FORMAT_VERSION,
            "model": self.model,
            "samples_per_request": self.batch,
            "variants": [v.to_dict() for v in self.variants],
        }

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "variants") -> VariantOptions:
        check_version(
            data,
            "tierflow_variants_version",
            VARIANTS_FORMAT_VERSION,
            source=source,
            error=CompressionError,
        )
        variants = parse_entries(
            data, "variants", VariantOption.from_dict, source=source, error=CompressionError
        )
        try:
            batch = int(data.get("samples_per_request", 1))
        except (TypeError, ValueError):
            raise CompressionError(f"{source}: samples_per_request must be an integer") from None
        return cls(str(data.get("model", "")), tuple(variants), batch)

    @classmethod
    def load(cls, path: str | Path) -> VariantOptions:
        return cls.from_dict(
            read_json_object(path, what="variant options", error=CompressionError),
            source=str(path),
        )
