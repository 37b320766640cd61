"""`fast`: the default planner. An LP over each micro-batch's length histogram, then
rounding, an exact assignment on real lengths and a local search; milliseconds per batch.

Per step:
1. Micro-batch counts M0 .. M0 + extra (M0 from token capacity; more while a micro-batch
   costs little next to the step, or while packing fails). For each count, candidate
   splits (`splits.py`): FlexSP's sorted min-max partition, interleaved splits that mix
   short sequences in with long ones as filler, and critical-first splits (the longest
   sequence's micro-batch filled up to its finish time).
2. Every split is scored cheaply by its micro-batches' best starting shape (`shape.py`).
3. The best NUM_SHAPED_SPLITS splits get the LP (`lp.py`, PuLP + HiGHS): per micro-batch,
   how much of each length bucket runs at each degree and how many ranks each degree
   gets. Its rounded shapes seed a shape hill-climb; the best shapes get an exact
   assignment: longest first, each sequence to the group that finishes it earliest.
4. The fastest exact plan gets a local search (moves and swaps out of the slowest group
   of each micro-batch), then moves between micro-batches (`rebalance.py`).
5. The baselines plan the same batch (milliseconds); `fast` returns the fastest plan of
   all, so it is never slower than a baseline.
Deterministic: no randomness, ties break by index.
"""

from __future__ import annotations

import time

import numpy as np

from solver.strategies.baselines import plan_batch_ada, plan_dcp_greedy, plan_static
from solver.strategies.lp import rounded_shapes, solve_shapes
from solver.strategies.packing import assign, local_search, makespan
from solver.strategies.problem import Problem, StrategyResult, as_groups, min_micro_batches, step_time
from solver.strategies.rebalance import rebalance
from solver.strategies.shape import ShapeScorer, search_shape, tiling
from solver.strategies.splits import fluid_time, splits_for

NUM_EXACT_SHAPES = 2
"""Best-scored shapes per micro-batch that get an exact assignment (more if packing fails)."""
MAX_EXACT_SHAPES = 6
"""At most this many while every shape leaves sequences out (they spill)."""
NUM_SHAPED_SPLITS = 1
"""Best-scored splits that get the LP and an exact assignment (besides the best
baseline's micro-batches)."""
MEMORY_BOUND_FILL = 0.9
"""Splits into m micro-batches are tried only where the batch needs at most 90% of their
token capacity: fuller ones cannot be packed without spilling. A batch for which no count
qualifies is memory-bound, and only the baselines' micro-batches (which open micro-batches
as packing needs) are realised and improved."""
LP_MIN_SEQUENCES = 8
CLIMB_STEPS = 6
"""Shape hill-climb moves per micro-batch, from the LP's rounded shapes."""
BASELINES = {"static": plan_static, "batch-ada": plan_batch_ada, "dcp-greedy": plan_dcp_greedy}


def plan_fast(prob: Problem, *, num_extra_micro_batches: int = 1, local_search_rounds: int = 200,
              seed: int = 0) -> StrategyResult:
    """`seed` is accepted for interface symmetry; the method has no randomness."""
    del seed
    if num_extra_micro_batches < 0 or local_search_rounds < 0:
        raise ValueError(
            f"num_extra_micro_batches ({num_extra_micro_batches}) and local_search_rounds "
            f"({local_search_rounds}) must be >= 0"
        )
    stats = {"lp_s": 0.0, "lp_solves": 0}
    began = time.thread_time()
    baselines = {name: fn(prob).micro_batches for name, fn in BASELINES.items()}
    stats["baselines_s"] = time.thread_time() - began
    total, mbs, info = _search(prob, _counts(prob, num_extra_micro_batches), baselines, local_search_rounds, stats)
    for name, other in baselines.items():  # never slower than a baseline
        other_total = step_time(prob, other)
        if other_total < total * (1 - 1e-9):
            total, mbs = other_total, other
            info = {"num_micro_batches": len(other), "split": name, "source": f"baseline {name}"}
    return StrategyResult(micro_batches=mbs, info={**info, **stats})


def _counts(prob: Problem, extra: int) -> list[int]:
    """Micro-batch counts to try: M0 .. M0 + extra. (Memory-bound batches that pack
    better with more micro-batches get them from the spill in `realise` and from the
    baselines' splits, which open micro-batches as packing needs.)"""
    m0 = min_micro_batches(prob)
    return list(range(m0, min(m0 + extra, prob.n) + 1))


