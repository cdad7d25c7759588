"""`build()`: turning a plan into per-tier artifacts (ONNX files or safetensors weights).

Note [ONNX exporter]
    Segments are exported with the TorchScript exporter (``dynamo=False``). Measured on
    this codebase's zoo with torch 2.14 on 2 CPU cores, it exported every segment of
    lenet, resnet_mini, inception_mini, transformer, gru and lstm in 5-50 ms each, while
    the dynamo exporter took 0.5-3.7 s each and failed on every transformer segment that
    takes or returns Python ints (``batch, tokens, dim = x.shape`` split across tiers):
    torch.export specialises or rejects int inputs. The TorchScript tracer records
    ``x.size(0)`` as a Shape op, so sizes stay dynamic across the cut. Its deprecation
    warning is silenced locally. Every exported file is checked against PyTorch at two
    batch sizes before it is accepted, so a silently specialised graph is caught.

Note [values that are not tensors]
    fx segments may pass Python ints (``x.size(0)``) or tuples of ints (``x.shape``)
    across a cut. They cross as int64 arrays of shape ``()`` and ``(n,)`` (kinds ``int``
    and ``ints`` in the manifest); an ONNX segment takes and returns them as tensors, and
    the PyTorch executor converts them back. Any other value (a float, a tuple of
    tensors) is refused with an :class:`~tierflow.errors.ArtifactError` naming it.

Note [early exits in a build]
    A plan's exits cut their tiers right after each exit's node
    (:func:`~tierflow.partition.from_plan.split_at_exits`), so a tier service can run the
    exit's head between two of its segments and skip the rest (and every tier above)
    when the head is confident. Heads are always exported to ONNX, whatever ``executor``
    says: the PyTorch executor rebuilds segments from the model spec, and a head is a
    module the spec does not name (:mod:`tierflow.artifacts.exit_heads`).

Note [codecs in a build]
    A plan's ``link_codecs`` (chosen by :func:`~tierflow.plan.variant_planner.plan_with_codecs`)
    are copied unchanged into the manifest's ``link_codecs``, so ``tierflow serve`` and the
    testbed compress those tensors on the wire with no further option. The segments do not
    change: a codec is a property of a link, not of the model. Each named value is checked
    here to be a floating-point tensor of the run, so a plan that cannot be served fails at
    build time, naming the tier and value, rather than when the first tier starts. A plan
    without codecs builds exactly as before (the manifest has no ``link_codecs`` section).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from tierflow.artifacts.executors import OnnxExecutor
from tierflow.artifacts.exit_heads import export_exit_head
from tierflow.artifacts.manifest import (
    MANIFEST_NAME,
    PLAN_NAME,
    ExecutorKind,
    FileEntry,
    Manifest,
    SegmentEntry,
    ValueEntry,
    file_digest,
    plan_digest,
)
from tierflow.artifacts.segment_variants import compress_segment
from tierflow.errors import ArtifactError
from tierflow.partition import Segment, SplitModel, ValueRef
from tierflow.partition.from_plan import split_at_exits
from tierflow.plan.plan import Plan

ExecutorChoice = Literal["auto", "onnx", "torch"]
# Opset 17 is the newest the TorchScript exporter fully supports (LayerNormalization is
# native from 17) and ONNX Runtime >= 1.14 runs it.
ONNX_OPSET = 17
# Tolerances for accepting an exported segment against PyTorch (float32 kernels differ).
_RTOL = 1e-4
_ATOL = 1e-4


def build(
    model: nn.Module,
    plan: Plan,
    example_inputs: Sequence[Any],
    out_dir: str | Path,
    *,
    executor: ExecutorChoice = "auto",
    opset: int = ONNX_OPSET,
    exit_heads: Mapping[str, nn.Module] | None = None,
    calibration: Sequence[Any] | None = None,
) -> Manifest:
    """Split ``model`` as ``plan`` says and write each segment, plus ``manifest.json``.

    Parameters
    ----------
    model, plan, example_inputs:
        As for :func:`tierflow.split`; the model is not modified. The first dimension of
        every tensor input is taken to be the batch: values whose dimensions follow it
        get ``-1`` there and are exported with dynamic axes.
    out_dir:
        Created if needed; ``manifest.json``, ``plan.json`` and one file per segment
        (``TIER.onnx`` or ``TIER.safetensors``) are written into it.
    executor:
        ``"onnx"``: every segment becomes an ONNX file, or the build fails;
        ``"torch"``: every segment's weights are saved for the PyTorch executor;
        ``"auto"``: ONNX where the export succeeds and matches PyTorch, else PyTorch.
    exit_heads:
        ``{exit name: head}`` for every exit of ``plan.exits``: a module that takes the
        exit node's output and returns logits shaped like the model's one output. Each
        is exported to ONNX as ``exit-NAME.onnx`` (Note [early exits in a build]).
    calibration:
        Model inputs (a batch of real samples, e.g. 256) for the static int8 segments of
        ``plan.tier_variants`` (Note [variants in a build] in
        :mod:`tierflow.artifacts.segment_variants`); not needed otherwise.

    Raises
    ------
    ArtifactError
        If a value crossing tiers is neither a tensor nor an int (nor a tuple of ints),
        (``executor="onnx"``) a segment cannot be exported faithfully, or a planned exit
        has no head, or its head cannot be exported or returns the wrong shape, or a
        codec of ``plan.link_codecs`` names a value that is not a float tensor
        (Note [codecs in a build]), or a tier of ``plan.tier_variants`` cannot be
        quantised (naming the tier).

    Examples
    --------
    >>> manifest = build(model, plan, inputs, "build/")  # doctest: +SKIP
    >>> [(s.tier, s.executor) for s in manifest.segments]  # doctest: +SKIP
    [('phone', 'onnx'), ('cloud', 'onnx')]
    """
    if executor not in ("auto", "onnx", "torch"):
        raise ArtifactError(f"executor {executor!r}: choose auto, onnx or torch")
    inputs = tuple(example_inputs)
    heads = exit_heads or {}
    missing = [e.name for e in plan.exits if e.name not in heads]
    if missing:
        raise ArtifactError(
            f"plan exits {missing} have no head: pass exit_heads={{name: module}} for each"
        )
    segments = split_at_exits(model, plan, inputs)
    values = _values(segments, inputs)
    _check_link_codecs(plan, values)
    try:
        wider: dict[str, Any] | None = _values(segments, _widen(inputs))
    except Exception:  # the model fixes its batch size: export with static shapes
        wider = None

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plan_path = out / PLAN_NAME
    plan.save(plan_path)

    entries: list[SegmentEntry] = []
    for segment in segments:
        part = sum(e.tier == segment.tier for e in entries)
        stem = segment.tier if part == 0 else f"{segment.tier}.{part}"
        ins = tuple(_entry(n, values[n], wider, segment.tier) for n in segment.input_names)
        outs = tuple(_entry(n, values[n], wider, segment.tier) for n in segment.output_names)
        kind: ExecutorKind = "torch" if executor == "torch" else "onnx"
        files: tuple[FileEntry, ...] = ()
        if kind == "onnx":
            try:
                files = (_export_onnx(segment, stem, ins, outs, values, wider, out, opset=opset),)
            except ArtifactError:
                if executor == "onnx":
                    raise
                kind = "torch"
        if kind == "torch":
            files = (_save_weights(segment, stem, out),)
        entries.append(SegmentEntry(segment.tier, kind, files, ins, outs, part=part))
    if plan.tier_variants:
        entries = _compress_tiers(plan, segments, entries, calibration, out)
    exits = tuple(
        export_exit_head(
            planned,
            heads[planned.name],
            entries,
            final=_final_output(segments, planned.name),
            values=values,
            wider=wider,
            out=out,
            opset=opset,
        )
        for planned in plan.exits
    )

    manifest = Manifest(
        model=plan.model,
        plan_sha256=plan_digest(plan),
        plan_file=FileEntry(PLAN_NAME, file_digest(plan_path)),
        input_shapes=tuple(tuple(t.shape) for t in inputs if isinstance(t, torch.Tensor)),
        segments=tuple(entries),
        root=out,
        exits=exits,
        link_codecs={tier: dict(codecs) for tier, codecs in plan.link_codecs.items()},
    )
    (out / MANIFEST_NAME).write_text(manifest.to_json() + "\n")
    return manifest


def _compress_tiers(
    plan: Plan,
    segments: SplitModel,
    entries: Sequence[SegmentEntry],
    calibration: Sequence[Any] | None,
    out: Path,
) -> list[SegmentEntry]:
    """Each segment of a tier in ``plan.tier_variants`` quantised to that variant."""
    feeds: dict[str, Any] | None = None
    if calibration is not None:
        run = _values(segments, tuple(calibration))
        feeds = {name: to_array(value) for name, value in run.items()}
    return [
        compress_segment(e, plan.tier_variants[e.tier], feeds, out)
        if e.tier in plan.tier_variants
        else e
        for e in entries
    ]


def _check_link_codecs(plan: Plan, values: Mapping[str, Any]) -> None:
    """Every value a planned codec names is a floating-point tensor of the run."""
    for tier, codecs in plan.link_codecs.items():
        for name in codecs:
            value = values.get(name)
            if not (isinstance(value, torch.Tensor) and value.is_floating_point()):
                what = "not a value of the split model" if value is None else "not a float tensor"
                raise ArtifactError(
                    f"plan link_codecs.{tier}.{name}: {name!r} is {what}; codecs compress "
                    "floating-point tensors that cross a link (plan at node granularity)"
                )


def _final_output(segments: SplitModel, exit_name: str) -> str:
    """The name of the model's one output, which an exit's answer stands in for."""
    template = segments.output_template
    if isinstance(template, ValueRef):
        return template.name
    if isinstance(template, tuple | list) and len(template) == 1:
        (only,) = template
        if isinstance(only, ValueRef):
            return only.name
    raise ArtifactError(
        f"exit {exit_name!r}: early exits need a model with one output tensor, and this "
        f"model returns {template!r}"
    )


def _values(segments: SplitModel, inputs: Sequence[Any]) -> dict[str, Any]:
    """Every named value of a run: model inputs and every segment's outputs."""
    env: dict[str, Any] = dict(zip(segments.input_names, inputs, strict=True))
    with torch.no_grad():
        for segment in segments:
            outputs = segment(*(env[name] for name in segment.input_names))
            env.update(zip(segment.output_names, outputs, strict=True))
    return env


