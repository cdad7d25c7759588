"""The artifact manifest: what a built plan contains, and the digest of every file.

``manifest.json`` sits at the root of an artifact directory. It names the model spec and
the plan it was built from (``plan.json``, stored beside it), and for every segment its
tier, the executor that runs it, its files with their sha256, and the names, shapes and
dtypes of the values it takes and returns. Every file is checked against its digest
before anything reads it (:func:`verify_file`).

A plan with early exits adds an ``exits`` list: per exit, the ONNX head that reads a
backbone value, its policy and threshold, and the segment it follows. A tier holding an
exit then has several segments (``part`` 0, 1, ...), cut right after the exit's node.
Manifests without exits have neither field and read as before.

A manifest may add ``link_codecs``: per sending tier, the activation codec spec (see
:mod:`tierflow.compress.codecs`) for each cut tensor it sends on its link upward, e.g.
``{"edge": {"pool2": "int8+zstd"}}``. The section is optional and additive (the format
version stays 1): without it every tensor travels as raw bytes, exactly as before, and a
tierflow that does not know the section ignores it and sends raw bytes, which every tier
still accepts. :func:`~tierflow.runtime.manifest_route.route_from_manifest` reads it and
checks the specs and tensor names against the tier's route.

A segment may carry ``variant`` (e.g. ``"int8-static"``): its ONNX file was quantised at
build time because the plan's ``tier_variants`` chose it for that tier. The field is
optional and additive like ``link_codecs``; without it a segment is fp32.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tierflow.documents import check_version, read_json_object
from tierflow.errors import ArtifactError
from tierflow.plan.plan import Plan
from tierflow.plan.variant_options import FP32, QUANT_MODES
from tierflow.runtime.executor import IOSpec

MANIFEST_FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
PLAN_NAME = "plan.json"

ExecutorKind = Literal["onnx", "torch"]
# What a crossing value is in PyTorch: a tensor, a Python int (``x.size(0)``) or a tuple of
# ints (``x.shape``). On the wire and in ONNX all three are arrays; the int kinds are int64
# arrays of shape () and (n,), turned back into ints by the PyTorch executor.
ValueKind = Literal["tensor", "int", "ints"]
_VALUE_KINDS: tuple[ValueKind, ...] = ("tensor", "int", "ints")
_EXECUTOR_KINDS: tuple[ExecutorKind, ...] = ("onnx", "torch")


@dataclass(frozen=True)
class ValueEntry:
    """A named value a segment takes or returns; ``shape`` has ``-1`` where dynamic."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    kind: ValueKind = "tensor"

    @property
    def spec(self) -> IOSpec:
        return IOSpec(self.name, self.shape, self.dtype)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "kind": self.kind,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ValueEntry:
        kind = str(data.get("kind", "tensor"))
        if kind not in _VALUE_KINDS:
            raise ArtifactError(f"value {data.get('name')!r} has unknown kind {kind!r}")
        return cls(
            name=str(data["name"]),
            shape=tuple(int(d) for d in data["shape"]),
            dtype=str(data["dtype"]),
            kind=kind,
        )


@dataclass(frozen=True)
class FileEntry:
    """A file of the artifact, relative to the manifest's directory, and its sha256."""

    path: str
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256}


@dataclass(frozen=True)
class SegmentEntry:
    """One built segment: the tier that runs it, how, from which files, on which values.

    ``part`` numbers a tier's segments in the order they run (0 unless the tier holds an
    early exit, which cuts it into parts; see the module docstring).
    """

    tier: str
    executor: ExecutorKind
    files: tuple[FileEntry, ...]
    inputs: tuple[ValueEntry, ...]
    outputs: tuple[ValueEntry, ...]
    part: int = 0
    # "fp32" as exported, or the compressed variant its ONNX file was quantised to
    # (:data:`tierflow.plan.variant_options.QUANT_MODES`); lossy, so it is not checked
    # against PyTorch to 1e-4 as fp32 segments are.
    variant: str = FP32

    @property
    def label(self) -> str:
        """``TIER`` for a tier's only part, ``TIER.PART`` after an exit (file stems too)."""
        return self.tier if self.part == 0 else f"{self.tier}.{self.part}"

    def to_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "tier": self.tier,
            "executor": self.executor,
            "files": [f.to_dict() for f in self.files],
            "inputs": [v.to_dict() for v in self.inputs],
            "outputs": [v.to_dict() for v in self.outputs],
        }
        if self.part:
            document["part"] = self.part
        if self.variant != FP32:
            document["variant"] = self.variant
        return document

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SegmentEntry:
        executor = str(data["executor"])
        if executor not in _EXECUTOR_KINDS:
            raise ArtifactError(f"segment {data.get('tier')!r} has unknown executor {executor!r}")
        variant = str(data.get("variant", FP32))
        if variant != FP32 and variant not in QUANT_MODES:
            raise ArtifactError(
                f"segment {data.get('tier')!r} has unknown variant {variant!r}; "
                f"expected {FP32!r} or one of {list(QUANT_MODES)}"
            )
        return cls(
            tier=str(data["tier"]),
            executor=executor,
            files=tuple(FileEntry(str(f["path"]), str(f["sha256"])) for f in data["files"]),
            inputs=tuple(ValueEntry.from_dict(v) for v in data["inputs"]),
            outputs=tuple(ValueEntry.from_dict(v) for v in data["outputs"]),
            part=int(data.get("part", 0)),
            variant=variant,
        )


