"""When an exit may answer: confidence of its logits against a threshold.

Numpy only, so that a tier service decides without PyTorch. A policy maps a batch of
logits ``[B, C]`` to a confidence per sample in [0, 1]; an exit answers a sample when the
confidence is at least the exit's threshold. Users plug in their own policy by passing
any object with ``name`` and ``confidence`` (the :class:`ExitPolicy` protocol).
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from tierflow.errors import ExitError

FloatArray = NDArray[np.float64]


class ExitPolicy(Protocol):
    """How confident a batch of logits is; higher means surer."""

    @property
    def name(self) -> str: ...

    def confidence(self, logits: NDArray[np.floating]) -> FloatArray:
        """Per-sample confidence in [0, 1] for logits ``[B, C]``."""
        ...


def _softmax(logits: NDArray[np.floating]) -> FloatArray:
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise ExitError(f"exit logits must be [batch, classes>=2], got {list(logits.shape)}")
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return np.asarray(exp / exp.sum(axis=1, keepdims=True))


class MaxSoftmax:
    """The largest softmax probability (BranchyNet's classifier confidence, SPINN)."""

    name = "max_softmax"

    def confidence(self, logits: NDArray[np.floating]) -> FloatArray:
        return np.asarray(_softmax(logits).max(axis=1))


class NormalisedEntropy:
    """One minus the softmax entropy divided by ``log C`` (DDNN's normalised entropy).

    DDNN exits when the normalised entropy is at most a threshold ``T``; as a confidence
    that is ``1 - entropy >= 1 - T``, so both policies share "confidence >= threshold".
    """

    name = "entropy"

    def confidence(self, logits: NDArray[np.floating]) -> FloatArray:
        probs = _softmax(logits)
        entropy = -(probs * np.log(np.clip(probs, 1e-12, 1.0))).sum(axis=1)
        return np.asarray(1.0 - entropy / math.log(probs.shape[1]))


_POLICIES: dict[str, type[MaxSoftmax] | type[NormalisedEntropy]] = {
    MaxSoftmax.name: MaxSoftmax,
    NormalisedEntropy.name: NormalisedEntropy,
}


def policy_names() -> tuple[str, ...]:
    return tuple(_POLICIES)


def policy_by_name(name: str) -> ExitPolicy:
    """The built-in policy called ``name`` (``max_softmax`` or ``entropy``)."""
    try:
        return _POLICIES[name]()
    except KeyError:
        raise ExitError(
            f"unknown exit policy {name!r}; choose one of {', '.join(_POLICIES)}"
        ) from None
