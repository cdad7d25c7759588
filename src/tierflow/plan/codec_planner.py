"""Codecs in the placement program: candidates as cost-model arrays, and the choice read back.

Auto-Split (Banitalebi-Dehkordi et al., KDD 2021) chooses the split point and the
bit-width of the activations that cross it jointly, because a value that compresses
well makes a split cheap that raw bytes would rule out. Here every measured (value,
codec) candidate of :class:`~tierflow.plan.codec_options.CodecOptions` becomes a binary
choice per link in the placement program (:mod:`tierflow.plan.milp`), with one row
bounding the summed accuracy drop, so the plan is optimal for the cost model
(docs/concepts.md, "Activation codecs in the cost model").
:func:`~tierflow.plan.variant_planner.plan_with_codecs` plans with them.
"""

from __future__ import annotations

import numpy as np

from tierflow.errors import PlanError
from tierflow.plan.codec_options import CodecOptions
from tierflow.plan.cost_model import CostModel, FloatArray, IntArray, _replace


def codec_cost_model(
    base: CostModel,
    options: CodecOptions,
    speeds: FloatArray,
    *,
    max_accuracy_drop_pp: float | None,
    model: str = "model",
) -> CostModel:
    """``base`` with the candidates of ``options`` as codec choices.

    Candidates whose drop alone exceeds the budget can never be chosen and are left out;
    with no candidate left the result is ``base`` itself, so the program is
    :func:`~tierflow.plan.plan`'s.
    """
    index = {name: i for i, name in enumerate(base.node_names)}
    kept: list[int] = []
    for position, candidate in enumerate(options.candidates):
        if candidate.node not in index:
            raise PlanError(
                f"codec options candidates.{position}: node {candidate.node!r} is not in "
                f"the graph of {model}"
            )
        if max_accuracy_drop_pp is None or candidate.accuracy_drop_pp <= max_accuracy_drop_pp:
            kept.append(position)
    if not kept:
        return base
    chosen = [options.candidates[k] for k in kept]
    encode = np.array([c.encode_ms for c in chosen])
    decode = np.array([c.decode_ms for c in chosen])
    return _replace(
        base,
        codec_specs=tuple(c.codec for c in chosen),
        codec_node=np.array([index[c.node] for c in chosen], dtype=np.int64),
        codec_ratio=np.array([c.ratio for c in chosen]),
        codec_encode_ms=encode[:, None] / speeds[None, :],
        codec_decode_ms=decode[:, None] / speeds[None, :],
        codec_drop_pp=np.array([c.accuracy_drop_pp for c in chosen]),
        max_codec_drop_pp=max_accuracy_drop_pp,
    )


def link_codecs(cost: CostModel, codecs: IntArray | None) -> dict[str, dict[str, str]]:
    """``{sending tier: {value: codec spec}}`` for the chosen codecs (the manifest's shape)."""
    result: dict[str, dict[str, str]] = {}
    if codecs is None:
        return result
    for node, link in zip(*np.nonzero(codecs >= 0), strict=True):
        k = int(codecs[node, link])
        # Link l leaves tier l upward, so tier l is the one that encodes.
        tier = cost.tier_names[int(link)]
        result.setdefault(tier, {})[cost.node_names[int(node)]] = cost.codec_specs[k]
    return result