def _search(prob: Problem, counts: list[int], baselines: dict, rounds: int, stats: dict):
    """(total, micro-batches, info) of the best plan over the splits: the best-scored
    ones and the best baseline's own micro-batches (its groups kept where they win)."""
    splits, seen = [], set()
    for m in (m for m in counts if _fill(prob, m) <= MEMORY_BOUND_FILL):
        for name, chunks in splits_for(prob, m):
            key = tuple(tuple(c.tolist()) for c in chunks)
            if key not in seen:
                seen.add(key)
                splits.append((m, name, chunks))
    scored = sorted(_quick_scores(prob, splits), key=lambda c: c[0])
    tries = [(name, chunks, None) for _, _, name, chunks in scored[:NUM_SHAPED_SPLITS]]
    name, warm = min(baselines.items(), key=lambda kv: step_time(prob, kv[1]))
    tries.append((name, [np.asarray(sorted(i for g in mb for i in g[2]), dtype=np.int64) for mb in warm], warm))
    best = None
    for name, chunks, warm in tries:
        subs = [prob.subset(ids) for ids in chunks]
        realised = realise(prob, chunks, _lp_proposals(subs, stats), warm)
        total = sum(prob.b1 + makespan(sub, g, mem) for _, sub, g, mem in realised)
        if best is None or total < best[0] - 1e-12:
            best = (total, {"num_micro_batches": len(realised), "split": name, "source": "lp"}, realised)
    _, info, realised = best
    polished = []
    for ids, sub, group_idx, members in realised:
        members = local_search(sub, group_idx, members, rounds)
        polished.append((group_idx, [ids[m].tolist() for m in members]))
    polished = [mb for mb in rebalance(prob, polished) if any(mb[1])]
    mbs = [as_groups(prob.spec, [prob.degrees[j] for j in g], members) for g, members in polished]
    info["num_micro_batches"] = len(mbs)
    return step_time(prob, mbs), mbs, info


def _fill(prob: Problem, m: int) -> float:
    """Share of the token capacity of m micro-batches the batch needs."""
    return float(prob.lengths.sum()) / (m * prob.num_ranks * prob.capacity)


def _lp_proposals(subs: list[Problem], stats: dict) -> list[list[np.ndarray]]:
    """The LP's rounded shapes per micro-batch (one LP for all of them). Micro-batches of
    fewer than LP_MIN_SEQUENCES sequences skip it: each of their sequences is a bucket
    of its own, and the shape search's starts already cover them."""
    big = [k for k, sub in enumerate(subs) if sub.n >= LP_MIN_SEQUENCES]
    out: list[list[np.ndarray]] = [[] for _ in subs]
    if big:
        shapes, lp_s, solves = solve_shapes([subs[k] for k in big], [fluid_time(subs[k]) for k in big])
        stats["lp_s"] += lp_s
        stats["lp_solves"] += solves
        for k, shape in zip(big, shapes):
            out[k] = rounded_shapes(subs[k], shape)
    return out


def realise(prob: Problem, chunks: list[np.ndarray], proposals: list[list[np.ndarray]], warm=None) -> list:
    """Exact assignments [(ids, sub, group degree indices, local members)] of the chunks
    on their best shapes, or on `warm`'s groups of the chunk where those are faster. A
    sequence that finds no room spills into the next micro-batch; what is left after the
    last one gets micro-batches of its own."""
    out, carry = [], np.zeros(0, dtype=np.int64)
    queue = [(np.asarray(ids, dtype=np.int64), props, None if warm is None else warm[k])
             for k, (ids, props) in enumerate(zip(chunks, proposals))]
    while queue or carry.size:
        ids, props, groups = queue.pop(0) if queue else (np.zeros(0, dtype=np.int64), [], None)
        ids = np.concatenate([carry, ids])
        sub = prob.subset(ids)
        group_idx, members, left = exact_assignment(sub, search_shape(ShapeScorer(sub), CLIMB_STEPS, props))
        if len(left) == sub.n:  # nothing placed: the longest runs alone on its smallest degree
            j = int(sub.min_degree_idx[int(np.argmax(sub.lengths))])
            group_idx, members, left = exact_assignment(sub, [np.eye(len(sub.degrees), dtype=np.int64)[j] * (j > 0)])
        if groups is not None and not carry.size:
            mine = (len(left), makespan(sub, group_idx, members))
            local = {int(i): k for k, i in enumerate(ids)}
            theirs = ([prob.degrees.index(d) for _, d, _ in groups], [[local[i] for i in g] for _, _, g in groups])
            if mine > (0, makespan(sub, *theirs)):
                group_idx, members, left = theirs[0], theirs[1], []
        carry = ids[np.asarray(left, dtype=np.int64)]
        if left:  # keep only the placed sequences in this micro-batch
            keep = np.setdiff1d(np.arange(sub.n), left)
            local = np.full(sub.n, -1, dtype=np.int64)
            local[keep] = np.arange(len(keep))
            members = [local[np.asarray(m, dtype=np.int64)].tolist() for m in members]
            ids, sub = ids[keep], prob.subset(ids[keep])
        out.append((ids, sub, group_idx, members))
    return out


def _quick_scores(prob: Problem, splits):
    """(score, M, name, chunks): each split scored by its micro-batches' fluid times."""
    for m, name, chunks in splits:
        yield sum(prob.b1 + fluid_time(prob.subset(ids)) for ids in chunks), m, name, chunks


def exact_assignment(sub: Problem, shapes: list[np.ndarray]):
    """Earliest-finish assignment on the best of the first NUM_EXACT_SHAPES shapes (up to
    MAX_EXACT_SHAPES while every one leaves sequences out): (group degree indices, local
    members, local ids left out), fewest tokens left out first, then the smallest makespan."""
    best, tried = None, 0
    for counts in shapes:
        group_idx = tiling(counts, sub.degrees, sub.num_ranks)
        members, left = assign(sub, group_idx)
        key = (int(sub.lengths[left].sum()), makespan(sub, group_idx, members))
        if best is None or key < best[0]:
            best = (key, group_idx, members, left)
        tried += 1
        if tried >= NUM_EXACT_SHAPES and best[0][0] == 0 or tried >= MAX_EXACT_SHAPES:
            break
    return best[1], best[2], best[3]
