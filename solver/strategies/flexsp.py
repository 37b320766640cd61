"""`flexsp`: the FlexSP planner (arXiv 2412.01523), faithful to the paper's pipeline.

1. Sequence Blaster: sort, cut into M = M0 .. M0 + k micro-batches (linear-partition DP,
   `blaster.blast`), keep the M whose plan is fastest.
2. Per micro-batch, DP bucketing (`blaster.bucket_bounds`): each length is represented
   by its bucket's upper bound, for both time and memory (so any concrete assignment of
   a bucket's sequences is at least as fast and as small as the MILP thinks).
3. The MILP over candidate groups p (N/d slots of every candidate degree d):
       min T
       s.t.  sum_p n[k,p] = count_k                             every bucket assigned
             n[k,p] = 0 unless d_p >= min degree of bucket k     (variable not created)
             sum_k U_k n[k,p] <= d_p C used[p]                   token capacity
             b1 used[p] + sum_k t(U_k, d_p) n[k,p] <= T          makespan
             sum_p d_p used[p] = N                               exact tiling
             used[p] >= used[p+1] for slots of one degree        symmetry breaking
   n integer, used binary, T continuous; solved by HiGHS (`WarmHiGHS`, one thread) with
   a time limit and a warm start from the greedy shape-and-assign on bucketed lengths.
   A time-limited stop with an incumbent is detected from `problem.sol_status`
   (`LpSolutionIntegerFeasible` vs `LpSolutionOptimal`).
4. Used slots become aligned rank ranges (largest degree first, consecutive), and each
   bucket's sequences are dealt to the slots in the MILP's counts.
"""

from __future__ import annotations

import time

import numpy as np
import pulp

from solver.strategies.blaster import blast, bucket_bounds
from solver.strategies.fast import shape_and_assign
from solver.strategies.highs import WarmHiGHS
from solver.strategies.problem import Group, Problem, as_groups, min_micro_batches


def plan_flexsp(
    prob: Problem,
    *,
    solve_time_limit_s: float = 5.0,
    num_extra_micro_batches: int = 1,
    num_buckets: int = 16,
    mip_rel_gap: float = 1e-4,
) -> dict:
    """Returns {"micro_batches", "optimal", "time_limited", "info"}. `solve_time_limit_s`
    bounds each micro-batch's MILP."""
    if solve_time_limit_s <= 0:
        raise ValueError(f"solve_time_limit_s must be > 0, got {solve_time_limit_s}")
    if num_extra_micro_batches < 0 or num_buckets < 1 or not 0 <= mip_rel_gap < 1:
        raise ValueError(
            f"need num_extra_micro_batches >= 0 (got {num_extra_micro_batches}), num_buckets >= 1 "
            f"(got {num_buckets}) and 0 <= mip_rel_gap < 1 (got {mip_rel_gap})"
        )
    order = np.argsort(prob.lengths, kind="stable")
    work = prob.rank_seconds().min(axis=1)
    cap = prob.num_ranks * prob.capacity
    m0 = min_micro_batches(prob)
    best, tried = None, []
    for m in range(m0, prob.n + 1):
        chunks = blast(order, work, prob.lengths, m, cap)
        result = None if chunks is None else _solve_chunks(prob, chunks, solve_time_limit_s, num_buckets, mip_rel_gap)
        if result is not None:
            tried.append({"num_micro_batches": m, "predicted_s": result["total_s"]})
            if best is None or result["total_s"] < best["total_s"] - 1e-12:
                best = result
        if best is not None and m >= m0 + num_extra_micro_batches:
            break
    if best is None:
        raise RuntimeError("flexsp found no feasible plan; every sequence fits alone, so this is a bug")
    return {
        "micro_batches": best["micro_batches"],
        "optimal": all(s == "optimal" for s in best["statuses"]),
        # "warm_start": HiGHS hit the limit before accepting any incumbent
        "time_limited": any(s != "optimal" for s in best["statuses"]),
        "info": {"candidates": tried, "milp_status": best["statuses"], "milp_s": best["milp_s"]},
    }


