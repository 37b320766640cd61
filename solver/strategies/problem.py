"""The planning problem every strategy shares: lengths, degrees, capacities, time tables.

A strategy turns a `Problem` into micro-batches of groups `(first_rank, degree, seq_ids)`;
`solver.planner.plan` wraps that into a validated `StepPlan`.

Candidate degrees are the usable Ulysses degrees (powers of two <= N dividing the head
count) that also respect node boundaries under consecutive placement: a degree d <=
ranks_per_node must divide ranks_per_node. With a power-of-two ranks_per_node (8 GPUs per
node, the usual case) that excludes nothing; with e.g. 6 ranks per node it drops d = 4,
whose aligned ranges would straddle nodes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from solver.cost import CostModel
from solver.spec import ClusterSpec

Group = tuple[int, int, list[int]]
"""(first_rank, degree, seq_ids) of one group in one micro-batch."""


def candidate_degrees(spec: ClusterSpec) -> tuple[int, ...]:
    rpn = spec.ranks_per_node
    return tuple(d for d in spec.degrees if d > rpn or rpn % d == 0)


@dataclass(frozen=True)
class Problem:
    lengths: np.ndarray
    """(n,) int64 sequence lengths in tokens."""
    spec: ClusterSpec
    cost: CostModel
    capacity: int
    """C: tokens one rank holds per micro-batch."""
    degrees: tuple[int, ...]
    """Candidate degrees, ascending."""
    min_degree_idx: np.ndarray
    """(n,) index into `degrees` of each sequence's smallest degree that holds it."""
    times: np.ndarray
    """(n, D) seconds of sequence i on a group of degrees[j] (without the group's b1)."""
    extras: dict = field(default_factory=dict)

    @property
    def num_ranks(self) -> int:
        return self.spec.num_ranks

    @property
    def n(self) -> int:
        return len(self.lengths)

    @property
    def b1(self) -> float:
        return self.cost.group_fixed_s

    def min_degree(self, i: int) -> int:
        return self.degrees[self.min_degree_idx[i]]

    def feasible_mask(self) -> np.ndarray:
        """(n, D) True where degree j can hold sequence i."""
        return np.arange(len(self.degrees))[None, :] >= self.min_degree_idx[:, None]

    def rank_seconds(self) -> np.ndarray:
        """(n, D) d * time: rank-seconds sequence i costs on degree j (inf if infeasible)."""
        rs = self.times * np.asarray(self.degrees, dtype=np.float64)[None, :]
        return np.where(self.feasible_mask(), rs, np.inf)

    def group_time(self, ids, degree: int) -> float:
        return self.cost.group_time_s(self.lengths[list(ids)], degree)


def build_problem(lengths: np.ndarray, spec: ClusterSpec, cost: CostModel) -> Problem:
    """Precompute the tables; assumes `lengths` passed `planner.check_lengths`."""
    degrees = candidate_degrees(spec)
    capacity = cost.token_capacity(spec)
    holds = np.asarray(degrees, dtype=np.int64)[None, :] * capacity  # (1, D) tokens per group
    min_idx = np.argmax(lengths[:, None] <= holds, axis=1)  # (n,) first degree that holds it
    times = np.stack([np.atleast_1d(cost.seq_time_s(lengths, d)) for d in degrees], axis=1)  # (n, D)
    return Problem(lengths, spec, cost, capacity, degrees, min_idx, times)


def place(degrees: list[int]) -> list[int]:
    """First ranks for groups of these degrees placed largest first, consecutively.

    Every group lands aligned: the ranks before it are covered by groups of larger or
    equal power-of-two degree, so its offset is a multiple of its own degree; with the
    candidate degrees (d | ranks_per_node or d > ranks_per_node) no small group straddles
    a node. Returns first ranks in the order of `degrees`.
    """
    order = sorted(range(len(degrees)), key=lambda g: -degrees[g])
    first = [0] * len(degrees)
    offset = 0
    for g in order:
        first[g] = offset
        offset += degrees[g]
    return first


def as_groups(degrees: list[int], members: list[list[int]]) -> list[Group]:
    """Groups with concrete aligned rank ranges from per-group degrees and members."""
    return [(r, d, sorted(ids)) for r, d, ids in zip(place(degrees), degrees, members)]


def min_micro_batches(prob: Problem) -> int:
    """Fewest micro-batches the token capacity allows: ceil(tokens / (N * C)), and at
    least the number of sequences longer than half a micro-batch's capacity (two such
    never share one)."""
    per_mb = prob.num_ranks * prob.capacity
    by_tokens = -(-int(prob.lengths.sum()) // per_mb)
    by_halves = int(np.count_nonzero(prob.lengths * 2 > per_mb))
    return max(1, by_tokens, by_halves)
