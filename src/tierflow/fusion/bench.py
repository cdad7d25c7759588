"""Measuring DDNN-style fusion on the runtime against raw offload of every view.

Everything reported is measured on running gRPC services on loopback: accuracy from the
logits the devices return, exits and bytes from the traces (Note [Fusion protocol]).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tierflow.data import DatasetSplits, load_dataset, quadrant_views
from tierflow.errors import FusionError
from tierflow.exits.policy import policy_by_name
from tierflow.fusion.bundle import BUNDLE_FILE, FusionBundle, export_bundle, load_bundle
from tierflow.fusion.client import FusionClient
from tierflow.fusion.deploy import deploy
from tierflow.fusion.model import FusionMode, check_fusion_mode
from tierflow.fusion.training import (
    TrainSettings,
    calibrate_exit_threshold,
    train_cloud_only,
    train_fusion,
)

DEFAULT_CACHE = Path(".tierflow/cache/fusion")
# The targets: at least 20x fewer upward payload bytes than raw offload, at most
# 1 percentage point below the cloud-only model's accuracy.
TARGET_RATIO = 20.0
TARGET_DROP_PP = 1.0


@dataclass(frozen=True)
class ModelSettings:
    """What a cached bundle depends on (its cache key)."""

    mode: FusionMode = "concat"
    views: int = 4
    feature_dim: int = 32
    edge_dim: int = 16
    exit_policy: str = "entropy"
    train: TrainSettings = field(default_factory=TrainSettings)

    @property
    def key(self) -> str:
        t = self.train
        return (
            f"{self.mode}-v{self.views}-f{self.feature_dim}-e{self.edge_dim}-{self.exit_policy}"
            f"-ep{t.epochs}-b{t.batch_size}-lr{t.learning_rate:g}-d{t.dropout:g}-s{t.seed}"
        )


def prepare_bundle(
    splits: DatasetSplits, settings: ModelSettings, *, cache: Path = DEFAULT_CACHE
) -> tuple[FusionBundle, bool]:
    """The bundle for ``settings``: reused from ``cache`` if present and intact, else
    trained (fusion model and cloud-only reference), calibrated and exported there.

    Returns the bundle and whether it came from the cache.
    """
    root = cache / settings.key
    if (root / BUNDLE_FILE).is_file():
        try:
            return load_bundle(root), True
        except FusionError:
            pass  # tampered or stale: retrain below, overwriting it
    started = time.perf_counter()
    model = train_fusion(
        splits.train,
        mode=settings.mode,
        views=settings.views,
        feature_dim=settings.feature_dim,
        edge_dim=settings.edge_dim,
        settings=settings.train,
    )
    fusion_s = time.perf_counter() - started
    reference = train_cloud_only(splits.train, settings=settings.train)
    reference_s = time.perf_counter() - started - fusion_s
    threshold = calibrate_exit_threshold(
        model, splits.val, policy=policy_by_name(settings.exit_policy)
    )
    info = {"train_fusion_s": round(fusion_s, 1), "train_reference_s": round(reference_s, 1)}
    export_bundle(
        model,
        reference,
        root,
        exit_policy=settings.exit_policy,
        exit_threshold=threshold,
        info=info,
    )
    return load_bundle(root), False


@dataclass
class _Tally:
    samples: int = 0
    correct: int = 0
    edge_exits: int = 0
    payload_bytes: int = 0
    wire_bytes: int = 0
    missing: set[int] = field(default_factory=set)
    incomplete: int = 0  # fusion requests fused without every device

    @property
    def accuracy(self) -> float:
        return self.correct / max(self.samples, 1)


def _run(
    client: FusionClient,
    views: Sequence[NDArray[np.float32]],
    labels: NDArray[np.int64],
    *,
    batch: int,
    tag: str,
) -> _Tally:
    tally = _Tally()
    for start in range(0, len(labels), batch):
        rows = slice(start, start + batch)
        result = client.infer([v[rows] for v in views], fusion_id=f"{tag}-{start}")
        tally.samples += len(labels[rows])
        tally.correct += int((result.predictions == labels[rows]).sum())
        tally.edge_exits += result.trace.edge_exits
        payload, wire = result.trace.upward_bytes()
        tally.payload_bytes += payload
        tally.wire_bytes += wire
        tally.missing |= set(result.trace.missing)
        tally.incomplete += bool(result.trace.missing)
    return tally


@dataclass(frozen=True)
class FusionBenchReport:
    """Measured figures of ``tierflow bench-fusion`` (bytes are per sample, upward)."""

    devices: int
    fusion: str
    samples: int
    batch: int
    wait_ms: float
    exit_policy: str
    exit_threshold: float
    accuracy_all: float
    incomplete_requests_all: int  # all devices up, yet one missed the edge's wait
    accuracy_missing: dict[int, float]
    missing_seen: dict[int, list[int]]
    edge_exit_rate: float
    payload_bytes_per_sample: float
    wire_bytes_per_sample: float
    raw_payload_bytes_per_sample: float
    raw_wire_bytes_per_sample: float
    payload_ratio: float
    wire_ratio: float
    cloud_only_accuracy: float
    accuracy_drop_pp: float
    targets_met: dict[str, bool]
    cached: bool
    train_seconds: dict[str, float]
    bench_seconds: float

    def to_dict(self) -> dict[str, Any]:
        document = asdict(self)
        document["accuracy_missing"] = {str(k): v for k, v in self.accuracy_missing.items()}
        document["missing_seen"] = {str(k): v for k, v in self.missing_seen.items()}
        return document


def run_fusion_bench(
    *,
    settings: ModelSettings | None = None,
    requests: int | None = None,
    batch: int = 20,
    wait_ms: float = 100.0,
    cache: Path = DEFAULT_CACHE,
) -> FusionBenchReport:
    """Train or reuse the fusion bundle, serve it on loopback, and measure it.

    Runs the held-out test split (the first ``requests * batch`` samples when given)
    through: the fusion runtime with all devices, with each device's server stopped in
    turn, and the raw-offload baseline (devices send float32 views, the cloud-only model
    answers).

    Examples
    --------
    >>> report = run_fusion_bench(requests=5)  # doctest: +SKIP
    >>> report.payload_ratio > 20  # doctest: +SKIP
    True
    """
    settings = settings or ModelSettings()
    check_fusion_mode(settings.mode)
    if settings.views != 4:
        raise FusionError(f"devices: quadrant views give exactly 4 devices, got {settings.views}")
    if batch < 1 or (requests is not None and requests < 1):
        raise FusionError(f"batch and requests must be at least 1, got {batch} and {requests}")
    splits = load_dataset("mnist5k")
    bundle, cached = prepare_bundle(splits, settings, cache=cache)
    started = time.perf_counter()
    count = len(splits.test) if requests is None else min(len(splits.test), requests * batch)
    views = quadrant_views(splits.test.x[:count])
    labels = splits.test.y[:count]
    wait_s = wait_ms / 1000.0

    with deploy(bundle, wait_s=wait_s) as running:
        with FusionClient(running.device_addresses) as client:
            full = _run(client, views, labels, batch=batch, tag="all")
        missing: dict[int, _Tally] = {}
        for index in range(bundle.views):
            running.stop_device(index)
            with FusionClient(running.device_addresses) as client:
                missing[index] = _run(client, views, labels, batch=batch, tag=f"no{index}")
            running.restart_device(index)
    with (
        deploy(bundle, wait_s=wait_s, raw=True) as running,
        FusionClient(running.device_addresses) as client,
    ):
        raw = _run(client, views, labels, batch=batch, tag="raw")

    payload = full.payload_bytes / count
    wire = full.wire_bytes / count
    raw_payload, raw_wire = raw.payload_bytes / count, raw.wire_bytes / count
    payload_ratio = raw_payload / payload if payload else math.inf
    wire_ratio = raw_wire / wire if wire else math.inf
    drop_pp = (raw.accuracy - full.accuracy) * 100.0
    return FusionBenchReport(
        devices=bundle.views,
        fusion=bundle.mode,
        samples=count,
        batch=batch,
        wait_ms=wait_ms,
        exit_policy=bundle.exit_policy,
        exit_threshold=bundle.exit_threshold,
        accuracy_all=full.accuracy,
        incomplete_requests_all=full.incomplete,
        accuracy_missing={i: t.accuracy for i, t in missing.items()},
        missing_seen={i: sorted(t.missing) for i, t in missing.items()},
        edge_exit_rate=full.edge_exits / count,
        payload_bytes_per_sample=payload,
        wire_bytes_per_sample=wire,
        raw_payload_bytes_per_sample=raw_payload,
        raw_wire_bytes_per_sample=raw_wire,
        payload_ratio=payload_ratio,
        wire_ratio=wire_ratio,
        cloud_only_accuracy=raw.accuracy,
        accuracy_drop_pp=drop_pp,
        targets_met={
            "devices >= 4": bundle.views >= 4,
            f"payload ratio >= {TARGET_RATIO:g}": payload_ratio >= TARGET_RATIO,
            f"accuracy drop <= {TARGET_DROP_PP:g} pp": drop_pp <= TARGET_DROP_PP,
        },
        cached=cached,
        train_seconds={k: float(v) for k, v in bundle.info.items()},
        bench_seconds=round(time.perf_counter() - started, 1),
    )
