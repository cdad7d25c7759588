"""The planner's cost model: a graph, its per-tier costs and the constraints, as arrays.

Everything the solver, the evaluator and the baselines need lives here, so that they
agree by construction and tests can build random instances without a model. The
formulas are in docs/concepts.md ("Cost model").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tierflow.errors import PlanError
from tierflow.graph.layer_graph import LayerGraph
from tierflow.topology.schema import Topology

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]

BYTES_PER_MB = 1_000_000.0


@dataclass(frozen=True, eq=False)
class Constraints:
    """Placement constraints beyond what the topology says.

    Attributes
    ----------
    pins:
        Nodes that must run on a given tier (``{node: tier}``).
    private_input:
        The raw input never leaves the first tier: every layer that reads it (through
        shape-only operations such as ``view``) runs there.
    slo_ms:
        End-to-end latency bound for one input.
    """

    pins: Mapping[str, str] | None = None
    private_input: bool = False
    slo_ms: float | None = None


@dataclass(frozen=True, eq=False)
class CostModel:
    """Arrays describing one planning instance; node order is topological.

    ``N`` nodes, ``T`` tiers, ``L = T - 1`` links; link ``l`` joins tier ``l`` and ``l+1``.

    The last four fields describe early exits (docs/concepts.md, "Early exits in the cost
    model"); their defaults (every node reached, no exit) give the cost of one input. With
    them, every cost is the *expectation* over inputs: ``reach[n]`` is the probability that
    an input reaches node ``n``, and the active exits' heads are already folded into their
    attach nodes' ``compute_ms``.

    The ``codec_*`` fields list activation-codec candidates the planner may choose per
    crossing (docs/concepts.md, "Activation codecs in the cost model"); empty by default,
    which leaves the program exactly as without them.
    """

    node_names: tuple[str, ...]
    tier_names: tuple[str, ...]
    link_names: tuple[str, ...]
    compute_ms: FloatArray  # [N, T] latency of each node on each tier
    out_bytes: FloatArray  # [N] bytes of each node's output value
    param_bytes: FloatArray  # [N]
    work_bytes: FloatArray  # [N] inputs + output held while the node runs
    edge_src: IntArray  # [E] producer of each (deduplicated) edge
    edge_dst: IntArray  # [E] consumer
    input_nodes: IntArray  # model inputs: born on the first tier
    output_nodes: IntArray  # nodes whose values return to the first tier
    allowed: BoolArray  # [N, T] tiers each node may run on (pins, inputs on tier 0)
    private_nodes: IntArray  # nodes that must run on tier 0 when the input is private
    up_ms_per_byte: FloatArray  # [L]
    down_ms_per_byte: FloatArray  # [L]
    rtt_ms: FloatArray  # [L]
    service_ms: FloatArray  # [T] per-request cost of a tier's service stack when in the path
    link_weight: FloatArray  # [L] weight of the link's bytes in the bytes objective
    memory_bytes: FloatArray  # [T] inf where unlimited
    active_w: float | None  # power of the first tier; None if not given
    idle_w: float | None
    transmit_w: float | None
    slo_ms: float | None
    reach: FloatArray | None = None  # [N] probability an input reaches node n; None: all 1
    exit_nodes: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # [X]
    exit_rates: FloatArray = field(default_factory=lambda: np.zeros(0))  # [X] answered there
    exit_out_bytes: FloatArray = field(default_factory=lambda: np.zeros(0))  # [X] logits
    # Activation codecs (docs/concepts.md, "Activation codecs in the cost model"): candidate
    # k may compress node codec_node[k]'s value on any link it crosses. Empty: none.
    codec_specs: tuple[str, ...] = ()  # [K] codec spec of each candidate, e.g. "int8+zstd"
    codec_node: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # [K]
    codec_ratio: FloatArray = field(default_factory=lambda: np.zeros(0))  # [K] bytes after/before
    codec_encode_ms: FloatArray = field(default_factory=lambda: np.zeros((0, 0)))  # [K, T]
    codec_decode_ms: FloatArray = field(default_factory=lambda: np.zeros((0, 0)))  # [K, T]
    codec_drop_pp: FloatArray = field(default_factory=lambda: np.zeros(0))  # [K] accuracy cost
    max_codec_drop_pp: float | None = None  # budget on the summed drop of the chosen codecs
    # Compressed variants (docs/concepts.md, "Compressed variants in the cost model"): a
    # tier running int8 segments holds fewer parameter bytes. None: every tier holds fp32.
    param_scale: FloatArray | None = None  # [N, T] multiplier of param_bytes per tier

    @property
    def n_nodes(self) -> int:
        return len(self.node_names)

    @property
    def n_tiers(self) -> int:
        return len(self.tier_names)

    @property
    def has_power(self) -> bool:
        return self.active_w is not None

    @property
    def expected(self) -> bool:
        """Whether costs are expectations over early exits rather than one full input."""
        return self.reach is not None or len(self.exit_nodes) > 0

    @property
    def n_codecs(self) -> int:
        """Number of (value, codec) candidates the planner may choose from."""
        return len(self.codec_specs)

    def tier_param_bytes(self, tier: int) -> FloatArray:
        """``param_bytes`` as held on ``tier`` (scaled by the tier's compressed variant)."""
        if self.param_scale is None:
            return self.param_bytes
        return self.param_bytes * self.param_scale[:, tier]

    @property
    def node_reach(self) -> FloatArray:
        """``reach``, with 1 for every node when no exit is active."""
        return np.ones(self.n_nodes) if self.reach is None else self.reach

    def consumers(self) -> list[IntArray]:
        """Consumers of every node (indices), from the edge list."""
        order = np.argsort(self.edge_src, kind="stable")
        bounds = np.searchsorted(self.edge_src[order], np.arange(self.n_nodes + 1))
        dst = self.edge_dst[order]
        return [dst[bounds[i] : bounds[i + 1]] for i in range(self.n_nodes)]

    def restricted(self, tiers: Sequence[int]) -> CostModel:
        """The same instance with every node limited to ``tiers`` (baselines use it)."""
        mask = np.zeros(self.n_tiers, dtype=bool)
        mask[list(tiers)] = True
        allowed = self.allowed & mask
        return _replace(self, allowed=allowed)

    def inputs_pinned_only(self) -> BoolArray:
        """The ``allowed`` matrix without pins: only model inputs stay on the first tier."""
        allowed = np.ones_like(self.allowed)
        allowed[self.input_nodes, 1:] = False
        return allowed

    def without_constraints(self) -> CostModel:
        """The instance with no pins, privacy, memory or SLO constraint."""
        return _replace(
            self,
            allowed=self.inputs_pinned_only(),
            private_nodes=np.zeros(0, dtype=np.int64),
            memory_bytes=np.full(self.n_tiers, np.inf),
            slo_ms=None,
        )


def _replace(cost: CostModel, **changes: Any) -> CostModel:
    fields: dict[str, Any] = {name: getattr(cost, name) for name in cost.__dataclass_fields__}
    fields.update(changes)
    return CostModel(**fields)


# Operations that move or reshape data without transforming it: the raw input is still
# readable after them, so --private-input looks through them (FLOPs are zero for all).
def _is_layer(flops: int) -> bool:
    return flops > 0


def build_cost_model(
    graph: LayerGraph,
    topology: Topology,
    latency_ms: Mapping[str, Mapping[str, float]],
    *,
    constraints: Constraints | None = None,
    service_ms: Mapping[str, float] | None = None,
) -> CostModel:
    """Turn a graph, a topology and per-tier node latencies into a :class:`CostModel`.

    Parameters
    ----------
    latency_ms:
        ``{tier: {node: ms}}`` for every tier and every graph node.
    service_ms:
        ``{tier: ms}``: what one request costs a tier's service stack (receiving,
        decoding, encoding, sending) whenever the tier is on the request's path, as
        measured on the testbed; 0 where not given.
    """
    constraints = constraints or Constraints()
    names = tuple(n.name for n in graph.nodes)
    tiers = topology.tier_names
    index = {name: i for i, name in enumerate(names)}
    n, t = len(names), len(tiers)

    compute = np.zeros((n, t))
    for j, tier in enumerate(tiers):
        table = latency_ms.get(tier)
        if table is None:
            raise PlanError(f"no latency table for tier {tier!r}")
        for i, name in enumerate(names):
            value = table.get(name)
            if value is None:
                raise PlanError(f"tier {tier!r} has no latency for node {name!r}")
            compute[i, j] = value

    out_bytes = np.array([float(node.output_bytes) for node in graph.nodes])
    param_bytes = np.array([float(node.param_bytes) for node in graph.nodes])
    work_bytes = out_bytes.copy()
    src: list[int] = []
    dst: list[int] = []
    for i, node in enumerate(graph.nodes):
        for producer in node.inputs:
            src.append(index[producer])
            dst.append(i)
            work_bytes[i] += out_bytes[index[producer]]

    allowed = np.ones((n, t), dtype=bool)
    for name in graph.inputs:
        allowed[index[name], 1:] = False  # the input is born on the first tier
    block_of = {member: node.name for node in graph.nodes for member in node.members}
    for pinned, tier in (constraints.pins or {}).items():
        name = pinned if pinned in index else block_of.get(pinned, pinned)
        if name not in index:
            raise PlanError(f"pinned node {pinned!r} is not in the graph of {graph.model}")
        if tier not in tiers:
            raise PlanError(f"node {name!r} is pinned to unknown tier {tier!r}")
        allowed[index[name]] &= np.array([x == tier for x in tiers])
        if not allowed[index[name]].any():
            raise PlanError(f"node {name!r} is pinned to {tier!r} but must stay on {tiers[0]!r}")

    private = _private_nodes(graph, index) if constraints.private_input else []
    links = topology.links
    power = topology.tiers[0].power
    return CostModel(
        node_names=names,
        tier_names=tiers,
        link_names=tuple(link.name for link in links),
        compute_ms=compute,
        out_bytes=out_bytes,
        param_bytes=param_bytes,
        work_bytes=work_bytes,
        edge_src=np.array(src, dtype=np.int64),
        edge_dst=np.array(dst, dtype=np.int64),
        input_nodes=np.array([index[name] for name in graph.inputs], dtype=np.int64),
        output_nodes=np.array(sorted({index[o] for o in graph.outputs}), dtype=np.int64),
        allowed=allowed,
        private_nodes=np.array(private, dtype=np.int64),
        # Mbit/s → ms per byte: 8 bits / (mbps * 1e6 bit/s) * 1e3 ms/s.
        up_ms_per_byte=np.array([8.0 / (link.bandwidth_mbps * 1e3) for link in links]),
        down_ms_per_byte=np.array([8.0 / (link.down_mbps * 1e3) for link in links]),
        rtt_ms=np.array([link.rtt_ms for link in links]),
        service_ms=np.array([float((service_ms or {}).get(t, 0.0)) for t in tiers]),
        link_weight=np.array([link.weight for link in links]),
        memory_bytes=np.array(
            [np.inf if tier.memory_bytes is None else tier.memory_bytes for tier in topology.tiers]
        ),
        active_w=None if power is None else power.active_w,
        idle_w=None if power is None else power.idle_w,
        transmit_w=None if power is None else power.transmit_w,
        slo_ms=constraints.slo_ms,
    )


def _private_nodes(graph: LayerGraph, index: Mapping[str, int]) -> list[int]:
    """Nodes that must run on the first tier so that the raw input never leaves it.

    Every consumer of an input must run there; a consumer that only moves data (zero
    FLOPs: view, flatten, getitem, pad …) does not hide the input, so its consumers must
    run there too.
    """
    consumers = graph.consumers
    frontier = list(graph.inputs)
    private: set[int] = set()
    while frontier:
        name = frontier.pop()
        for user in consumers[name]:
            if index[user] in private:
                continue
            private.add(index[user])
            if not _is_layer(graph[user].flops):
                frontier.append(user)
    return sorted(private)
