"""Early exits inside a tier service: a head run between two segments, and when it answers.

Note [batch rule for early exits]
    A request answers at an exit only when *every* sample of its batch is confident
    (policy confidence >= threshold); otherwise the whole batch continues to the next
    segment and tier, and every sample gets the backbone's later answer. Splitting a
    batch would send a smaller batch upstream and merge two answers into one response:
    values that cross tiers may hold the batch size itself (``x.size(0)``, Note [values
    that are not tensors] in :mod:`tierflow.artifacts.build`), so a partial batch could
    disagree with them, and the trace could no longer name the one exit that answered.
    Callers that want per-sample exits send one sample per request (the tier services
    pipeline concurrent requests).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from tierflow.exits.policy import ExitPolicy
from tierflow.runtime.executor import Executor


@dataclass(frozen=True)
class TierExit:
    """An exit a tier service runs.

    Attributes
    ----------
    name:
        The exit's name (recorded in the trace when it answers).
    head:
        Runs the head: takes the backbone value it reads, returns ``{logits: array}``.
    logits:
        The name of the head's output.
    answers:
        The model's final output name; an answer here carries the logits under it.
    policy, threshold:
        Answer when ``policy.confidence(logits) >= threshold`` for the whole batch.
    after:
        Index, among the service's executors, of the executor after which the head runs.
    """

    name: str
    head: Executor
    logits: str
    answers: str
    policy: ExitPolicy
    threshold: float
    after: int

    def decide(self, logits: NDArray[np.generic]) -> bool:
        """Whether the batch ``logits`` ``[B, C]`` answers here (Note [batch rule ...])."""
        confidence = self.policy.confidence(np.asarray(logits, dtype=np.float64))
        return bool(confidence.size > 0 and np.all(confidence >= self.threshold))