def _solve_chunks(prob, chunks, time_limit_s, num_buckets, gap) -> dict | None:
    mbs, statuses, milp_s, total = [], [], [], 0.0
    for ids in chunks:
        out = solve_micro_batch(prob, ids, time_limit_s=time_limit_s, num_buckets=num_buckets, mip_rel_gap=gap)
        if out is None:
            return None
        groups, status, seconds = out
        mbs.append(groups)
        statuses.append(status)
        milp_s.append(seconds)
        total += max(prob.group_time(g[2], g[1]) for g in groups)
    return {"micro_batches": mbs, "statuses": statuses, "milp_s": milp_s, "total_s": total}


def solve_micro_batch(prob: Problem, ids, *, time_limit_s: float, num_buckets: int = 16, mip_rel_gap: float = 1e-4):
    """(groups, status, milp seconds) for one micro-batch; status is "optimal",
    "time_limited" or "warm_start" (the MILP returned nothing better); None if the
    micro-batch cannot be planned at all."""
    ids = np.asarray(ids, dtype=np.int64)
    distinct = len(np.unique(prob.lengths[ids]))
    buckets = num_buckets
    while True:  # upper bounds can overflow memory where true lengths fit: refine the buckets
        bounds = bucket_bounds(prob.lengths[ids], buckets)
        bucket = np.searchsorted(bounds, prob.lengths[ids])  # (m,) bucket of each sequence
        rep = Problem(bounds, prob.spec, prob.cost, prob.capacity, prob.degrees, *_tables(prob, bounds))
        count = np.bincount(bucket, minlength=len(bounds))
        slots = _slots(rep, prob.num_ranks)
        start = _warm_start(rep, count, prob.num_ranks, slots)
        if start is not None or buckets >= distinct:
            break
        buckets *= 2
    if start is None:
        return None
    model, n_var, used, makespan = _build(rep, count, prob.num_ranks, slots)
    _set_start(start, n_var, used, makespan, rep, slots)
    solver = WarmHiGHS(msg=False, timeLimit=time_limit_s, warmStart=True, threads=1, gapRel=mip_rel_gap)
    began = time.perf_counter()
    model.solve(solver)
    seconds = time.perf_counter() - began
    if model.sol_status == pulp.LpSolutionOptimal:
        status = "optimal"
    elif model.sol_status == pulp.LpSolutionIntegerFeasible:
        status = "time_limited"
    else:
        status = None
    counts = _read_counts(n_var, used, len(count)) if status else None
    if counts is None:  # no incumbent from HiGHS: keep the greedy start
        counts, status = start, "warm_start"
    return _concrete(prob, ids, bucket, counts, slots), status, seconds


def _tables(prob: Problem, bounds: np.ndarray):
    holds = np.asarray(prob.degrees, dtype=np.int64)[None, :] * prob.capacity
    min_idx = np.argmax(bounds[:, None] <= holds, axis=1)
    times = np.stack([np.atleast_1d(prob.cost.seq_time_s(bounds, d)) for d in prob.degrees], axis=1)
    return min_idx, times


