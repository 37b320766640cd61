"""`flexsp`: the FlexSP planner (arXiv 2412.01523): Blaster micro-batching, bucketing,
a makespan MILP per micro-batch, solved by HiGHS to a proven gap.

1. Sequence Blaster: sort, cut into M = M0 .. M0 + k micro-batches (the linear-partition
   DP `blaster.blast`, or its bisection twin for large batches), keep the fastest M. A
   micro-batch whose tokens cannot be packed into groups is cut in two.
2. Per micro-batch, a warm start: `fast`'s LP shapes, exact assignment and local search
   on this micro-batch.
3. The collapsed MILP (`milp.py`): groups per degree and bucket counts per degree, on
   FlexSP's DP buckets with lower representatives, from the warm start, with the proven
   lower bound as a floor; HiGHS (one thread) until the relative gap or the time limit.
4. Exact-length polish: each bucket's longest members go to the largest degrees the
   MILP chose, earliest finish within each degree's groups, then the local search; the
   faster of this and the warm start is kept.
Per micro-batch, info["mip_gap"] is the proven gap 1 - (b1 + MILP bound) / (b1 + its
time): the plan is within that share of the best possible for the micro-batch's
sequences. Where it departs from FlexSP: FlexSP's MILP has a slot per candidate group and
uses bucket upper bounds; collapsing the slots removes their symmetry (so the MILP closes
its gap instead of idling at the root), lower representatives make its bound a proven
bound, and the polish puts the exact lengths back.
"""

from __future__ import annotations

import numpy as np

from solver.bounds import busy_lower_bound
from solver.strategies import milp
from solver.strategies.blaster import blast, blast_greedy
from solver.strategies.fast import exact_assignment
from solver.strategies.lp import rounded_shapes, solve_shapes
from solver.strategies.packing import assign, earliest_finish, local_search, makespan
from solver.strategies.problem import Problem, StrategyResult, as_groups, min_micro_batches
from solver.strategies.shape import ShapeScorer, search_shape, tiling
from solver.strategies.splits import fluid_time

DP_BLAST_MAX_N = 1024
"""Above this many sequences, Blaster's O(M n^2) DP is replaced by its bisection twin."""
OPTIMAL_GAP = 1e-4


def plan_flexsp(
    prob: Problem,
    *,
    solve_time_limit_s: float = 5.0,
    num_extra_micro_batches: int = 1,
    num_buckets: int = 16,
    mip_rel_gap: float = 1e-4,
) -> StrategyResult:
    """`solve_time_limit_s` bounds each micro-batch's MILP."""
    if solve_time_limit_s <= 0:
        raise ValueError(f"solve_time_limit_s must be > 0, got {solve_time_limit_s}")
    if num_extra_micro_batches < 0 or num_buckets < 1 or not 0 <= mip_rel_gap < 1:
        raise ValueError(
            f"need num_extra_micro_batches >= 0 (got {num_extra_micro_batches}), num_buckets >= 1 "
            f"(got {num_buckets}) and 0 <= mip_rel_gap < 1 (got {mip_rel_gap})"
        )
    order = np.argsort(prob.lengths, kind="stable")
    cut = blast if prob.n <= DP_BLAST_MAX_N else blast_greedy
    m0 = min_micro_batches(prob)
    best, tried = None, []
    cap = prob.num_ranks * prob.capacity
    while m0 < prob.n and cut(order, prob.min_work(), prob.lengths, m0, cap) is None:
        m0 += 1  # consecutive chunks can need more micro-batches than the token total
    for m in range(m0, min(prob.n, m0 + num_extra_micro_batches) + 1):
        chunks = cut(order, prob.min_work(), prob.lengths, m, cap)
        if chunks is None:
            continue
        solved = _solve_chunks(prob, chunks, solve_time_limit_s, num_buckets, mip_rel_gap)
        tried.append({"num_micro_batches": m, "realised": len(solved["micro_batches"]), "predicted_s": solved["total_s"]})
        if best is None or solved["total_s"] < best["total_s"] - 1e-12:
            best = solved
    if best is None:
        raise RuntimeError("flexsp found no Blaster split; one sequence per micro-batch always is one, so this is a bug")
    statuses = best["statuses"]
    return StrategyResult(
        micro_batches=best["micro_batches"],
        optimal=all(s == "optimal" for s in statuses) and max(best["gaps"]) <= OPTIMAL_GAP,
        time_limited=any(s != "optimal" for s in statuses),
        info={"candidates": tried, "milp_status": statuses, "milp_s": best["milp_s"],
              "mip_gap": best["gaps"], "mip_bound_s": best["bounds"]},
    )