def _widen(inputs: Sequence[Any]) -> tuple[Any, ...]:
    """The inputs with one more batch row (a copy of the first), to find dynamic dims."""
    return tuple(
        torch.cat([t, t[:1]]) if isinstance(t, torch.Tensor) and t.ndim > 0 else t for t in inputs
    )


def _is_ints(value: Any) -> bool:
    return isinstance(value, tuple | list) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    )


def _entry(name: str, value: Any, wider: Mapping[str, Any] | None, tier: str) -> ValueEntry:
    if isinstance(value, torch.Tensor):
        # A dimension that changed with the batch (see _widen) is dynamic: -1.
        shape = tuple(value.shape)
        other = None if wider is None else wider.get(name)
        if isinstance(other, torch.Tensor) and other.ndim == value.ndim:
            shape = tuple(-1 if d != o else d for d, o in zip(shape, other.shape, strict=True))
        return ValueEntry(name, shape, _numpy_dtype(value, name), "tensor")
    if isinstance(value, int) and not isinstance(value, bool):
        return ValueEntry(name, (), "int64", "int")
    if _is_ints(value):
        return ValueEntry(name, (len(value),), "int64", "ints")
    raise ArtifactError(
        f"value {name!r} at tier {tier!r} is a {type(value).__name__}; only tensors, ints and "
        f"tuples of ints can cross tiers. Plan again with {name!r} and the nodes that use it "
        f"on one tier (e.g. --pin NODE=TIER)"
    )


