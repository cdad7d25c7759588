"""Exit thresholds from validation logits, and what a set of thresholds does to accuracy.

Numpy only: logits come in as ``{exit name: [N, C]}`` plus ``"final"`` (the backbone's own
classifier), in backbone order. A sample leaves at the first *active* exit (one listed in
``thresholds``) whose confidence is at least that exit's threshold; otherwise the final
classifier answers it.

Note [conservative calibration]
-------------------------------
Thresholds chosen on validation data meet their target there by construction, and miss it
on new data about half of the time. So the targets are met with a margin: one-sided
confidence bounds at ``z`` standard errors (``z = 1.645``: 95% one-sided, normal
approximation).

* Accuracy drop: a sample *harms* when the exit that answers it is wrong and the final
  classifier would have been right; the drop is at most the harm rate ``h / N``.
  Calibration requires ``h/N + z * sqrt(h/N (1 - h/N) / N) <= target``. Samples where the
  exit is right and the final classifier wrong are not credited: they are as noisy as the
  harms, and crediting them let an exit offset its own errors with luck on the validation
  set (seen on mnist5k: 0.5 pp allowed on validation, 1.1 pp lost on test).
* Exit rate: requires ``rate - z * sqrt(rate (1 - rate) / N) >= target``.

Exits are calibrated greedily in backbone order, earliest first: the earliest exit saves
the most compute, so it gets the lowest threshold the target allows with the later exits
off; each later exit then takes what is left of the budget.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from tierflow.errors import ExitError
from tierflow.exits.policy import ExitPolicy
from tierflow.plan.exit_options import FINAL_EXIT

Z_95 = 1.645  # one-sided 95% normal quantile, see Note [conservative calibration]
Logits = Mapping[str, NDArray[np.floating]]


@dataclass(frozen=True)
class AccuracyDrop:
    """Target: overall accuracy at most ``max_drop_pp`` percentage points below the final
    classifier's (on the same data)."""

    max_drop_pp: float


@dataclass(frozen=True)
class ExitRate:
    """Target: at least ``rate`` (a fraction in [0, 1]) of the samples leave early."""

    rate: float


CalibrationTarget = AccuracyDrop | ExitRate


@dataclass(frozen=True)
class ExitEvaluation:
    """What thresholds do on one labelled data set.

    Attributes
    ----------
    accuracy:
        Overall accuracy in [0, 1].
    exit_rates:
        ``{exit name or "final": fraction of samples answered there}`` (sums to 1; exits
        that are off have rate 0).
    exit_accuracy:
        ``{exit name or "final": accuracy of the samples answered there}``; ``None`` where
        no sample was answered.
    """

    accuracy: float
    exit_rates: dict[str, float]
    exit_accuracy: dict[str, float | None]


def _checked(logits: Logits, labels: NDArray[np.integer]) -> list[str]:
    """Exit names in order (without ``final``), after checking shapes against ``labels``."""
    if FINAL_EXIT not in logits:
        raise ExitError(f"logits need the {FINAL_EXIT!r} classifier's, got {sorted(logits)}")
    if labels.ndim != 1:
        raise ExitError(f"labels must be 1-d, got shape {list(labels.shape)}")
    for name, values in logits.items():
        if values.ndim != 2 or values.shape[0] != len(labels):
            raise ExitError(
                f"logits of exit {name!r} are shaped {list(values.shape)}; expected "
                f"[{len(labels)}, classes] to match the labels"
            )
    if len(labels) == 0:
        raise ExitError("cannot calibrate or evaluate exits on zero samples")
    return [name for name in logits if name != FINAL_EXIT]


def _assign(
    confidence: Mapping[str, NDArray[np.float64]], thresholds: Mapping[str, float], n: int
) -> NDArray[np.int64]:
    """Index into ``[*confidence, final]`` of the exit that answers each sample."""
    names = list(confidence)
    where = np.full(n, len(names), dtype=np.int64)
    for index in reversed(range(len(names))):  # reversed: the first active exit wins
        name = names[index]
        if name in thresholds:
            where[confidence[name] >= thresholds[name]] = index
    return where


def evaluate_exits(
    logits: Logits,
    labels: NDArray[np.integer],
    *,
    policy: ExitPolicy,
    thresholds: Mapping[str, float],
) -> ExitEvaluation:
    """Accuracy and exit rates when the exits in ``thresholds`` are active.

    Examples
    --------
    >>> from tierflow.exits import MaxSoftmax
    >>> logits = {"exit1": np.array([[4.0, 0.0], [0.0, 0.1]]), "final": np.eye(2) * 3}
    >>> result = evaluate_exits(logits, np.array([0, 1]), policy=MaxSoftmax(),
    ...                         thresholds={"exit1": 0.9})
    >>> result.exit_rates, result.accuracy
    ({'exit1': 0.5, 'final': 0.5}, 1.0)
    """
    exits = _checked(logits, labels)
    unknown = set(thresholds) - set(exits)
    if unknown:
        raise ExitError(f"thresholds name unknown exits {sorted(unknown)}; exits: {exits}")
    confidence = {name: policy.confidence(logits[name]) for name in exits}
    where = _assign(confidence, thresholds, len(labels))
    names = [*exits, FINAL_EXIT]
    correct = np.stack([logits[name].argmax(axis=1) == labels for name in names])
    answered_correct = correct[where, np.arange(len(labels))]
    rates: dict[str, float] = {}
    per_exit: dict[str, float | None] = {}
    for index, name in enumerate(names):
        mask = where == index
        rates[name] = float(mask.mean())
        per_exit[name] = float(answered_correct[mask].mean()) if mask.any() else None
    return ExitEvaluation(float(answered_correct.mean()), rates, per_exit)


