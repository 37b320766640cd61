"""The `flexsp` MILP for one micro-batch, with identical groups collapsed into counts.

FlexSP's MILP has one slot per candidate group (N/d slots of every degree d) and one
integer per (bucket, slot): ~127 slots x 16 buckets at N=64, highly symmetric, and HiGHS
stays at the root with a 75-83% gap. Here groups of one degree are interchangeable, so
the model keeps only how many groups each degree has and how many sequences of each
bucket run at each degree; the within-degree assignment is left to the exact-length
polish (`flexsp.py`). That removes the slot symmetry altogether.

Buckets represent their members by the bucket's *shortest* length and never straddle a
degree's capacity, so every plan of the micro-batch maps to a feasible point of the model
with a busy time no larger than its own: the model's optimum, and HiGHS's dual bound at
any time limit, is a proven lower bound on the micro-batch.

    min  tau
    s.t. sum_j n[k,j] = count_k                                  every sequence runs
         sum_k n[k,j] t(L_k, d_j) <= y_j tau         (j >= 1)    work of degree j's groups
         sum_k n[k,0] t(L_k, 1) <= (N - sum_j d_j y_j) tau       spare ranks are degree-1 groups
         sum_k n[k,j] L_k <= d_j C y_j                           tokens (degree 1: spare ranks)
         sum_{j' >= j} d_j' y_j' <= caps_j                       node-aware layout
         n[k,j] <= count_k u[k,j],  t(L_k, d_j) u[k,j] <= tau    a bucket used at j finishes in tau
         sum_{k,j} n[k,j] d_j t(L_k, d_j) <= N tau               aggregate work cut
         #{bucket-k sequences at j with t > UB/2} <= y_j          one such per group (tau <= UB)
         LB <= tau <= UB                                          the proven bound, the warm start
y_j tau is exact through y_j = sum_b 2^b z[j,b] and w[j,b] = z[j,b] tau (McCormick with
tau <= UB). n, y integer; z, u binary.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pulp

from solver.strategies.blaster import bucket_bounds
from solver.strategies.highs import BulkHiGHS
from solver.strategies.problem import Problem


@dataclass(frozen=True)
class Buckets:
    lower: np.ndarray
    """(K,) each bucket's shortest length (its representative)."""
    of: np.ndarray
    """(m,) bucket of each sequence."""
    counts: np.ndarray
    """(K,) sequences per bucket."""
    min_idx: np.ndarray
    """(K,) smallest degree index holding the bucket (the same for all its members)."""
    times: np.ndarray
    """(K, D) t(L_k, d_j)."""


@dataclass(frozen=True)
class MilpResult:
    groups: np.ndarray
    """(D,) groups per degree (index 0: unused, spare ranks are degree-1 groups)."""
    split: np.ndarray
    """(K, D) sequences of each bucket at each degree."""
    busy_s: float
    """The incumbent's tau."""
    bound_s: float
    """HiGHS's proven lower bound on tau."""
    status: str
    """'optimal', 'time_limited' (incumbent, gap open) or 'warm_start' (nothing better found)."""
    seconds: float


def make_buckets(sub: Problem, num_buckets: int) -> Buckets:
    """FlexSP's padding-minimising DP buckets, mirrored to lower representatives, split at
    every degree's capacity so members share their smallest degree."""
    lower = -bucket_bounds(-sub.lengths, num_buckets)[::-1]  # ascending bucket minima
    edges = sub.deg[:-1] * sub.capacity + 1  # shortest length needing each next degree
    present = [e for e in edges if np.any(sub.lengths >= e) and np.any(sub.lengths < e)]
    for e in present:
        if not np.any(lower == e):
            above = sub.lengths[sub.lengths >= e]
            lower = np.union1d(lower, [int(above.min())])
    of = np.searchsorted(lower, sub.lengths, side="right") - 1
    counts = np.bincount(of, minlength=len(lower))
    keep = counts > 0
    lower, remap = lower[keep], np.cumsum(keep) - 1
    of, counts = remap[of], counts[keep]
    min_idx = np.zeros(len(lower), dtype=np.int64)
    np.maximum.at(min_idx, of, sub.min_degree_idx)
    times = np.stack([np.atleast_1d(sub.cost.seq_time_s(lower, d)) for d in sub.degrees], axis=1)
    return Buckets(lower, of, counts, min_idx, times)


def solve(sub: Problem, bk: Buckets, start: tuple[np.ndarray, np.ndarray], ub: float, lb: float, *,
          time_limit_s: float, mip_rel_gap: float) -> MilpResult:
    """Solve the model from the warm start (groups, split) whose busy time is `ub`."""
    model, v = _build(sub, bk, ub, lb)
    _set_start(v, sub, bk, start, ub)
    began = time.perf_counter()
    model.solve(BulkHiGHS(warm_start=True, timeLimit=time_limit_s, gapRel=mip_rel_gap))
    seconds = time.perf_counter() - began
    bound = max(lb, float(model.solverModel.getInfo().mip_dual_bound))
    if model.sol_status == pulp.LpSolutionOptimal:
        status = "optimal"
    elif model.sol_status == pulp.LpSolutionIntegerFeasible:
        status = "time_limited"
    else:
        return MilpResult(start[0], start[1], ub, min(bound, ub), "warm_start", seconds)
    groups = np.asarray([0] + [int(round(y.value() or 0)) for y in v["y"][1:]], dtype=np.int64)
    split = np.zeros_like(start[1])
    for (k, j), var in v["n"].items():
        split[k, j] = int(round(var.value() or 0))
    busy = float(v["tau"].value())
    return MilpResult(groups, split, busy, min(bound, busy), status, seconds)