def _numpy_dtype(tensor: torch.Tensor, name: str) -> str:
    try:
        return str(torch.empty((), dtype=tensor.dtype).numpy().dtype)
    except TypeError:
        raise ArtifactError(
            f"value {name!r} has dtype {tensor.dtype}, which numpy (and the wire) cannot hold"
        ) from None


def to_array(value: Any) -> NDArray[Any]:
    """A value of a PyTorch run as the array that crosses the wire (see the module note)."""
    if isinstance(value, torch.Tensor):
        array: NDArray[Any] = value.detach().cpu().numpy()
        return array
    return np.asarray(value, dtype=np.int64)


class _Exportable(nn.Module):
    """A segment whose int inputs and outputs are int64 tensors, for the ONNX tracer."""

    def __init__(self, segment: Segment) -> None:
        super().__init__()
        self.graph_module = segment.graph_module

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = []
        for value in self.graph_module(*inputs):
            if isinstance(value, torch.Tensor):
                tensor = value
            elif isinstance(value, int):
                tensor = torch.tensor(value)
            else:
                # One tensor per size, stacked: torch.tensor(x.shape) would be traced as a
                # constant, while each traced size stays a Shape op.
                tensor = torch.stack([torch.tensor(v) for v in value])
            # A value passed straight through (a model input consumed higher up) would make
            # the graph output its own input; ONNX needs a node to produce every output.
            outputs.append(tensor.clone() if any(tensor is i for i in inputs) else tensor)
        return tuple(outputs)


