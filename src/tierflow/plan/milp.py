"""The optimal placement as a mixed-integer linear program, solved by HiGHS.

Encoding (docs/concepts.md, "How the planner solves it"): for node ``n`` and link ``l``
the binary ``z[n, l]`` is 1 when ``n`` runs above link ``l`` (on tier ``l + 1`` or
higher). Tier order is then ``z[n, l + 1] <= z[n, l]``, and "data only flows up" is
``z[u, l] <= z[v, l]`` for every edge ``u → v``: a closure structure, the multi-label
generalisation of the s-t min cut that DADS solves for two tiers. A continuous
``c[u, l] >= z[v, l] - z[u, l]`` marks that ``u``'s output crosses link ``l``, once
however many consumers sit above it. With the latency, bytes or throughput objective
and no memory constraint the LP relaxation is already integral, so HiGHS solves large
graphs at LP speed; memory and SLO rows make it a true MILP.

With early exits the costs are expectations: compute is weighted by each node's reach,
and every crossing and "used" indicator is split into reach levels with positive
weights (:mod:`tierflow.plan.expected_terms`), which keeps the same structure.

With activation codecs (docs/concepts.md, "Activation codecs in the cost model") a
binary ``y[k, l]`` says candidate ``k`` (a codec for one value) compresses that value on
link ``l``; ``Σ_k y[k, l] <= c[u, l]`` over the candidates of ``u``, and one row bounds the
summed accuracy drop. The budget row is a knapsack, so the LP may be fractional there and
the MILP fallback then decides. Without candidates the program is unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_array

from tierflow.errors import InfeasiblePlanError, PlanError
from tierflow.plan.cost_model import BYTES_PER_MB, CostModel, FloatArray, IntArray
from tierflow.plan.expected_terms import Terms, expected_terms, members
from tierflow.plan.objective import Objective

# HiGHS's default relative MIP gap (1e-4) would let it stop short of the optimum; the
# planner promises optimality for its cost model, so close the gap fully.
_MIP_GAP = 0.0
_INTEGRAL_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Solution:
    tiers: IntArray
    status: str
    objective_value: float
    method: str = "lp"
    codecs: IntArray | None = None  # [N, L] candidate compressing n's value on l; -1: raw


class _Program:
    """Variables, linear forms and constraint rows of one placement program."""

    def __init__(self, cost: CostModel, objective: Objective) -> None:
        self.cost = cost
        self.objective = objective
        n, links = cost.n_nodes, cost.n_tiers - 1
        self.n_links = links
        self.reach = cost.node_reach
        self.users = np.bincount(cost.edge_src, minlength=n)
        self.producers = np.flatnonzero(self.users > 0)  # values that may cross a link
        self.sinks = np.flatnonzero(self.users == 0)
        self.limited = np.flatnonzero(np.isfinite(cost.memory_bytes))
        if cost.expected:
            crossings, levels = expected_terms(cost, self.reach)
        else:  # one crossing per value and one "used" per link, with weight 1
            c_index = np.full(n, -1, dtype=np.int64)
            c_index[self.producers] = np.arange(len(self.producers))
            crossings = Terms(
                self.producers,
                np.ones(len(self.producers)),
                c_index[cost.edge_src],
                cost.edge_src,
                cost.edge_dst,
            )
            levels = Terms(
                np.zeros(1, dtype=np.int64),
                np.ones(1),
                np.zeros(len(self.sinks), dtype=np.int64),
                self.sinks,
                self.sinks,
            )
        self.crossings, self.levels = crossings, levels
        self.z0 = 0
        self.c0 = self.z0 + n * links
        self.used0 = self.c0 + len(crossings.weight) * links
        self.peak0 = self.used0 + len(levels.weight) * links
        self.period = self.peak0 + len(self.limited)
        self.y0 = self.period + 1
        self.n_codecs = cost.n_codecs
        if self.n_codecs and cost.expected:
            raise PlanError("activation codecs cannot be planned together with early exits")
        self.size = self.y0 + self.n_codecs * links
        self.rows: list[tuple[IntArray, IntArray, FloatArray]] = []
        self.lower: list[FloatArray] = []
        self.upper: list[FloatArray] = []
        self.n_rows = 0

    # -- variable indices -------------------------------------------------------------
    def z(self, nodes: IntArray | int, link: IntArray | int) -> IntArray:
        return np.asarray(self.z0 + np.asarray(nodes) * self.n_links + np.asarray(link))

    def c(self, terms: IntArray, link: int) -> IntArray:
        return np.asarray(self.c0 + np.asarray(terms) * self.n_links + link)

    def y(self, candidates: IntArray | int, link: int) -> IntArray:
        return np.asarray(self.y0 + np.asarray(candidates) * self.n_links + link)

    def used(self, levels: IntArray | int, link: int) -> IntArray:
        return np.asarray(self.used0 + np.asarray(levels) * self.n_links + link)

    def add_used(self, coef: FloatArray, link: int, weight: float) -> None:
        """Add ``weight · P(link used)`` to ``coef``: Σ_j Δλ_j · used[j, link]."""
        levels = np.arange(len(self.levels.weight))
        coef[self.used(levels, link)] += weight * self.levels.weight

    # -- linear forms: (coefficients over all variables, constant) ----------------------
    def form(self) -> tuple[FloatArray, float]:
        return np.zeros(self.size), 0.0

    def placed_on(self, tier: int, weights: FloatArray) -> tuple[FloatArray, float]:
        """Σ_n weights[n] · [node n runs on ``tier``], via x[n,t] = z[n,t-1] − z[n,t]."""
        coef, const = self.form()
        nodes = np.arange(self.cost.n_nodes)
        if tier == 0:
            const = float(weights.sum())
        else:
            np.add.at(coef, self.z(nodes, tier - 1), weights)
        if tier < self.n_links:
            np.add.at(coef, self.z(nodes, tier), -weights)
        return coef, const

    def compute_ms(self, tier: int) -> tuple[FloatArray, float]:
        weights = self.cost.compute_ms[:, tier]
        return self.placed_on(tier, weights * self.reach if self.cost.expected else weights)

    def busy_ms(self, tier: int) -> tuple[FloatArray, float]:
        """Compute on ``tier`` plus its service cost when it is on the request's path."""
        coef, const = self.compute_ms(tier)
        service = float(self.cost.service_ms[tier])
        if tier == 0:
            const += service
        else:  # tier t is on the path exactly when link t-1 is used
            self.add_used(coef, tier - 1, service)
        if self.n_codecs:  # a tier encodes what it sends up and decodes what it receives
            candidates = np.arange(self.n_codecs)
            if tier < self.n_links:
                coef[self.y(candidates, tier)] += self.cost.codec_encode_ms[:, tier]
            if tier > 0:
                coef[self.y(candidates, tier - 1)] += self.cost.codec_decode_ms[:, tier]
        return coef, const

    def up_bytes(self, link: int) -> FloatArray:
        coef, _ = self.form()
        terms = self.crossings
        coef[self.c(np.arange(len(terms.weight)), link)] = (
            self.cost.out_bytes[terms.node] * terms.weight
        )
        if self.n_codecs:  # a compressed value sends ratio · its bytes instead of all of them
            cost = self.cost
            coef[self.y(np.arange(self.n_codecs), link)] = -cost.out_bytes[cost.codec_node] * (
                1.0 - cost.codec_ratio
            )
        return coef

    def down_bytes(self, link: int) -> FloatArray:
        cost = self.cost
        coef, _ = self.form()
        outputs = cost.output_nodes
        returned = cost.out_bytes[outputs]
        if cost.expected:  # the final output returns when reached, logits when answered
            returned = returned * self.reach[outputs]
            exit_bytes = cost.exit_out_bytes * cost.exit_rates
            np.add.at(coef, self.z(cost.exit_nodes, link), exit_bytes)
        np.add.at(coef, self.z(outputs, link), returned)
        return coef

    def latency(self) -> tuple[FloatArray, float]:
        coef, const = self.form()
        for tier in range(self.cost.n_tiers):
            tier_coef, tier_const = self.busy_ms(tier)
            coef += tier_coef
            const += tier_const
        for link in range(self.n_links):
            coef += self.up_bytes(link) * self.cost.up_ms_per_byte[link]
            coef += self.down_bytes(link) * self.cost.down_ms_per_byte[link]
            self.add_used(coef, link, float(self.cost.rtt_ms[link]))
        return coef, const

    def energy(self) -> tuple[FloatArray, float]:
        cost = self.cost
        if not cost.has_power:
            raise PlanError(
                f"the energy objective needs tiers.0.power ({cost.tier_names[0]}) in the topology"
            )
        assert cost.active_w is not None and cost.idle_w is not None
        assert cost.transmit_w is not None
        latency, latency_const = self.latency()
        compute, compute_const = self.busy_ms(0)
        radio, _ = self.form()
        if self.n_links:
            radio = (
                self.up_bytes(0) * cost.up_ms_per_byte[0]
                + self.down_bytes(0) * cost.down_ms_per_byte[0]
            )
        # E = P_active·T_compute + P_tx·T_radio + P_idle·(T_total − T_compute − T_radio)
        coef = (
            (cost.active_w - cost.idle_w) * compute
            + (cost.transmit_w - cost.idle_w) * radio
            + cost.idle_w * latency
        )
        const = (cost.active_w - cost.idle_w) * compute_const + cost.idle_w * latency_const
        return coef, const

    def bytes_mb(self) -> FloatArray:
        coef, _ = self.form()
        for link in range(self.n_links):
            weight = self.cost.link_weight[link] / BYTES_PER_MB
            coef += weight * (self.up_bytes(link) + self.down_bytes(link))
        return coef

    # -- constraints --------------------------------------------------------------------
    def add_rows(
        self, rows: IntArray, cols: IntArray, vals: FloatArray, lower: FloatArray, upper: FloatArray
    ) -> None:
        self.rows.append((rows + self.n_rows, cols, vals))
        self.lower.append(lower)
        self.upper.append(upper)
        self.n_rows += len(lower)

    def add_pairs(self, a: IntArray, b: IntArray, upper: float = 0.0) -> None:
        """Rows ``x[a_i] − x[b_i] <= upper`` for each i."""
        count = len(a)
        rows = np.repeat(np.arange(count), 2)
        cols = np.stack([a, b], axis=1).ravel()
        vals = np.tile([1.0, -1.0], count)
        self.add_rows(rows, cols, vals, np.full(count, -np.inf), np.full(count, upper))

    def add_form(self, coef: FloatArray, lower: float, upper: float) -> None:
        cols = np.flatnonzero(coef)
        self.add_rows(
            np.zeros(len(cols), dtype=np.int64),
            cols,
            coef[cols],
            np.array([lower]),
            np.array([upper]),
        )

    def build(self) -> tuple[FloatArray, float]:
        cost, links = self.cost, self.n_links
        nodes = np.arange(cost.n_nodes)
        src, dst = cost.edge_src, cost.edge_dst
        for link in range(links):
            if link + 1 < links:  # tier order: above link l+1 implies above link l
                self.add_pairs(self.z(nodes, link + 1), self.z(nodes, link))
            self.add_pairs(self.z(src, link), self.z(dst, link))  # data only flows up
            # u's value crosses link l if any consumer runs above it: c ≥ z[v] − z[u].
            terms = self.crossings
            count = len(terms.row_term)
            rows = np.repeat(np.arange(count), 3)
            cols = np.stack(
                [
                    self.z(terms.row_node, link),
                    self.z(terms.row_producer, link),
                    self.c(terms.row_term, link),
                ],
                1,
            ).ravel()
            vals = np.tile([1.0, -1.0, -1.0], count)
            self.add_rows(rows, cols, vals, np.full(count, -np.inf), np.zeros(count))
            # A link is used if any node is above it (at reach level j: used[j] ≥ z[n]).
            self.add_pairs(
                self.z(self.levels.row_node, link), self.used(self.levels.row_term, link)
            )

        objective, const = self.form()
        for criterion, weight in self.objective.weights:
            if weight == 0:
                continue
            if criterion == "latency":
                coef, form_const = self.latency()
            elif criterion == "energy":
                coef, form_const = self.energy()
            elif criterion == "bytes":
                coef, form_const = self.bytes_mb(), 0.0
            else:
                coef, _ = self.form()
                coef[self.period] = 1.0
                form_const = 0.0
                self.add_throughput_rows()
            objective += weight * coef
            const += weight * form_const

        # With codecs, c must be exact: y <= c would otherwise let a value that does not
        # cross "compress" itself whenever that looks cheap.
        if np.any(objective[self.c0 : self.peak0] < 0) or self.n_codecs:
            self.add_exactness_rows()
        self.add_codec_rows()
        self.add_memory_rows()
        if cost.slo_ms is not None:
            latency, latency_const = self.latency()
            self.add_form(latency, -np.inf, cost.slo_ms - latency_const)
        return objective, const

    def add_throughput_rows(self) -> None:
        for tier in range(self.cost.n_tiers):
            coef, const = self.busy_ms(tier)
            coef[self.period] = -1.0
            self.add_form(coef, -np.inf, -const)
        for link in range(self.n_links):
            for coef in (
                self.up_bytes(link) * self.cost.up_ms_per_byte[link],
                self.down_bytes(link) * self.cost.down_ms_per_byte[link],
            ):
                coef[self.period] = -1.0
                self.add_form(coef, -np.inf, 0.0)

    def add_codec_rows(self) -> None:
        """At most one codec per crossing value and link, and the accuracy budget row."""
        cost = self.cost
        if not self.n_codecs:
            return
        c_index = np.full(cost.n_nodes, -1, dtype=np.int64)
        c_index[self.crossings.node] = np.arange(len(self.crossings.node))
        candidates = np.flatnonzero(c_index[cost.codec_node] >= 0)  # others are bound to 0
        for link in range(self.n_links):
            for u in np.unique(cost.codec_node[candidates]):  # Σ_k y[k, l] − c[u, l] <= 0
                own = candidates[cost.codec_node[candidates] == u]
                self.add_rows(
                    np.zeros(len(own) + 1, dtype=np.int64),
                    np.concatenate([self.y(own, link), self.c(c_index[u : u + 1], link)]),
                    np.concatenate([np.ones(len(own)), [-1.0]]),
                    np.array([-np.inf]),
                    np.array([0.0]),
                )
        if cost.max_codec_drop_pp is not None:
            coef, _ = self.form()
            for link in range(self.n_links):
                coef[self.y(np.arange(self.n_codecs), link)] = cost.codec_drop_pp
            self.add_form(coef, -np.inf, cost.max_codec_drop_pp)

    def add_exactness_rows(self) -> None:
        """Pin c and used to their exact values when the objective would inflate them.

        Only an energy objective with idle power above active or transmit power rewards a
        larger c or used; the extra rows make c = max_v z[v] − z[u] and used = max z exact.
        """
        crossings, levels = self.crossings, self.levels
        crossing_users = members(crossings)
        level_nodes = members(levels)
        for link in range(self.n_links):
            for term, u in enumerate(crossings.node):  # c + z[u,l] <= 1 and c <= Σ_v z[v,l]
                cu = int(self.c(np.array([term]), link)[0])
                zu = int(self.z(int(u), link))
                self.add_rows(
                    np.zeros(2, dtype=np.int64),
                    np.array([cu, zu]),
                    np.ones(2),
                    np.array([-np.inf]),
                    np.array([1.0]),
                )
                self.add_at_most_any(cu, self.z(crossing_users[term], link))
            for level in range(len(levels.weight)):
                self.add_at_most_any(int(self.used(level, link)), self.z(level_nodes[level], link))

    def add_at_most_any(self, var: int, zs: IntArray) -> None:
        """Row ``x[var] <= Σ zs``: the indicator is 0 unless one of ``zs`` is 1."""
        self.add_rows(
            np.zeros(len(zs) + 1, dtype=np.int64),
            np.concatenate([[var], zs]),
            np.concatenate([[1.0], -np.ones(len(zs))]),
            np.array([-np.inf]),
            np.array([0.0]),
        )

    def add_memory_rows(self) -> None:
        cost = self.cost
        mib = float(2**20)  # rows in MiB keep the coefficients well scaled
        for k, tier in enumerate(int(t) for t in self.limited):
            params, params_const = self.placed_on(tier, cost.tier_param_bytes(tier) / mib)
            params[self.peak0 + k] = 1.0
            self.add_form(params, -np.inf, cost.memory_bytes[tier] / mib - params_const)
            self.add_work_rows(tier, self.peak0 + k, cost.work_bytes / mib)

    def add_work_rows(self, tier: int, peak: int, work: FloatArray) -> None:
        """Rows ``work[n] · x[n, tier] − peak <= 0``: the tier's peak covers every node on it."""
        n = self.cost.n_nodes
        nodes = np.arange(n)
        rows, cols, vals = [nodes], [np.full(n, peak)], [np.full(n, -1.0)]
        upper = np.zeros(n)
        if tier == 0:
            upper = -work  # work · (1 − z[n,0]) − peak <= 0
        else:
            rows.append(nodes)
            cols.append(self.z(nodes, tier - 1))
            vals.append(work)
        if tier < self.n_links:
            rows.append(nodes)
            cols.append(self.z(nodes, tier))
            vals.append(-work)
        self.add_rows(
            np.concatenate(rows),
            np.concatenate(cols),
            np.concatenate(vals),
            np.full(n, -np.inf),
            upper,
        )

    def bounds(self) -> Bounds:
        cost, links = self.cost, self.n_links
        lower = np.zeros(self.size)
        upper = np.ones(self.size)
        upper[self.peak0 : self.y0] = np.inf
        if self.n_codecs:  # a value that never crosses a link has no codec
            lone = np.flatnonzero(self.users[cost.codec_node] == 0)
            for link in range(links):
                upper[self.y(lone, link)] = 0.0
        for node in range(cost.n_nodes):
            allowed = np.flatnonzero(cost.allowed[node])
            if len(allowed) == 0:
                raise InfeasiblePlanError(f"node {cost.node_names[node]} may run on no tier")
            lowest, highest = int(allowed[0]), int(allowed[-1])
            lower[self.z(node, np.arange(lowest))] = 1.0  # at least on tier `lowest`
            upper[self.z(node, np.arange(highest, links))] = 0.0  # at most on `highest`
            for tier in range(lowest + 1, highest):
                if not cost.allowed[node, tier]:  # x[n,t] = z[n,t-1] − z[n,t] = 0
                    pair = self.z(node, np.array([tier - 1, tier]))
                    self.add_rows(
                        np.zeros(2, dtype=np.int64),
                        pair,
                        np.array([1.0, -1.0]),
                        np.zeros(1),
                        np.zeros(1),
                    )
        if len(cost.private_nodes):
            upper[self.z(cost.private_nodes, 0)] = 0.0
        return Bounds(lower, upper)