def _slots(rep: Problem, num_ranks: int) -> list[int]:
    """Degree index of every candidate slot, grouped by degree."""
    return [j for j, d in enumerate(rep.degrees) for _ in range(num_ranks // d)]


def _build(rep: Problem, count, num_ranks, slots):
    model = pulp.LpProblem("flexsp_micro_batch", pulp.LpMinimize)
    makespan = model.add_variable("T", lowBound=0)
    used = [model.add_variable(f"used_{p}", 0, 1, cat=pulp.LpBinary) for p in range(len(slots))]
    n_var = {
        (k, p): model.add_variable(f"n_{k}_{p}", 0, int(count[k]), cat=pulp.LpInteger)
        for k in range(len(count))
        for p, j in enumerate(slots)
        if j >= rep.min_degree_idx[k]
    }
    model += makespan
    by_slot: dict[int, list[int]] = {}
    for k, p in n_var:
        by_slot.setdefault(p, []).append(k)
    for k in range(len(count)):
        model += pulp.lpSum(v for (kk, _), v in n_var.items() if kk == k) == int(count[k]), f"assign_{k}"
    for p, j in enumerate(slots):
        ks = by_slot.get(p, [])
        d = rep.degrees[j]
        model += pulp.lpSum(int(rep.lengths[k]) * n_var[k, p] for k in ks) <= d * rep.capacity * used[p], f"cap_{p}"
        model += rep.b1 * used[p] + pulp.lpSum(float(rep.times[k, j]) * n_var[k, p] for k in ks) <= makespan, f"time_{p}"
        if p + 1 < len(slots) and slots[p + 1] == j:
            model += used[p] >= used[p + 1], f"sym_{p}"
    model += pulp.lpSum(rep.degrees[j] * used[p] for p, j in enumerate(slots)) == num_ranks, "tiling"
    return model, n_var, used, makespan


def _warm_start(rep: Problem, count, num_ranks, slots) -> dict | None:
    """Greedy shape-and-assign on the bucket bounds: {slot: {bucket: count}} or None."""
    reps = np.repeat(np.arange(len(count)), count)  # (m,) bucket of each copy
    out = shape_and_assign(rep.times[reps], rep.lengths[reps], rep.min_degree_idx[reps], rep.degrees, rep.capacity, num_ranks)
    if out is None:
        return None
    degrees, members, _ = out
    next_slot = {j: slots.index(j) for j in set(slots)}
    start = {}
    for d, mem in sorted(zip(degrees, members), key=lambda x: x[0]):
        j = rep.degrees.index(d)
        start[next_slot[j]] = np.bincount(reps[mem], minlength=len(count))
        next_slot[j] += 1
    return start


def _set_start(start, n_var, used, makespan, rep, slots) -> None:
    for p, var in enumerate(used):
        var.setInitialValue(1 if p in start else 0)
    for (k, p), var in n_var.items():
        var.setInitialValue(int(start[p][k]) if p in start else 0)
    worst = max(rep.b1 + float(rep.times[:, slots[p]] @ start[p]) for p in start)
    makespan.setInitialValue(worst)


def _read_counts(n_var, used, num_buckets: int) -> dict | None:
    """{slot: counts per bucket} of the used slots in HiGHS's solution."""
    counts = {p: np.zeros(num_buckets, dtype=np.int64) for p, var in enumerate(used) if (var.value() or 0) > 0.5}
    for (k, p), var in n_var.items():
        value = int(round(var.value() or 0))
        if value:
            if p not in counts:
                return None
            counts[p][k] = value
    return counts


def _concrete(prob: Problem, ids, bucket, counts: dict, slots) -> list[Group]:
    """Aligned groups with real sequence ids: each bucket's sequences (longest first)
    are dealt to its slots, each to the slot with the least real load so far."""
    used = sorted(counts)
    degrees = [prob.degrees[slots[p]] for p in used]
    members: list[list[int]] = [[] for _ in used]
    load = np.zeros(len(used))
    left = {p: counts[p].copy() for p in used}
    for k in range(int(bucket.max()) + 1 if len(bucket) else 0):
        seqs = ids[bucket == k]
        for i in seqs[np.argsort(-prob.lengths[seqs], kind="stable")]:
            open_ = [g for g, p in enumerate(used) if left[p][k] > 0]
            g = min(open_, key=lambda g: (load[g], g))
            members[g].append(int(i))
            left[used[g]][k] -= 1
            load[g] += prob.times[i, slots[used[g]]]
    return as_groups(degrees, members)
