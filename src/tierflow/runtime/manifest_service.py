"""A tier's whole :class:`~tierflow.runtime.service.TierService` from a build manifest.

What ``tierflow serve`` (and so the testbed, which runs ``tierflow serve`` per tier) and
in-process tests run: the tier's executors in order, its early exits between them, its
route onward and the specs of the final outputs computed upstream.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from tierflow.artifacts.executors import load_executors
from tierflow.artifacts.exit_loading import load_tier_exits
from tierflow.artifacts.manifest import Manifest
from tierflow.errors import ArtifactError
from tierflow.runtime.executor import Executor
from tierflow.runtime.manifest_route import route_from_manifest
from tierflow.runtime.route import Upstream
from tierflow.runtime.service import TierService
from tierflow.runtime.transport import Transport


def service_from_manifest(
    manifest: Manifest,
    tier: str,
    *,
    upstream: Upstream | None = None,
    transport: Transport | None = None,
    tiers: Sequence[str] | None = None,
    intra_op_threads: int | None = None,
    codecs: Mapping[str, str] | None = None,
) -> TierService:
    """The service of ``tier``: segments and exit heads loaded (digests checked), routed.

    Parameters
    ----------
    manifest:
        The built plan.
    tier:
        The tier to serve; one without segments relays.
    upstream, tiers:
        As for :func:`~tierflow.runtime.manifest_route.route_from_manifest`.
    transport:
        How to reach ``upstream``; required when the route keeps it.
    intra_op_threads:
        ONNX Runtime's intra-op threads per session.
    codecs:
        ``{tensor: codec spec}`` overriding the manifest's ``link_codecs`` for this
        tier's link upward (``"none"``: send raw).

    Raises
    ------
    ArtifactError
        If a file is missing or tampered with, or the route needs an upstream (or a
        transport) that is not given.

    Examples
    --------
    >>> service = service_from_manifest(load_manifest("build/"), "cloud")  # doctest: +SKIP
    >>> with TierServer(service) as server: ...  # doctest: +SKIP
    """
    # Files first: a tampered artifact is reported as such, whatever else is wrong.
    executors: list[Executor] = []
    if tier in manifest.tiers:
        executors = load_executors(manifest, tier, intra_op_threads=intra_op_threads)
    exits = load_tier_exits(manifest, tier, intra_op_threads=intra_op_threads)
    route = route_from_manifest(manifest, tier, upstream, tiers=tiers, codecs=codecs)
    if route.upstream is not None and transport is None:
        raise ArtifactError(f"tier {tier!r} forwards to {route.upstream.tier!r}: pass a transport")
    specs = {value.name: value.spec for entry in manifest.segments for value in entry.outputs}
    return TierService(
        manifest.model,
        executors,
        route=route,
        transport=transport,
        output_specs=[specs[name] for name in route.outputs if name in specs],
        exits=exits,
    )