def solve(
    cost: CostModel,
    objective: Objective,
    *,
    time_limit_s: float | None = None,
    lp_first: bool = True,
) -> Solution:
    """Find the assignment minimising ``objective`` subject to the cost model's constraints.

    Raises
    ------
    InfeasiblePlanError
        When no assignment satisfies the constraints.

    ``lp_first=False`` skips the LP relaxation and goes straight to the MILP (only the
    benchmark uses it, to measure what solving the LP first saves).
    """
    if cost.n_tiers == 1:
        if not cost.allowed[:, 0].all() and cost.n_nodes:
            raise InfeasiblePlanError("a node is pinned to a tier that does not exist")
        return Solution(np.zeros(cost.n_nodes, dtype=np.int64), "optimal", float("nan"), "trivial")
    program = _Program(cost, objective)
    bounds = program.bounds()
    c, const = program.build()
    rows = np.concatenate([r for r, _, _ in program.rows])
    cols = np.concatenate([k for _, k, _ in program.rows])
    vals = np.concatenate([v for _, _, v in program.rows])
    matrix = coo_array((vals, (rows, cols)), shape=(program.n_rows, program.size)).tocsr()
    constraints = LinearConstraint(
        matrix, np.concatenate(program.lower), np.concatenate(program.upper)
    )
    # LP relaxation first. An integral LP optimum is also optimal for the MILP (its value
    # bounds the MILP's from below), and without memory or SLO rows the program is a
    # closure problem whose LP optimum is integral: ~10 ms instead of ~500 ms of MIP
    # presolve on a 500-node graph (docs/benchmarks.md).
    if lp_first:
        relaxed = milp(
            c, bounds=bounds, constraints=constraints, options=_options(time_limit_s, False)
        )
        if relaxed.status == 2:
            raise InfeasiblePlanError("no placement satisfies the constraints")
    if lp_first and relaxed.x is not None and relaxed.status == 0:
        z = relaxed.x[program.z0 : program.c0]
        y = relaxed.x[program.y0 :]
        if np.all(np.abs(z - np.round(z)) <= _INTEGRAL_TOLERANCE) and np.all(
            np.abs(y - np.round(y)) <= _INTEGRAL_TOLERANCE
        ):
            value = float(relaxed.fun + const)
            return _solution(relaxed.x, program, "optimal", value, "lp")
    integrality = np.zeros(program.size)
    integrality[program.z0 : program.c0] = 1
    integrality[program.y0 :] = 1
    result = milp(
        c,
        integrality=integrality,
        bounds=bounds,
        constraints=constraints,
        options=_options(time_limit_s, True),
    )
    if result.status == 2:
        raise InfeasiblePlanError("no placement satisfies the constraints")
    if result.x is None:
        raise PlanError(f"the MILP solver stopped without a placement: {result.message}")
    status = (
        "optimal" if result.status == 0 else f"best found, not proven optimal ({result.message})"
    )
    return _solution(result.x, program, status, float(result.fun + const), "milp")


def _options(time_limit_s: float | None, integer: bool) -> dict[str, float | bool]:
    options: dict[str, float | bool] = {"presolve": True}
    if integer:
        options["mip_rel_gap"] = _MIP_GAP
    if time_limit_s is not None:
        options["time_limit"] = time_limit_s
    return options


def _solution(x: FloatArray, program: _Program, status: str, value: float, method: str) -> Solution:
    cost, n_links = program.cost, program.n_links
    z = x[program.z0 : program.c0]
    tiers = np.round(z).reshape(cost.n_nodes, n_links).sum(axis=1).astype(np.int64)
    if not program.n_codecs:
        return Solution(tiers, status, value, method)
    chosen = np.round(x[program.y0 :]).reshape(program.n_codecs, n_links) > 0.5
    codecs = np.full((cost.n_nodes, n_links), -1, dtype=np.int64)
    for k, link in zip(*np.nonzero(chosen), strict=True):
        codecs[cost.codec_node[k], link] = k
    return Solution(tiers, status, value, method, codecs)