@dataclass(frozen=True)
class ExitEntry:
    """One built early exit: an ONNX head run on ``tier`` after segment ``after``.

    Attributes
    ----------
    name:
        The exit's name in the plan (and in traces).
    tier:
        The tier that runs the head.
    after:
        Index into :attr:`Manifest.segments` of the segment whose output ``input`` the
        head reads; the tier runs the head right after that segment.
    file:
        The head's ONNX file and its sha256.
    input, output:
        The backbone value the head reads and the logits it returns (``[B, classes]``).
    answers:
        The model's final output name; an answer at this exit carries the head's logits
        under it, so callers see one output name whichever exit answers.
    policy, threshold:
        The tier answers when the policy's confidence is at least ``threshold`` for
        every sample of a request (:mod:`tierflow.runtime.early_exit`).
    """

    name: str
    tier: str
    after: int
    file: FileEntry
    input: ValueEntry
    output: ValueEntry
    answers: str
    policy: str
    threshold: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "tier": self.tier,
            "after": self.after,
            "file": self.file.to_dict(),
            "input": self.input.to_dict(),
            "output": self.output.to_dict(),
            "answers": self.answers,
            "policy": self.policy,
            "threshold": self.threshold,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExitEntry:
        file = data["file"]
        return cls(
            name=str(data["name"]),
            tier=str(data["tier"]),
            after=int(data["after"]),
            file=FileEntry(str(file["path"]), str(file["sha256"])),
            input=ValueEntry.from_dict(data["input"]),
            output=ValueEntry.from_dict(data["output"]),
            answers=str(data["answers"]),
            policy=str(data["policy"]),
            threshold=float(data["threshold"]),
        )


@dataclass(frozen=True)
class Manifest:
    """A built plan: per-tier segments and the files that hold them.

    Attributes
    ----------
    model:
        The model spec (the plan's ``model``).
    plan_sha256:
        sha256 of the plan's canonical JSON (:func:`plan_digest`).
    plan_file:
        The stored plan, ``plan.json``, with its file digest.
    input_shapes:
        Shapes of the example inputs the artifact was built with; the PyTorch executor
        re-resolves the model with the first one.
    segments:
        In tier order, lowest first; a tier cut by an exit has several, in part order.
    exits:
        Early exits, in the order their tiers run them (empty without exits).
    link_codecs:
        Per sending tier, ``{tensor name: codec spec}`` for the tensors it compresses on
        its link upward (empty: every tensor travels raw). See the module docstring.
    root:
        The directory the manifest was read from or written to (not serialised).
    """

    model: str
    plan_sha256: str
    plan_file: FileEntry
    input_shapes: tuple[tuple[int, ...], ...]
    segments: tuple[SegmentEntry, ...]
    root: Path = Path()
    exits: tuple[ExitEntry, ...] = ()
    link_codecs: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_link_codecs(self.link_codecs)
        for entry in self.exits:
            if not 0 <= entry.after < len(self.segments):
                raise ArtifactError(
                    f"exit {entry.name!r} follows segment {entry.after}, but the manifest has "
                    f"{len(self.segments)} segments"
                )
            follows = self.segments[entry.after]
            if follows.tier != entry.tier:
                raise ArtifactError(
                    f"exit {entry.name!r} runs on tier {entry.tier!r} but follows a segment "
                    f"of tier {follows.tier!r}"
                )

    @property
    def tiers(self) -> tuple[str, ...]:
        """Tiers that run a segment, in order, each once."""
        return tuple(dict.fromkeys(s.tier for s in self.segments))

    def to_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "tierflow_manifest_version": MANIFEST_FORMAT_VERSION,
            "model": self.model,
            "plan_sha256": self.plan_sha256,
            "plan_file": self.plan_file.to_dict(),
            "input_shapes": [list(s) for s in self.input_shapes],
            "segments": [s.to_dict() for s in self.segments],
        }
        if self.exits:
            document["exits"] = [e.to_dict() for e in self.exits]
        if self.link_codecs:
            document["link_codecs"] = {
                tier: dict(codecs) for tier, codecs in self.link_codecs.items()
            }
        return document

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, root: Path, source: str) -> Manifest:
        check_version(
            data,
            "tierflow_manifest_version",
            MANIFEST_FORMAT_VERSION,
            source=source,
            error=ArtifactError,
        )
        try:
            plan_file = data["plan_file"]
            return cls(
                model=str(data["model"]),
                plan_sha256=str(data["plan_sha256"]),
                plan_file=FileEntry(str(plan_file["path"]), str(plan_file["sha256"])),
                input_shapes=tuple(tuple(int(d) for d in s) for s in data["input_shapes"]),
                segments=tuple(SegmentEntry.from_dict(s) for s in data["segments"]),
                root=root,
                exits=tuple(ExitEntry.from_dict(e) for e in data.get("exits", ())),
                link_codecs=_read_link_codecs(data.get("link_codecs", {}), source=source),
            )
        except KeyError as exc:
            raise ArtifactError(f"{source}: missing field {exc.args[0]!r}") from None
        except (TypeError, ValueError, AttributeError) as exc:
            raise ArtifactError(f"{source}: malformed manifest: {exc}") from None

    def segment(self, tier: str) -> SegmentEntry:
        """The only segment of ``tier``; a tier cut by an exit has several (:meth:`parts`)."""
        parts = self.parts(tier)
        if len(parts) > 1:
            raise ArtifactError(
                f"tier {tier!r} of artifact {self.root} has {len(parts)} segments (cut at "
                "early exits); use Manifest.parts"
            )
        return parts[0]

    def parts(self, tier: str) -> tuple[SegmentEntry, ...]:
        """The segments of ``tier`` in the order it runs them (one unless cut at exits)."""
        entries = tuple(entry for entry in self.segments if entry.tier == tier)
        if not entries:
            raise ArtifactError(
                f"artifact {self.root} has no segment for tier {tier!r} "
                f"(it has {', '.join(self.tiers) or 'none'})"
            )
        return entries

    def codecs_of(self, tier: str) -> dict[str, str]:
        """``{tensor: codec spec}`` for the link leaving ``tier`` (empty: all raw)."""
        return dict(self.link_codecs.get(tier, {}))

    def exits_of(self, tier: str) -> tuple[ExitEntry, ...]:
        """The exits ``tier`` runs, in the order it runs them."""
        return tuple(entry for entry in self.exits if entry.tier == tier)

    @property
    def final_outputs(self) -> tuple[str, ...]:
        """Values some segment returns and no later segment consumes, in production order
        (the model's outputs, as :func:`~tierflow.artifacts.run_chain` returns them)."""
        names: list[str] = []
        for index, segment in enumerate(self.segments):
            later = {v.name for s in self.segments[index + 1 :] for v in s.inputs}
            names += [
                v.name for v in segment.outputs if v.name not in later and v.name not in names
            ]
        return tuple(names)

    def load_plan(self) -> Plan:
        """The stored plan, after checking its file digest and its canonical digest."""
        path = verify_file(self.root, self.plan_file)
        plan = Plan.load(path)
        if plan_digest(plan) != self.plan_sha256:
            raise ArtifactError(
                f"{path}: plan digest {plan_digest(plan)} differs from the manifest's "
                f"plan_sha256 {self.plan_sha256}"
            )
        return plan