def _dynamic_axes(entries: Sequence[ValueEntry]) -> dict[str, dict[int, str]]:
    return {
        e.name: {
            i: "batch" if i == 0 else f"{e.name}_{i}" for i, d in enumerate(e.shape) if d == -1
        }
        for e in entries
        if e.kind == "tensor" and -1 in e.shape
    }


def _export_onnx(
    segment: Segment,
    stem: str,
    ins: Sequence[ValueEntry],
    outs: Sequence[ValueEntry],
    values: Mapping[str, Any],
    wider: Mapping[str, Any] | None,
    out: Path,
    *,
    opset: int,
) -> FileEntry:
    path = out / f"{stem}.onnx"
    args = tuple(torch.as_tensor(to_array(values[e.name])) for e in ins)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # The TorchScript exporter warns that it is deprecated, and warns on every
            # traced size; correctness is checked below instead (Note [ONNX exporter]).
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _Exportable(segment),
                args,
                str(path),
                input_names=[e.name for e in ins],
                output_names=[
                    f"{e.name}:out" if e.name in segment.input_names else e.name for e in outs
                ],
                dynamic_axes=_dynamic_axes([*ins, *outs]),
                opset_version=opset,
                dynamo=False,
            )
    except Exception as exc:
        path.unlink(missing_ok=True)
        raise ArtifactError(
            f"segment for tier {segment.tier!r} cannot be exported to ONNX: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from exc
    entry = FileEntry(path.name, file_digest(path))
    executor = OnnxExecutor(
        out, SegmentEntry(segment.tier, "onnx", (entry,), tuple(ins), tuple(outs))
    )
    for run in (values, wider):
        if run is None:
            continue
        got = executor.run({e.name: to_array(run[e.name]) for e in ins})
        for e in outs:
            want = to_array(run[e.name])
            if got[e.name].shape != want.shape or not np.allclose(
                got[e.name], want, rtol=_RTOL, atol=_ATOL
            ):
                path.unlink(missing_ok=True)
                raise ArtifactError(
                    f"segment for tier {segment.tier!r}: ONNX output {e.name!r} differs from "
                    f"PyTorch (shape {got[e.name].shape} vs {want.shape})"
                )
    return entry


def _save_weights(segment: Segment, stem: str, out: Path) -> FileEntry:
    from safetensors.torch import save_file

    path = out / f"{stem}.safetensors"
    # Clones: safetensors refuses tensors that share storage (tied weights); loading with
    # load_state_dict copies each back into its own parameter.
    state = {
        k: v.detach().contiguous().clone() for k, v in segment.graph_module.state_dict().items()
    }
    save_file(state, str(path), metadata={"tier": segment.tier})
    return FileEntry(path.name, file_digest(path))
