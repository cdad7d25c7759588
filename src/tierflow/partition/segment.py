"""Segments (the part of a model one tier runs) and running a split model end to end.

Values travel between segments by name: every value is named after the graph node that
produces it, so a segment's ``input_names`` and ``output_names`` are also the names of the
tensors (or ints, or tuples) that cross links at run time.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch.utils._pytree as pytree
from torch import fx, nn

from tierflow.errors import PartitionError


@dataclass(frozen=True)
class ValueRef:
    """Stands for the value of node ``name`` inside an output template."""

    name: str


class Segment(nn.Module):
    """The nodes of one model that run on one tier, as a module.

    Attributes
    ----------
    graph_module:
        The segment's own ``torch.fx.GraphModule``; it owns copies of the parameters it
        uses, shared with no other segment and not with the original model.
    tier:
        The tier that runs it.
    input_names:
        Names of the values it consumes (model inputs or values from lower tiers), in
        the order ``forward`` takes them.
    output_names:
        Names of the values it produces for higher tiers or the model output, in the
        order ``forward`` returns them.
    """

    def __init__(
        self,
        graph_module: fx.GraphModule,
        *,
        tier: str,
        input_names: Sequence[str],
        output_names: Sequence[str],
    ) -> None:
        super().__init__()
        self.graph_module = graph_module
        self.tier = tier
        self.input_names = tuple(input_names)
        self.output_names = tuple(output_names)

    def forward(self, *inputs: Any) -> tuple[Any, ...]:
        """Run the segment on values given in ``input_names`` order."""
        if len(inputs) != len(self.input_names):
            raise PartitionError(
                f"segment for tier {self.tier!r} takes {len(self.input_names)} inputs "
                f"({', '.join(self.input_names)}), got {len(inputs)}"
            )
        return tuple(self.graph_module(*inputs))

    def extra_repr(self) -> str:
        return (
            f"tier={self.tier!r}, inputs=({', '.join(self.input_names)}), "
            f"outputs=({', '.join(self.output_names)})"
        )


class SplitModel(nn.Module):
    """A model split into per-tier segments; calling it equals calling the original model.

    It iterates, indexes and measures like the sequence of its segments, so code that
    wants "the segments" can treat it as one.

    Attributes
    ----------
    segments:
        One :class:`Segment` per non-empty tier, lowest tier first (registered as
        submodules under ``tier_segments``).
    input_names:
        Names of the model inputs, in the order the original ``forward`` took them.
    output_template:
        The original output structure (tuple, dict, namedtuple, ...) with each produced
        value replaced by a :class:`ValueRef`; constants stay as they are.
    input_spec:
        For modules whose ``forward`` flattens a pytree of inputs (``torch.export``
        modules), the spec the flattened inputs must match; ``None`` otherwise.
    """

    def __init__(
        self,
        segments: Sequence[Segment],
        *,
        input_names: Sequence[str],
        output_template: Any,
        input_spec: pytree.TreeSpec | None = None,
    ) -> None:
        super().__init__()
        self.tier_segments = nn.ModuleList(segments)
        self.input_names = tuple(input_names)
        self.output_template = output_template
        self.input_spec = input_spec

    @property
    def segments(self) -> tuple[Segment, ...]:
        return tuple(cast(Segment, segment) for segment in self.tier_segments)

    def __iter__(self) -> Iterator[Segment]:
        return iter(self.segments)

    def __len__(self) -> int:
        return len(self.tier_segments)

    def __getitem__(self, index: int) -> Segment:
        return cast(Segment, self.tier_segments[index])

    @property
    def tiers(self) -> tuple[str, ...]:
        """The tiers that run a segment, in order."""
        return tuple(segment.tier for segment in self.segments)

    def forward(self, *inputs: Any) -> Any:
        return run_split(self, *inputs)

    @classmethod
    def from_segments(cls, segments: Sequence[Segment]) -> SplitModel:
        """Wrap bare segments, inferring what the original model's interface must be.

        Model inputs are the segment inputs no segment produces, in order of first use;
        the output is a flat tuple of the values that no later segment consumes.
        """
        produced: set[str] = set()
        inputs: list[str] = []
        for segment in segments:
            inputs += [n for n in segment.input_names if n not in produced and n not in inputs]
            produced.update(segment.output_names)
        final: list[ValueRef] = []
        for position, segment in enumerate(segments):
            later = {n for s in segments[position + 1 :] for n in s.input_names}
            final += [ValueRef(n) for n in segment.output_names if n not in later]
        return cls(segments, input_names=inputs, output_template=tuple(final))


def run_split(split: SplitModel | Sequence[Segment], *inputs: Any) -> Any:
    """Run segments in tier order, passing values by name, and rebuild the model output.

    Parameters
    ----------
    split:
        A :class:`SplitModel` (from :func:`~tierflow.partition.split_traced`), or bare
        segments in tier order (see :meth:`SplitModel.from_segments` for what they return).
    *inputs:
        The original model's positional inputs.

    Returns
    -------
    Any
        For a ``SplitModel``, exactly the structure the original model returns.

    Examples
    --------
    >>> import torch
    >>> from tierflow.graph import trace
    >>> from tierflow.partition import split_traced
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU())
    >>> x = torch.randn(2, 4)
    >>> assignment = {"input_1": "device", "_0": "device", "_1": "cloud"}
    >>> split = split_traced(trace(model, (x,)), assignment, ["device", "cloud"])
    >>> [(s.tier, s.input_names, s.output_names) for s in split]
    [('device', ('input_1',), ('_0',)), ('cloud', ('_0',), ('_1',))]
    >>> torch.equal(run_split(split, x), model(x))
    True
    """
    model = split if isinstance(split, SplitModel) else SplitModel.from_segments(split)
    flat_inputs: Sequence[Any] = inputs
    if model.input_spec is not None:
        flat_inputs, spec = pytree.tree_flatten((tuple(inputs), {}))
        if spec != model.input_spec:
            raise PartitionError(f"inputs do not match the model's input structure {spec}")
    if len(flat_inputs) != len(model.input_names):
        raise PartitionError(
            f"the split model takes {len(model.input_names)} inputs "
            f"({', '.join(model.input_names)}), got {len(flat_inputs)}"
        )
    env: dict[str, Any] = dict(zip(model.input_names, flat_inputs, strict=True))
    for segment in model:
        missing = [name for name in segment.input_names if name not in env]
        if missing:
            raise PartitionError(
                f"segment for tier {segment.tier!r} needs {missing[0]!r}, which no earlier "
                "segment produces (segments out of order?)"
            )
        outputs = segment(*(env[name] for name in segment.input_names))
        env.update(zip(segment.output_names, outputs, strict=True))

    def fill(leaf: Any) -> Any:
        return env[leaf.name] if isinstance(leaf, ValueRef) else leaf

    return pytree.tree_map(fill, model.output_template)
