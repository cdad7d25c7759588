"""`ExitOptions` for the planner: measured heads and a Pareto set of operating points."""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from numpy.typing import NDArray

from tierflow.errors import ExitError
from tierflow.exits.calibration import AccuracyDrop, calibrate, evaluate_exits, standalone_accuracy
from tierflow.exits.model import ExitModel
from tierflow.exits.policy import ExitPolicy
from tierflow.graph import capture
from tierflow.plan.exit_options import FINAL_EXIT, ExitHead, ExitOptions, ExitSetting
from tierflow.torch_threads import torch_threads

DEFAULT_DROPS_PP = (0.0, 0.25, 0.5, 1.0, 2.0, 5.0)
"""Accuracy-drop targets (pp) calibrated for each subset of exits: conservative to
aggressive; ``0.0`` still lets exits answer where they never disagree with the final one."""
MAX_SUBSET_EXITS = 4  # 2**4 - 1 = 15 subsets; beyond that only prefixes of the exits


def measure_head(model: ExitModel, name: str, *, runs: int = 30, warmup: int = 5) -> ExitHead:
    """Describe exit ``name``: median single-sample latency on this host, FLOPs, bytes.

    Timed on one thread (Note [One torch thread] in :mod:`tierflow.torch_threads`): the
    planner divides this figure by each tier's speed, so host load must not inflate it.
    """
    head = model.heads[name]
    sample = torch.randn(1, *model.attach_shape(name))
    was_training = head.training
    head.eval()
    timings_ms: list[float] = []
    try:
        with torch.no_grad(), torch_threads(1):
            for index in range(warmup + runs):
                start = time.perf_counter()
                logits = head(sample)
                elapsed_ms = (time.perf_counter() - start) * 1e3
                if index >= warmup:
                    timings_ms.append(elapsed_ms)
        flops = capture(head, (sample,), name=f"head {name}").total_flops
    finally:
        head.train(was_training)
    return ExitHead(
        name=name,
        node=model.nodes[name],
        output_bytes=float(logits.numel() * logits.element_size()),
        host_latency_ms=statistics.median(timings_ms),
        flops=int(flops),
    )


def _subsets(names: Sequence[str]) -> list[tuple[str, ...]]:
    if len(names) <= MAX_SUBSET_EXITS:
        return [
            subset
            for size in range(1, len(names) + 1)
            for subset in itertools.combinations(names, size)
        ]
    return [tuple(names[:end]) for end in range(1, len(names) + 1)]


def _dominated(a: ExitSetting, b: ExitSetting) -> bool:
    """``b`` is at least as accurate and sends at least as many samples to each exit."""
    names = set(a.exit_rates) - {FINAL_EXIT}
    no_worse = b.accuracy >= a.accuracy and all(
        b.exit_rates.get(n, 0.0) >= a.exit_rates.get(n, 0.0) for n in names
    )
    better = b.accuracy > a.accuracy or any(
        b.exit_rates.get(n, 0.0) > a.exit_rates.get(n, 0.0) for n in names
    )
    return no_worse and better


def operating_points(
    logits: Mapping[str, NDArray[np.floating]],
    labels: NDArray[np.integer],
    *,
    policy: ExitPolicy,
    drops_pp: Sequence[float] = DEFAULT_DROPS_PP,
) -> tuple[ExitSetting, ...]:
    """Settings for each subset of exits x each accuracy-drop target, Pareto-filtered.

    Always starts with "no early exit" (``thresholds == {}``). Within one subset a setting
    is dropped if another is at least as accurate and sends at least as many samples to
    every exit. Accuracies and rates are measured on the same ``logits`` (validation data).
    """
    exits = [name for name in logits if name != FINAL_EXIT]
    settings: list[ExitSetting] = []
    seen: set[tuple[tuple[str, float], ...]] = {()}
    none = evaluate_exits(logits, labels, policy=policy, thresholds={})
    settings.append(ExitSetting({}, none.exit_rates, none.accuracy))
    for subset in _subsets(exits):
        group: list[ExitSetting] = []
        for drop in drops_pp:
            thresholds = calibrate(
                logits, labels, policy=policy, target=AccuracyDrop(drop), exits=subset
            )
            key = tuple(sorted(thresholds.items()))
            # A subset whose calibration switched an exit off repeats a smaller subset.
            if key in seen or set(thresholds) != set(subset):
                continue
            seen.add(key)
            result = evaluate_exits(logits, labels, policy=policy, thresholds=thresholds)
            group.append(ExitSetting(thresholds, result.exit_rates, result.accuracy))
        settings.extend(s for s in group if not any(_dominated(s, o) for o in group))
    return tuple(settings)


def exit_options(
    model: ExitModel,
    val_logits: Mapping[str, NDArray[np.floating]],
    labels: NDArray[np.integer],
    *,
    policy: ExitPolicy,
    drops_pp: Sequence[float] = DEFAULT_DROPS_PP,
    latency_runs: int = 30,
) -> ExitOptions:
    """What the exit model offers the planner, measured on validation data.

    Parameters
    ----------
    model:
        The trained exit model (its heads are timed on this host).
    val_logits:
        ``{exit name: [N, C], "final": [N, C]}`` on validation data (see
        :func:`tierflow.exits.exit_logits`).
    labels:
        ``[N]`` validation labels.
    policy:
        The exit policy the tiers will use.
    drops_pp:
        Accuracy-drop targets to calibrate per subset of exits.
    latency_runs:
        Timed single-sample runs per head (the median is recorded).

    Examples
    --------
    >>> from tierflow.exits import MaxSoftmax, build_head, default_head_spec, exit_logits
    >>> from tierflow.models import resolve_model
    >>> backbone, inputs = resolve_model("zoo:lenet_wide")
    >>> model = ExitModel(backbone, inputs, nodes={"exit1": "pool1"},
    ...                   heads={"exit1": build_head(default_head_spec((8, 12, 12), 10))})
    >>> x = np.random.default_rng(0).random((64, 1, 28, 28), dtype=np.float32)
    >>> labels = np.zeros(64, dtype=np.int64)
    >>> options = exit_options(model, exit_logits(model, x), labels, policy=MaxSoftmax())
    >>> options.heads[0].node, dict(options.settings[0].thresholds)
    ('pool1', {})
    """
    if list(val_logits) != [*model.exit_names, FINAL_EXIT]:
        raise ExitError(
            f"validation logits are for {list(val_logits)}; the model has exits "
            f"{[*model.exit_names, FINAL_EXIT]} (in that order)"
        )
    heads = tuple(measure_head(model, name, runs=latency_runs) for name in model.exit_names)
    return ExitOptions(
        policy=policy.name,
        heads=heads,
        settings=operating_points(val_logits, labels, policy=policy, drops_pp=drops_pp),
        final_accuracy=standalone_accuracy(val_logits, labels)[FINAL_EXIT],
    )
