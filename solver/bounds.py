"""A proven lower bound on the step time of any valid plan.

Notation: a plan has M micro-batches; micro-batch m takes T_m = b1 + tau_m, tau_m the
largest load of its busy groups (a group of degree d running S loads sum_{i in S}
t(s_i, d)). The step is T = M b1 + T' with T' = sum_m tau_m. For a time budget x, let
r_i(x) = min over degrees d that hold s_i with t(s_i, d) <= x of d t(s_i, d) (the fewest
rank-seconds sequence i can cost if it must finish within x), R(x) = sum_i r_i(x), and
u_i = min_d t(s_i, d) its shortest time.

1. Micro-batch count: a micro-batch holds at most N C tokens and two sequences longer
   than N C / 2 never share one, so M >= M_min = max(ceil(sum s / (N C)), #{s > N C/2}).
2. Fluid: sequence i runs within its micro-batch's tau <= T', so it costs at least
   r_i(T') rank-seconds, and micro-batch m offers N tau_m rank-seconds (every busy group
   of degree d is busy for at most tau_m), so R(T') <= N T'.
3. Critical micro-batch: take a sequence c (one with a large u_c), its degree d and its
   micro-batch m*. tau_m* >= t(s_c, d), and the other sequences in m* hold at most
   N C - s_c tokens, so they bring at most K(T') rank-seconds, the most sum_j r_j(T') of
   sequences j != c within that many tokens (a fractional knapsack, which bounds the
   integral one). m* offers N tau_m* rank-seconds of which c and its filler use at most
   d t(s_c, d) + K(T'), and the rest of the work runs in the other micro-batches, so
   N T' >= R(T') - r_c(T') + max(N t(s_c, d) - K(T'), d t(s_c, d))
   for the degree d that c runs on: for the best one among those finishing it within T'.
Both right-hand sides fall as T' grows (more degrees are allowed), so the least T' that
meets them is found by bisection; T >= M_min b1 + that T'. The old closed forms (the
same with r_i(inf), i.e. no degree forced by the budget) are kept in the max: every term
is valid on its own.
"""

from __future__ import annotations

import numpy as np

from solver.cost import CostModel
from solver.spec import ClusterSpec
from solver.strategies.problem import Problem, build_problem, min_micro_batches

NUM_CRITICAL = 3
"""Sequences (longest shortest-time first) tried as the critical one; each gives a bound."""
BISECT_STEPS = 40


def lower_bound(lengths, spec: ClusterSpec, cost: CostModel) -> float:
    """Seconds no valid plan for this batch can beat (see the module docstring)."""
    from solver.planner import check_lengths

    arr = check_lengths(lengths, spec, cost)
    return problem_lower_bound(build_problem(arr, spec, cost))


def problem_lower_bound(prob: Problem) -> float:
    return float(min_micro_batches(prob) * prob.b1 + busy_lower_bound(prob))


def busy_lower_bound(prob: Problem) -> float:
    """Least T' (the step minus its b1 terms) any valid plan needs."""
    shortest = prob.shortest()
    n_ranks = prob.num_ranks
    room = n_ranks * prob.capacity
    criticals = np.argsort(-shortest, kind="stable")[:NUM_CRITICAL]

    def enough(x: float) -> bool:
        work = prob.budget_work(x)
        if not np.all(np.isfinite(work)):
            return False
        total = float(work.sum())
        need = total
        for c in criticals:
            filler = _most_work(work, prob.lengths, int(c), room - int(prob.lengths[c]))
            t_c = prob.times[c][np.isfinite(prob.rank_s[c]) & (prob.times[c] <= x)]  # its degrees within x
            d_c = prob.deg[np.isfinite(prob.rank_s[c]) & (prob.times[c] <= x)]
            busy_c = np.maximum(n_ranks * t_c - filler, d_c * t_c).min()  # best degree for c
            need = max(need, total - float(work[c]) + float(busy_c))
        return need <= n_ranks * x * (1 + 1e-12)

    lo = max(float(shortest.max()), float(prob.min_work().sum()) / n_ranks)
    lo = max(lo, _closed_form(prob, shortest, room))
    if enough(lo):
        return lo
    hi = 2 * lo
    while not enough(hi):
        lo, hi = hi, 2 * hi
    for _ in range(BISECT_STEPS):
        if hi - lo <= 1e-9 * hi:
            break
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if enough(mid) else (mid, hi)
    return lo  # the largest budget proven too small: still a valid bound


def _closed_form(prob: Problem, shortest: np.ndarray, room: int) -> float:
    """The critical bound with r_i(inf): T' >= u_c + (A - A_max) / N when the critical
    micro-batch cannot hold N u_c of work, A = sum of fewest rank-seconds."""
    work = prob.min_work()
    total, n_ranks = float(work.sum()), prob.num_ranks
    c = int(np.argmax(shortest))
    a_max = float(work[c]) + _most_work(work, prob.lengths, c, room - int(prob.lengths[c]))
    u = float(shortest[c])
    return total / n_ranks if a_max >= n_ranks * u else u + (total - a_max) / n_ranks


def _most_work(work: np.ndarray, lengths: np.ndarray, skip: int, token_room: int) -> float:
    """Fractional knapsack: most rank-seconds of sequences other than `skip` in token_room tokens."""
    if token_room <= 0:
        return 0.0
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