def _build(sub: Problem, bk: Buckets, ub: float, lb: float):
    num_d, n_ranks, cap = len(sub.degrees), sub.num_ranks, sub.capacity
    model = pulp.LpProblem("flexsp_micro_batch", pulp.LpMinimize)
    tau = model.add_variable("tau", lowBound=lb, upBound=ub)
    n = {(k, j): model.add_variable(f"n_{k}_{j}", 0, int(bk.counts[k]), cat=pulp.LpInteger)
         for k in range(len(bk.counts)) for j in range(int(bk.min_idx[k]), num_d)}
    u = {kj: model.add_variable(f"u_{kj[0]}_{kj[1]}", cat=pulp.LpBinary) for kj in n}
    y = [None] + [model.add_variable(f"y_{j}", 0, int(sub.rank_caps[j]) // sub.degrees[j], cat=pulp.LpInteger)
                  for j in range(1, num_d)]
    z, w, y_tau = {}, {}, [None]
    for j in range(1, num_d):
        top = int(sub.rank_caps[j]) // sub.degrees[j]
        bits = range(max(1, top.bit_length()))
        z.update({(j, b): model.add_variable(f"z_{j}_{b}", cat=pulp.LpBinary) for b in bits})
        w.update({(j, b): model.add_variable(f"w_{j}_{b}", 0, ub) for b in bits})
        model += y[j] == pulp.lpSum((1 << b) * z[j, b] for b in bits), f"bits_{j}"
        for b in bits:  # w = z tau
            model += w[j, b] <= tau, f"w_le_tau_{j}_{b}"
            model += w[j, b] <= ub * z[j, b], f"w_le_z_{j}_{b}"
            model += w[j, b] >= tau - ub * (1 - z[j, b]), f"w_ge_{j}_{b}"
        y_tau.append(pulp.lpSum((1 << b) * w[j, b] for b in bits))
    model += pulp.LpAffineExpression({tau: 1.0})
    spare_ranks = n_ranks - pulp.lpSum(sub.degrees[j] * y[j] for j in range(1, num_d))
    spare_tau = n_ranks * tau - pulp.lpSum(sub.degrees[j] * y_tau[j] for j in range(1, num_d))
    for k in range(len(bk.counts)):
        model += pulp.lpSum(n[k, j] for j in range(int(bk.min_idx[k]), num_d)) == int(bk.counts[k]), f"assign_{k}"
    for j in range(num_d):
        at_j = [k for k in range(len(bk.counts)) if (k, j) in n]
        work = pulp.lpSum(float(bk.times[k, j]) * n[k, j] for k in at_j)
        tokens = pulp.lpSum(int(bk.lower[k]) * n[k, j] for k in at_j)
        model += work <= (y_tau[j] if j else spare_tau), f"time_{j}"
        model += tokens <= (sub.degrees[j] * cap * y[j] if j else cap * spare_ranks), f"tokens_{j}"
        big = [k for k in at_j if bk.times[k, j] > 0.5 * ub]
        if big:
            model += pulp.lpSum(n[k, j] for k in big) <= (y[j] if j else spare_ranks), f"one_big_per_group_{j}"
        if j:
            model += pulp.lpSum(sub.degrees[jj] * y[jj] for jj in range(j, num_d)) <= int(sub.rank_caps[j]), f"caps_{j}"
    for (k, j), var in n.items():
        model += var <= int(bk.counts[k]) * u[k, j], f"used_{k}_{j}"
        model += float(bk.times[k, j]) * u[k, j] <= tau, f"late_{k}_{j}"
        model += (u[k, j] <= y[j] if j else u[k, j] <= spare_ranks), f"group_{k}_{j}"
    model += pulp.lpSum(sub.degrees[j] * float(bk.times[k, j]) * var for (k, j), var in n.items()) <= n_ranks * tau, "aggregate"
    return model, {"tau": tau, "n": n, "u": u, "y": y, "z": z, "w": w}


def _set_start(v, sub: Problem, bk: Buckets, start, ub: float) -> None:
    groups, split = start
    v["tau"].setInitialValue(ub)
    for (k, j), var in v["n"].items():
        var.setInitialValue(int(split[k, j]))
        v["u"][k, j].setInitialValue(1 if split[k, j] > 0 else 0)
    for j in range(1, len(sub.degrees)):
        v["y"][j].setInitialValue(int(groups[j]))
    for (j, b), var in v["z"].items():
        bit = (int(groups[j]) >> b) & 1
        var.setInitialValue(bit)
        v["w"][j, b].setInitialValue(ub * bit)
