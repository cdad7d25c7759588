"""Deriving a tier's :class:`~tierflow.runtime.route.Route` from a build manifest.

A tier forwards upstream every value that a segment on a higher tier consumes and that is
available here: the model's inputs (received from the caller), values computed below and
relayed through this tier, and values its own segment computes. It returns the model's
final outputs (values no later segment consumes, as :func:`~tierflow.artifacts.run_chain`
defines them) that are computed on this tier or above; outputs computed below never reach
it, so the tier below answers them from its own pool.

Early exits need nothing forwarded: a head reads a value of its own tier, and answers
under the final output's name, which every route already returns.
:func:`~tierflow.runtime.manifest_service.service_from_manifest` loads a tier's exits
with its executors and this route.

A tier compresses the tensors it forwards as the manifest's optional ``link_codecs``
section says for it (``{tensor: codec spec}``), with ``codecs`` given here (``tierflow
serve --codec``) overriding it tensor by tensor; the spec ``"none"`` sends a tensor raw.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from tierflow.artifacts.manifest import Manifest
from tierflow.compress.codecs import codec_from_spec
from tierflow.errors import ArtifactError, CodecError
from tierflow.runtime.route import Route, Upstream


def route_from_manifest(
    manifest: Manifest,
    tier: str,
    upstream: Upstream | None,
    *,
    tiers: Sequence[str] | None = None,
    codecs: Mapping[str, str] | None = None,
) -> Route:
    """The route of ``tier``: what it forwards to ``upstream`` and which outputs it returns.

    Parameters
    ----------
    manifest:
        The built plan.
    tier:
        The tier served; it need not run a segment (a pure relay).
    upstream:
        The next tier towards the cloud. Dropped when no higher tier needs a value
        from here (the route then ends at this tier).
    tiers:
        All tiers in path order; defaults to the stored plan's (hash-checked) tiers.
    codecs:
        ``{tensor: codec spec}`` overriding the manifest's ``link_codecs`` of ``tier``;
        ``"none"`` sends that tensor raw.

    Raises
    ------
    ArtifactError
        If ``tier`` is not a tier of the plan, higher tiers need values but no
        ``upstream`` is given, or a codec names a tensor the tier does not forward, a
        tensor that is not floating point, or an unknown codec.

    Examples
    --------
    >>> route = route_from_manifest(manifest, "edge", Upstream("cloud", "h:1"))  # doctest: +SKIP
    >>> route.forward  # doctest: +SKIP
    ('h2',)
    """
    order = tuple(tiers) if tiers is not None else manifest.load_plan().tiers
    if tier not in order:
        raise ArtifactError(
            f"tier {tier!r} is not a tier of the plan in {manifest.root} "
            f"(tiers: {', '.join(order)})"
        )
    position = order.index(tier)
    rank: dict[str, int] = {}
    for segment in manifest.segments:
        if segment.tier not in order:
            raise ArtifactError(
                f"segment of tier {segment.tier!r} in {manifest.root} is not on the plan's path"
            )
        rank[segment.tier] = order.index(segment.tier)

    produced_at: dict[str, int] = {}
    for segment in manifest.segments:
        for value in segment.outputs:
            produced_at.setdefault(value.name, rank[segment.tier])
    model_inputs = [
        value.name
        for segment in manifest.segments
        for value in segment.inputs
        if value.name not in produced_at
    ]

    available = set(model_inputs) | {n for n, r in produced_at.items() if r <= position}
    forward: list[str] = []
    for segment in manifest.segments:
        if rank[segment.tier] <= position:
            continue
        for value in segment.inputs:
            if value.name in available and value.name not in forward:
                forward.append(value.name)

    outputs = tuple(
        name for name in manifest.final_outputs if produced_at.get(name, -1) >= position
    )
    chosen = _link_codecs(manifest, tier, forward, codecs or {})
    if not forward:
        return Route(tier, outputs=outputs)
    if upstream is None:
        raise ArtifactError(
            f"tier {tier!r} must forward {forward} to a higher tier, but has no upstream"
        )
    return Route(tier, outputs=outputs, forward=tuple(forward), upstream=upstream, codecs=chosen)


def _link_codecs(
    manifest: Manifest, tier: str, forward: Sequence[str], overrides: Mapping[str, str]
) -> dict[str, str]:
    """The manifest's codecs for ``tier``'s link, overridden; checked against the route."""
    chosen = {**manifest.codecs_of(tier), **overrides}
    chosen = {name: spec for name, spec in chosen.items() if spec.strip().lower() != "none"}
    dtypes = {
        value.name: value.dtype
        for segment in manifest.segments
        for value in (*segment.inputs, *segment.outputs)
    }
    for name, spec in chosen.items():
        where = f"codec {spec!r} for tensor {name!r} on the link from tier {tier!r}"
        if name not in forward:
            sent = ", ".join(forward) or "nothing"
            raise ArtifactError(f"{where}: the tier does not forward it (it forwards {sent})")
        # Codecs quantise floating-point activations; ints (shapes, token ids) stay raw.
        if not np.issubdtype(np.dtype(dtypes[name]), np.floating):
            raise ArtifactError(f"{where}: the tensor is {dtypes[name]}, not floating point")
        try:
            codec_from_spec(spec)
        except CodecError as error:
            raise ArtifactError(f"{where}: {error}") from error
    return chosen
