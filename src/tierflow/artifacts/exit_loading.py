"""Early-exit heads of a built artifact, loaded to serve (no PyTorch).

:func:`load_tier_exits` reads a tier's ONNX heads back, digests first, as the runtime's
:class:`~tierflow.runtime.early_exit.TierExit` objects; exporting them at build time is
:mod:`tierflow.artifacts.exit_heads`.
"""

from __future__ import annotations

from tierflow.artifacts.executors import OnnxExecutor
from tierflow.artifacts.manifest import (
    FileEntry,
    Manifest,
    SegmentEntry,
    ValueEntry,
    verify_file,
)
from tierflow.errors import ArtifactError, ExitError
from tierflow.exits.policy import policy_by_name
from tierflow.runtime.early_exit import TierExit


def head_segment(tier: str, file: FileEntry, reads: ValueEntry, output: ValueEntry) -> SegmentEntry:
    """A head as the one-file ONNX segment :class:`OnnxExecutor` runs."""
    return SegmentEntry(tier, "onnx", (file,), (reads,), (output,))


def load_tier_exits(
    manifest: Manifest, tier: str, *, intra_op_threads: int | None = None
) -> list[TierExit]:
    """The exits ``tier`` runs, heads loaded, in order; ``after`` counts ``tier``'s segments.

    Raises
    ------
    ArtifactError
        If a head's file is missing or its sha256 differs from the manifest's.

    Examples
    --------
    >>> exits = load_tier_exits(load_manifest("build/"), "device")  # doctest: +SKIP
    >>> [(e.name, e.after) for e in exits]  # doctest: +SKIP
    [('exit1', 0)]
    """
    positions = [i for i, s in enumerate(manifest.segments) if s.tier == tier]
    exits = []
    for entry in manifest.exits_of(tier):
        verify_file(manifest.root, entry.file)
        head = OnnxExecutor(
            manifest.root,
            head_segment(tier, entry.file, entry.input, entry.output),
            intra_op_threads=intra_op_threads,
        )
        try:
            policy = policy_by_name(entry.policy)
        except ExitError as error:
            raise ArtifactError(f"{manifest.root}: exit {entry.name!r}: {error}") from None
        exits.append(
            TierExit(
                name=entry.name,
                head=head,
                logits=entry.output.name,
                answers=entry.answers,
                policy=policy,
                threshold=entry.threshold,
                after=positions.index(entry.after),
            )
        )
    return exits
