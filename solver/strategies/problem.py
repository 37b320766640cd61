"""The planning problem every strategy shares, and the result every strategy returns.

A strategy maps a `Problem` (lengths, degrees, capacities, time tables) to a
`StrategyResult` (micro-batches of groups `(first_rank, degree, seq_ids)`);
`solver.planner.plan` wraps that into a validated `StepPlan`.

Degrees are the spec's usable degrees. A shape (groups per degree) fits the cluster iff
for every degree d the groups of degree >= d cover at most `rank_caps[d]` ranks (the
node-aware limits of `solver.layout`); degree-1 groups take whatever ranks are left.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from solver import layout
from solver.cost import CostModel
from solver.spec import ClusterSpec

Group = tuple[int, int, list[int]]
"""(first_rank, degree, seq_ids) of one group in one micro-batch."""


@dataclass(frozen=True, kw_only=True)
class StrategyResult:
    micro_batches: list[list[Group]]
    """Per micro-batch, its groups; together they tile all ranks."""
    optimal: bool = False
    """The strategy proved the plan optimal for its own formulation."""
    time_limited: bool = False
    """A solver stopped at its time limit with an unproven solution."""
    info: dict = field(default_factory=dict)
    """Strategy-specific extras (plain JSON values)."""


@dataclass(frozen=True, kw_only=True)
class Problem:
    lengths: np.ndarray
    """(n,) int64 sequence lengths in tokens."""
    spec: ClusterSpec
    cost: CostModel
    capacity: int
    """C: tokens one rank holds per micro-batch."""
    degrees: tuple[int, ...]
    """Usable degrees, ascending (degrees[0] == 1)."""
    rank_caps: np.ndarray
    """(D,) most ranks groups of degree >= degrees[j] can cover at once."""
    min_degree_idx: np.ndarray
    """(n,) index into `degrees` of each sequence's smallest degree that holds it."""
    times: np.ndarray
    """(n, D) seconds of sequence i on a group of degrees[j] (without the group's b1)."""
    rank_s: np.ndarray
    """(n, D) degrees[j] * times[i, j]: rank-seconds; inf where degree j cannot hold i."""

    @property
    def num_ranks(self) -> int:
        return self.spec.num_ranks

    @property
    def n(self) -> int:
        return len(self.lengths)

    @property
    def b1(self) -> float:
        return self.cost.group_fixed_s

    @property
    def deg(self) -> np.ndarray:
        return np.asarray(self.degrees, dtype=np.int64)

    def subset(self, ids) -> "Problem":
        """The same cluster with only the sequences `ids` (local indices 0..len(ids)-1)."""
        ids = np.asarray(ids, dtype=np.int64)
        return replace(
            self, lengths=self.lengths[ids], min_degree_idx=self.min_degree_idx[ids],
            times=self.times[ids], rank_s=self.rank_s[ids],
        )

    def min_work(self) -> np.ndarray:
        """(n,) fewest rank-seconds each sequence can cost."""
        return self.rank_s.min(axis=1)

    def shortest(self) -> np.ndarray:
        """(n,) least seconds each sequence can take."""
        return np.where(np.isfinite(self.rank_s), self.times, np.inf).min(axis=1)

    def budget_work(self, budget: float) -> np.ndarray:
        """(n,) fewest rank-seconds of each sequence among the degrees that hold it and
        finish it within `budget` seconds (inf if none does)."""
        return np.where(self.times <= budget, self.rank_s, np.inf).min(axis=1)

    def fits(self, counts: np.ndarray) -> bool:
        """Whether groups `counts` per degree (counts[0] ignored: degree-1 groups fill
        the rest) can be placed on the cluster."""
        used = counts * self.deg
        used[0] = 0
        covered = np.cumsum(used[::-1])[::-1]  # (D,) ranks of groups of degree >= d
        return bool(np.all(covered <= self.rank_caps))


def build_problem(lengths: np.ndarray, spec: ClusterSpec, cost: CostModel) -> Problem:
    """Precompute the tables; assumes `lengths` passed `planner.check_lengths`."""
    degrees = spec.degrees
    capacity = cost.token_capacity(spec)
    deg = np.asarray(degrees, dtype=np.int64)
    holds = deg[None, :] * capacity  # (1, D) tokens per group
    min_idx = np.argmax(lengths[:, None] <= holds, axis=1)  # (n,) first degree that holds it
    times = np.stack([np.atleast_1d(cost.seq_time_s(lengths, d)) for d in degrees], axis=1)  # (n, D)
    feasible = np.arange(len(degrees))[None, :] >= min_idx[:, None]
    rank_s = np.where(feasible, times * deg[None, :], np.inf)
    caps = np.asarray([layout.capacity_at_least(spec, d) for d in degrees], dtype=np.int64)
    caps[0] = spec.num_ranks
    return Problem(
        lengths=lengths, spec=spec, cost=cost, capacity=capacity, degrees=degrees, rank_caps=caps,
        min_degree_idx=min_idx, times=times, rank_s=rank_s,
    )


def as_groups(spec: ClusterSpec, degrees: list[int], members: list[list[int]]) -> list[Group]:
    """Groups with concrete valid rank ranges from per-group degrees (> 1) and members;
    ranks no group covers become idle degree-1 groups. Raises if no placement exists
    (strategies only build shapes that `Problem.fits`)."""
    firsts = layout.place(spec, degrees)
    if firsts is None:
        raise AssertionError(f"shape {sorted(degrees, reverse=True)} does not fit the cluster layout")
    groups = [(r, d, sorted(ids)) for r, d, ids in zip(firsts, degrees, members)]
    groups += [(r, 1, []) for r in layout.fill_degree_one(spec, firsts, degrees)]
    return groups


def step_time(prob: Problem, micro_batches: list[list[Group]]) -> float:
    """Predicted seconds of a plan: per micro-batch, b1 plus its slowest busy group's load."""
    total = 0.0
    for mb in micro_batches:
        busy = [(d, ids) for _, d, ids in mb if ids]
        seqs = np.concatenate([np.asarray(ids, dtype=np.int64) for _, ids in busy])
        group = np.repeat(np.arange(len(busy)), [len(ids) for _, ids in busy])
        col = np.repeat([prob.degrees.index(d) for d, _ in busy], [len(ids) for _, ids in busy])
        loads = np.bincount(group, weights=prob.times[seqs, col], minlength=len(busy))
        total += prob.b1 + float(loads.max())
    return total


def min_micro_batches(prob: Problem) -> int:
    """Fewest micro-batches the token capacity allows: ceil(tokens / (N * C)), and at
    least the number of sequences longer than half a micro-batch's capacity (two such
    never share one)."""
    per_mb = prob.num_ranks * prob.capacity
    by_tokens = -(-int(prob.lengths.sum()) // per_mb)
    by_halves = int(np.count_nonzero(prob.lengths * 2 > per_mb))
    return max(1, by_tokens, by_halves)
