"""A proven lower bound on the step time of any valid plan.

Notation: a plan has M non-empty micro-batches; micro-batch m takes T_m = max over its
groups of t_g, where a group of degree d running sequences S takes
t_g = b1 + sum_{i in S} t(s_i, d) (idle groups take 0). Let r_i = min_d d * t(s_i, d)
over the degrees that hold s_i (the fewest rank-seconds sequence i can cost) and
u_i = min_d t(s_i, d) (the shortest time it can take).

1. Work: let U <= N be the ranks of the busy groups of micro-batch m. Every busy group
   has t_g <= T_m, so U * T_m >= sum_busy d_g * t_g = U * b1 + sum_{i in m} d_g(i) *
   t(s_i, d_g(i)) >= U * b1 + sum_{i in m} r_i, hence T_m >= b1 + A_m / N with
   A_m = sum_{i in m} r_i.
2. Critical sequence: the group running i takes at least b1 + u_i, so
   T_m >= b1 + max_{i in m} u_i.
3. Micro-batch count: a micro-batch holds at most N * C tokens (each group at most
   d * C, degrees sum to N), and two sequences longer than N * C / 2 never share one, so
   M >= M_min = max(ceil(sum s / (N C)), #{s > N C / 2}).

Summing T_m >= b1 + max(A_m / N, B_m) over m:
T >= M * b1 + sum_m max(A_m / N, B_m) >= M_min * b1 + max(sum_i r_i / N, max_i u_i).

4. Tokens cap the critical micro-batch: let i* maximise u_i and m* hold it, a = A_m*.
   Then T >= M * b1 + max(u_i*, a / N) + (A - a) / N with A = sum_i r_i. The right side
   falls in a while a <= N u_i* and is flat (A / N) after, and a <= A_max: r_i* plus the
   most rank-seconds other sequences can bring within the N * C - s_i* tokens left (a
   fractional knapsack, largest r_j / s_j first, bounds the integral one). So
   T >= M_min * b1 + (A / N if A_max >= N u_i* else u_i* + (A - A_max) / N).
"""

from __future__ import annotations

import numpy as np

from solver.cost import CostModel
from solver.spec import ClusterSpec
from solver.strategies.problem import Problem, build_problem, min_micro_batches


def lower_bound(lengths, spec: ClusterSpec, cost: CostModel) -> float:
    """Seconds no valid plan for this batch can beat (see the module docstring)."""
    from solver.planner import check_lengths

    arr = check_lengths(lengths, spec, cost)
    return problem_lower_bound(build_problem(arr, spec, cost))


def problem_lower_bound(prob: Problem) -> float:
    # every usable degree counts here, also those the strategies skip to keep
    # consecutive placement node-aligned, so the bound holds for any valid plan
    degrees = np.asarray(prob.spec.degrees, dtype=np.int64)
    lengths = prob.lengths
    times = np.stack([np.atleast_1d(prob.cost.seq_time_s(lengths, int(d))) for d in degrees], axis=1)  # (n, D)
    holds = lengths[:, None] <= degrees[None, :] * prob.capacity  # (n, D)
    shortest = np.where(holds, times, np.inf).min(axis=1)  # (n,) u_i
    work = np.where(holds, times * degrees[None, :], np.inf).min(axis=1)  # (n,) r_i
    m_min = min_micro_batches(prob)
    total, n_ranks = float(work.sum()), prob.num_ranks
    basic = max(total / n_ranks, float(shortest.max()))
    critical = int(np.argmax(shortest))
    a_max = work[critical] + _most_work(work, lengths, critical, n_ranks * prob.capacity - int(lengths[critical]))
    u = float(shortest[critical])
    capped = total / n_ranks if a_max >= n_ranks * u else u + (total - a_max) / n_ranks
    return float(m_min * prob.b1 + max(basic, capped))


def _most_work(work: np.ndarray, lengths: np.ndarray, skip: int, token_room: int) -> float:
    """Fractional knapsack: most rank-seconds of sequences other than `skip` in token_room tokens."""
    others = np.delete(np.arange(len(work)), skip)
    density = work[others] / lengths[others]
    order = others[np.argsort(-density, kind="stable")]
    tokens = np.cumsum(lengths[order])  # (n-1,)
    full = int(np.searchsorted(tokens, token_room, side="right"))  # whole sequences that fit
    got = float(work[order[:full]].sum())
    if full < len(order):
        left = token_room - (int(tokens[full - 1]) if full else 0)
        got += float(work[order[full]]) * left / float(lengths[order[full]])
    return got