def standalone_accuracy(logits: Logits, labels: NDArray[np.integer]) -> dict[str, float]:
    """Accuracy of every classifier on all samples, as if it answered each of them."""
    _checked(logits, labels)
    return {
        name: float((values.argmax(axis=1) == labels).mean()) for name, values in logits.items()
    }


def calibrate(
    logits: Logits,
    labels: NDArray[np.integer],
    *,
    policy: ExitPolicy,
    target: CalibrationTarget,
    exits: Sequence[str] | None = None,
    z: float = Z_95,
) -> dict[str, float]:
    """Thresholds for the ``exits`` (default: all) that meet ``target`` with a margin.

    See Note [conservative calibration]. An exit that cannot answer any sample within an
    accuracy-drop target is left out of the result (it stays off), so ``{}`` means "no
    early exit".

    Parameters
    ----------
    logits:
        ``{exit name: [N, C]}`` in backbone order, plus ``"final"``.
    labels:
        ``[N]`` true classes.
    policy:
        How confident logits are (:class:`MaxSoftmax`, :class:`NormalisedEntropy`, ...).
    target:
        :class:`AccuracyDrop` or :class:`ExitRate`.
    exits:
        The exits to activate, a subset of ``logits``' (order is taken from ``logits``).
    z:
        Margin in standard errors (0 fits the validation data exactly).

    Raises
    ------
    ExitError
        On inconsistent shapes, unknown exits, a bad target, or an exit rate that the
        exits cannot reach.

    Examples
    --------
    >>> from tierflow.exits import MaxSoftmax
    >>> rng = np.random.default_rng(0)
    >>> labels = rng.integers(0, 2, 400)
    >>> final = np.eye(2)[labels] * 5.0
    >>> early = final * rng.uniform(0.0, 2.0, (400, 1))  # right, confident or not
    >>> thresholds = calibrate({"exit1": early, "final": final}, labels,
    ...                        policy=MaxSoftmax(), target=AccuracyDrop(0.5))
    >>> 0.5 <= thresholds["exit1"] <= 1.0
    True
    """
    names = _checked(logits, labels)
    active = names if exits is None else [name for name in names if name in set(exits)]
    if exits is not None and len(active) != len(set(exits)):
        raise ExitError(f"unknown exits {sorted(set(exits) - set(names))}; exits: {names}")
    confidence = {name: policy.confidence(logits[name]) for name in active}
    correct = {name: logits[name].argmax(axis=1) == labels for name in [*active, FINAL_EXIT]}
    if isinstance(target, AccuracyDrop):
        if not 0.0 <= target.max_drop_pp <= 100.0:
            raise ExitError(f"max accuracy drop {target.max_drop_pp} pp is not in [0, 100]")
        return _for_accuracy_drop(confidence, correct, target.max_drop_pp / 100.0, z)
    if not 0.0 <= target.rate <= 1.0:
        raise ExitError(f"target exit rate {target.rate} is not in [0, 1]")
    return _for_exit_rate(confidence, target.rate, z)


def _for_accuracy_drop(
    confidence: Mapping[str, NDArray[np.float64]],
    correct: Mapping[str, NDArray[np.bool_]],
    budget: float,
    z: float,
) -> dict[str, float]:
    final = correct[FINAL_EXIT]
    n = len(final)
    taken = np.zeros(n, dtype=bool)
    harms = 0  # harmful answers of the earlier exits
    thresholds: dict[str, float] = {}
    for name, conf in confidence.items():
        free = np.flatnonzero(~taken)
        if len(free) == 0:
            break
        order = free[np.argsort(-conf[free], kind="stable")]
        cumulative = harms + np.cumsum(final[order] & ~correct[name][order])
        rate = cumulative / n
        upper = rate + z * np.sqrt(rate * (1.0 - rate) / n)
        sorted_conf = conf[order]
        # Only cut where the confidence changes: a threshold takes every tied sample.
        boundary = np.append(sorted_conf[1:] < sorted_conf[:-1], True)
        ok = np.flatnonzero((upper <= budget + 1e-12) & boundary)
        if len(ok) == 0:
            continue
        k = int(ok[-1]) + 1  # the lowest threshold within budget
        thresholds[name] = float(sorted_conf[k - 1])
        taken[order[:k]] = True
        harms = int(cumulative[k - 1])
    return thresholds


def _for_exit_rate(
    confidence: Mapping[str, NDArray[np.float64]], rate: float, z: float
) -> dict[str, float]:
    if not confidence:
        raise ExitError("an exit-rate target needs at least one exit")
    if rate == 0.0:
        return {}
    # One shared threshold: a sample leaves early iff its best confidence reaches it.
    best = np.max(np.stack(list(confidence.values())), axis=0)
    n = len(best)
    ranked = np.sort(best)[::-1]
    fraction = np.arange(1, n + 1) / n
    lower = fraction - z * np.sqrt(fraction * (1.0 - fraction) / n)
    ok = np.flatnonzero(lower >= rate)
    if len(ok) == 0:
        raise ExitError(
            f"no threshold makes {rate:.1%} of {n} samples leave early with a margin "
            f"(z={z}); lower the target exit rate"
        )
    threshold = float(ranked[int(ok[0])])
    return dict.fromkeys(confidence, threshold)