def _check_link_codecs(link_codecs: Mapping[str, Mapping[str, str]]) -> None:
    """Structure only: codec specs and tensor names are checked against a tier's route."""
    for tier, codecs in link_codecs.items():
        for tensor, spec in codecs.items():
            if not (isinstance(tensor, str) and isinstance(spec, str) and tensor and spec):
                raise ArtifactError(
                    f"link_codecs of tier {tier!r}: entry {tensor!r}: {spec!r} must map a "
                    "tensor name to a codec spec string"
                )


def _read_link_codecs(raw: Any, *, source: str) -> dict[str, dict[str, str]]:
    if not isinstance(raw, Mapping) or not all(isinstance(c, Mapping) for c in raw.values()):
        raise ArtifactError(
            f"{source}: link_codecs must map a tier to {{tensor: codec spec}}, got {raw!r}"
        )
    return {str(tier): dict(codecs) for tier, codecs in raw.items()}


def load_manifest(path: str | Path) -> Manifest:
    """Read ``manifest.json`` from an artifact directory (or the file itself).

    Examples
    --------
    >>> manifest = load_manifest("build/")  # doctest: +SKIP
    >>> [(s.tier, s.executor) for s in manifest.segments]  # doctest: +SKIP
    [('phone', 'onnx'), ('cloud', 'onnx')]
    """
    file = Path(path)
    if file.is_dir():
        file = file / MANIFEST_NAME
    data = read_json_object(file, what="artifact manifest", error=ArtifactError)
    return Manifest.from_dict(data, root=file.parent, source=str(file))


def plan_digest(plan: Plan) -> str:
    """sha256 of the plan's canonical JSON (sorted keys, no whitespace)."""
    canonical = json.dumps(plan.to_dict(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_file(root: Path, entry: FileEntry) -> Path:
    """The path of ``entry`` under ``root``, once its sha256 matches the manifest's."""
    path = root / entry.path
    if not path.is_file():
        raise ArtifactError(f"artifact file {path} is missing")
    actual = file_digest(path)
    if actual != entry.sha256:
        raise ArtifactError(
            f"artifact file {path} has sha256 {actual} but the manifest says {entry.sha256}; "
            "it was modified or corrupted after the build"
        )
    return path