def _solve_chunks(prob: Problem, chunks, time_limit_s: float, num_buckets: int, gap: float) -> dict:
    """Each chunk's MILP; a chunk whose tokens cannot be packed is cut in two (in sorted
    order) and both halves are planned instead: Blaster's cut only checks total tokens."""
    out = {"micro_batches": [], "statuses": [], "milp_s": [], "gaps": [], "bounds": [], "total_s": 0.0}
    queue = [np.asarray(c, dtype=np.int64) for c in chunks]
    while queue:
        ids = queue.pop(0)
        solved = solve_micro_batch(prob, ids, time_limit_s=time_limit_s, num_buckets=num_buckets, mip_rel_gap=gap)
        if solved is None:
            half = len(ids) // 2
            queue[:0] = [ids[:half], ids[half:]]
            continue
        groups, status, seconds, span, bound = solved
        out["micro_batches"].append(groups)
        out["statuses"].append(status)
        out["milp_s"].append(seconds)
        out["gaps"].append(1.0 - (prob.b1 + bound) / (prob.b1 + span))
        out["bounds"].append(prob.b1 + bound)
        out["total_s"] += prob.b1 + span
    return out


def solve_micro_batch(prob: Problem, ids, *, time_limit_s: float, num_buckets: int = 16, mip_rel_gap: float = 1e-4):
    """(groups, status, MILP seconds, busy seconds, proven busy lower bound) for one
    micro-batch, or None if it cannot be packed."""
    ids = np.asarray(ids, dtype=np.int64)
    sub = prob.subset(ids)
    warm = _warm_start(sub)
    if warm is None:
        return None
    bk = milp.make_buckets(sub, num_buckets)
    group_idx, members, span = warm
    result = milp.solve(sub, bk, _as_counts(sub, bk, group_idx, members), span, busy_lower_bound(sub),
                        time_limit_s=time_limit_s, mip_rel_gap=mip_rel_gap)
    polished = _polish(sub, bk, result) if result.status != "warm_start" else None
    if polished is not None and polished[2] < span - 1e-12:
        group_idx, members, span = polished
    groups = as_groups(prob.spec, [prob.degrees[j] for j in group_idx], [ids[m].tolist() for m in members])
    return groups, result.status, result.seconds, span, min(result.bound_s, span)


def _warm_start(sub: Problem):
    """fast's steps on this micro-batch: (group degree indices, members, busy seconds)."""
    (lp_shape,), _, _ = solve_shapes([sub], [fluid_time(sub)])
    group_idx, members, left = exact_assignment(sub, search_shape(ShapeScorer(sub), proposals=rounded_shapes(sub, lp_shape)))
    if left:  # no packing found for all of them: Blaster tries more micro-batches
        return None
    members = local_search(sub, group_idx, members)
    return group_idx, members, makespan(sub, group_idx, members)


def _as_counts(sub: Problem, bk: milp.Buckets, group_idx, members) -> tuple[np.ndarray, np.ndarray]:
    """(groups per degree, bucket counts per degree) of a concrete assignment."""
    groups = np.bincount(np.asarray(group_idx), minlength=len(sub.degrees))
    groups[0] = 0
    split = np.zeros((len(bk.counts), len(sub.degrees)), dtype=np.int64)
    for j, mem in zip(group_idx, members):
        split[:, j] += np.bincount(bk.of[mem], minlength=len(bk.counts))
    return groups, split


def _polish(sub: Problem, bk: milp.Buckets, result: milp.MilpResult):
    """The MILP's counts on exact lengths: (group degree indices, members, busy seconds)."""
    group_idx = tiling(result.groups, sub.degrees, sub.num_ranks)
    prefer = np.empty(sub.n, dtype=np.int64)
    for k in range(len(bk.counts)):
        seqs = np.flatnonzero(bk.of == k)
        seqs = seqs[np.argsort(-sub.lengths[seqs], kind="stable")]
        degrees = np.repeat(np.arange(len(sub.degrees))[::-1], result.split[k, ::-1])  # largest first
        prefer[seqs] = degrees[: len(seqs)]
    rows = np.where(np.arange(len(sub.degrees))[None, :] > prefer[:, None], np.inf, sub.times)
    order = np.argsort(-sub.lengths, kind="stable").tolist()
    room = [sub.degrees[j] * sub.capacity for j in group_idx]
    members, _, _, left = earliest_finish(order, sub.lengths.tolist(), rows.tolist(), prefer.tolist(), room, group_idx)
    if left:
        members, left = assign(sub, group_idx)
    if left:
        return None
    members = local_search(sub, group_idx, members)
    return group_idx, members, makespan(sub, group_idx, members)
