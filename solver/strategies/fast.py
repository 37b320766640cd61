"""`fast`: the default planner. Exact lengths, no MILP, milliseconds per batch.

Per step:
1. Micro-batch counts M0 .. M0 + `num_extra_micro_batches` (M0 from token capacity);
   for each, candidate splits: FlexSP's sorted min-max linear partition and interleaved
   splits (longest first, each to the micro-batch whose estimated time grows least),
   which mix short sequences in with long ones as filler.
2. Every split is scored by its micro-batches' best starting shape (`shape.py`: the
   shapes a fluid relaxation proposes, plus one-degree shapes, scored by placing long
   sequences exactly and short ones as a fluid).
3. The best NUM_SHAPED_SPLITS splits get a full shape search (merge/split/grow/shrink
   hill-climb) and an exact assignment on their best shapes: longest first, each
   sequence to the group that finishes it earliest (degree holds it, token room left).
4. The fastest exact plan gets a local search (moves and swaps out of the slowest
   group of each micro-batch).
Deterministic: no randomness, ties break by index.
"""

from __future__ import annotations

import numpy as np

from solver.strategies.blaster import blast_greedy
from solver.strategies.packing import assign_earliest_finish, local_search
from solver.strategies.problem import Group, Problem, as_groups, min_micro_batches
from solver.strategies.shape import ShapeScorer, search_shape, tiling

NUM_EXACT_SHAPES = 2
"""Best-scored shapes per micro-batch that get an exact assignment."""
NUM_SHAPED_SPLITS = 2
"""Best-scored splits whose micro-batches get an exact assignment."""
SPLIT_TOKEN_SHARE = 0.9
"""Interleaved splits fill a micro-batch to at most this share of N * C tokens when the
batch allows, leaving the exact assignment room to pack tokens."""
FLOOR_SHARES = (0.0, 0.5)
"""Interleaved-split variants: how much of the cluster a long sequence is assumed to use."""


def plan_fast(prob: Problem, *, num_extra_micro_batches: int = 1, local_search_rounds: int = 200, seed: int = 0) -> dict:
    """Returns {"micro_batches": [[Group, ...], ...], "info": {...}}. `seed` is accepted
    for interface symmetry; the method has no randomness."""
    del seed
    if num_extra_micro_batches < 0 or local_search_rounds < 0:
        raise ValueError(
            f"num_extra_micro_batches ({num_extra_micro_batches}) and local_search_rounds "
            f"({local_search_rounds}) must be >= 0"
        )
    m0 = min_micro_batches(prob)
    counts = list(range(m0, min(m0 + num_extra_micro_batches, prob.n) + 1))
    while True:
        planned = _plan_counts(prob, counts)
        if planned or counts[-1] >= prob.n:
            break
        counts = [min(prob.n, 2 * counts[-1])]  # rare: token packing failed; try more micro-batches
    if not planned:
        return _one_per_micro_batch(prob)
    total, info, chunks, mbs = min(planned, key=lambda c: c[0])
    out = [polish(prob, ids, mb, local_search_rounds) for ids, mb in zip(chunks, mbs)]
    return {"micro_batches": out, "info": info}


def _plan_counts(prob: Problem, counts: list[int]) -> list:
    """Exact plans (total, info, chunks, assignments) of the best-scored splits into any
    of `counts` micro-batches; empty if none could be packed."""
    splits, seen = [], set()  # (M, split name, chunks), distinct splits only
    for m in counts:
        for name, chunks in _splits(prob, m):
            key = tuple(tuple(c.tolist()) for c in chunks)
            if key not in seen:
                seen.add(key)
                splits.append((m, name, chunks))
    planned = []
    for _, m, name, chunks in sorted(_quick_scores(prob, splits), key=lambda c: c[0]):
        shapes = [search_shape(_scorer(prob, ids)) for ids in chunks]
        mbs = [exact_assignment(prob, ids, sh) for ids, sh in zip(chunks, shapes)]
        if all(mb is not None for mb in mbs):
            total = sum(mb[2] + prob.b1 for mb in mbs)
            planned.append((total, {"num_micro_batches": m, "split": name}, chunks, mbs))
            if len(planned) >= NUM_SHAPED_SPLITS:
                break
    return planned


def _quick_scores(prob: Problem, splits):
    """(score, M, name, chunks): each split scored by its micro-batches' best starting shape."""
    for m, name, chunks in splits:
        scorers = [_scorer(prob, ids) for ids in chunks]
        shapes = [search_shape(sc, climb_steps=0) for sc in scorers]
        if all(shapes):
            yield sum(prob.b1 + sc.score(sh[0]) for sc, sh in zip(scorers, shapes)), m, name, chunks


def _one_per_micro_batch(prob: Problem) -> dict:
    """Every sequence fits a group alone, so one sequence per micro-batch always works."""
    mbs = []
    for i in range(prob.n):
        ids = np.asarray([i])
        mb = exact_assignment(prob, ids, search_shape(_scorer(prob, ids)))
        mbs.append(polish(prob, ids, mb, 0))
    return {"micro_batches": mbs, "info": {"num_micro_batches": prob.n, "split": "one-per-micro-batch"}}


def _splits(prob: Problem, m: int):
    chunks = sorted_split(prob, m)
    if chunks is not None:
        yield "sorted", chunks
    for share in FLOOR_SHARES:
        chunks = interleaved_split(prob, m, share)
        if chunks is not None:
            yield f"interleaved@{share:g}", chunks


def fluid_time(prob: Problem, ids: np.ndarray, iters: int = 30) -> float:
    """Least T such that running every sequence on its cheapest degree (in rank-seconds)
    among those that finish within T needs at most N * T rank-seconds: a fluid estimate
    of a micro-batch's makespan (without b1) that sees long sequences' floors."""
    times = prob.times[ids]
    rank_s = prob.rank_seconds()[ids]  # (m, D)

    def fits(t: float) -> bool:
        need = np.where(times <= t, rank_s, np.inf).min(axis=1)
        return bool(np.isfinite(need).all()) and float(need.sum()) <= prob.num_ranks * t

    feasible = np.isfinite(rank_s)
    lo = float(np.where(feasible, times, np.inf).min(axis=1).max())
    lo = max(lo, float(rank_s.min(axis=1).sum()) / prob.num_ranks)
    hi = max(lo, float(np.where(feasible, times, 0).max(axis=1).sum()))
    if fits(lo):
        return lo
    for _ in range(iters):
        if hi - lo <= 1e-3 * hi:
            break
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if fits(mid) else (mid, hi)
    return hi


def _scorer(prob: Problem, ids: np.ndarray) -> ShapeScorer:
    return ShapeScorer(prob.times[ids], prob.lengths[ids], prob.min_degree_idx[ids], prob.degrees, prob.capacity, prob.num_ranks)


def sorted_split(prob: Problem, m: int) -> list[np.ndarray] | None:
    order = np.argsort(prob.lengths, kind="stable")
    work = prob.rank_seconds().min(axis=1)
    return blast_greedy(order, work, prob.lengths, m, prob.num_ranks * prob.capacity)


def interleaved_split(prob: Problem, m: int, floor_share: float) -> list[np.ndarray] | None:
    """Longest first, each sequence to the micro-batch whose estimated time grows least
    (ties: the smaller estimate), among those with token room.

    A sequence is *long* if even on its smallest degree it runs longer than an even
    share of the step's work (work / (N M)); with floor_share > 0 a long sequence is
    assumed to run on the largest degree <= floor_share * N (at least its smallest),
    taking that many ranks for its time (its floor). A micro-batch's estimate is
    max(largest floor, other work / ranks left), so filler flows into a micro-batch whose
    long sequence leaves ranks idle. floor_share 0: plain balancing of work / N."""
    cap = int(SPLIT_TOKEN_SHARE * prob.num_ranks * prob.capacity)
    if m * cap < int(prob.lengths.sum()):
        cap = prob.num_ranks * prob.capacity
    work_arr = prob.rank_seconds().min(axis=1)
    floor_arr, reserve_arr = _floors(prob, floor_share, float(work_arr.sum()) / (prob.num_ranks * m))
    work, floor, reserve = work_arr.tolist(), floor_arr.tolist(), reserve_arr.tolist()
    lengths = prob.lengths.tolist()
    n_ranks = prob.num_ranks
    load, top, held, room = [0.0] * m, [0.0] * m, [0] * m, [cap] * m
    parts: list[list[int]] = [[] for _ in range(m)]

    for i in np.argsort(-prob.lengths, kind="stable").tolist():
        size, best_k, best_key = lengths[i], -1, None
        for k in range(m):
            if room[k] < size:
                continue
            # estimate = max(top, load / free ranks), or top + load / N when no rank is free
            free = n_ranks - held[k]
            before = max(top[k], load[k] / free) if free > 0 else top[k] + load[k] / n_ranks
            if reserve[i]:
                top_k, free = max(top[k], floor[i]), n_ranks - min(n_ranks, held[k] + reserve[i])
                after = max(top_k, load[k] / free) if free > 0 else top_k + load[k] / n_ranks
            else:
                after = max(top[k], (load[k] + work[i]) / free) if free > 0 else top[k] + (load[k] + work[i]) / n_ranks
            key = (after - before, after)
            if best_key is None or key < best_key:
                best_k, best_key = k, key
        if best_k < 0:
            return None
        parts[best_k].append(i)
        room[best_k] -= size
        if reserve[i]:
            top[best_k] = max(top[best_k], floor[i])
            held[best_k] = min(n_ranks, held[best_k] + reserve[i])
        else:
            load[best_k] += work[i]
    if any(not p for p in parts):
        return None
    return [np.asarray(sorted(p), dtype=np.int64) for p in parts]


def _floors(prob: Problem, share: float, even_s: float) -> tuple[np.ndarray, np.ndarray]:
    """(floor seconds, ranks held) of each long sequence; zeros for the others."""
    if share <= 0:
        return np.zeros(prob.n), np.zeros(prob.n, dtype=np.int64)
    allowed = max([j for j, d in enumerate(prob.degrees) if d <= share * prob.num_ranks], default=0)
    col = np.maximum(prob.min_degree_idx, allowed)
    rows = np.arange(prob.n)
    long = prob.times[rows, prob.min_degree_idx] > even_s
    floor = np.where(long, prob.times[rows, col], 0.0)
    held = np.where(long, np.asarray(prob.degrees)[col], 0)
    return floor, held


def exact_assignment(prob: Problem, ids: np.ndarray, shapes: list[np.ndarray]):
    """Earliest-finish assignment of the sequences `ids` on the best of the first
    NUM_EXACT_SHAPES shapes that admit one: (group degree indices, local members, max
    load) or None."""
    ids = np.asarray(ids, dtype=np.int64)
    return exact_on_arrays(
        prob.times[ids], prob.lengths[ids], prob.min_degree_idx[ids], prob.degrees, prob.capacity, prob.num_ranks, shapes
    )


def exact_on_arrays(times, lengths, min_idx, degrees, capacity, num_ranks, shapes):
    best, tried = None, 0
    for counts in shapes:
        group_idx = tiling(counts, degrees, num_ranks)
        members = assign_earliest_finish(times, lengths, min_idx, group_idx, degrees, capacity)
        if members is None:  # tokens are tight: place by token room first
            members = assign_earliest_finish(times, lengths, min_idx, group_idx, degrees, capacity, by_room=True)
        if members is None:
            continue
        span = _makespan(times, group_idx, members)
        if best is None or span < best[2] - 1e-12:
            best = (group_idx, members, span)
        tried += 1
        if tried >= NUM_EXACT_SHAPES:
            break
    return best


def polish(prob: Problem, ids: np.ndarray, assigned, local_search_rounds: int) -> list[Group]:
    """Local search on an exact assignment, then concrete aligned groups."""
    ids = np.asarray(ids, dtype=np.int64)
    group_idx, members, _ = assigned
    if local_search_rounds > 0:
        members = local_search(
            prob.times[ids], prob.lengths[ids], prob.min_degree_idx[ids], group_idx, prob.degrees,
            prob.capacity, members, local_search_rounds,
        )
    return as_groups([prob.degrees[j] for j in group_idx], [ids[m].tolist() for m in members])


def shape_and_assign(times, lengths, min_idx, degrees, capacity, num_ranks, *, local_search_rounds=200):
    """Shape search, exact assignment and local search on local arrays (flexsp's warm
    start): (group degrees, local members, max load) or None."""
    scorer = ShapeScorer(times, lengths, min_idx, degrees, capacity, num_ranks)
    best = exact_on_arrays(times, lengths, min_idx, degrees, capacity, num_ranks, search_shape(scorer))
    if best is None:
        return None
    group_idx, members, _ = best
    members = local_search(times, lengths, min_idx, group_idx, tuple(degrees), capacity, members, local_search_rounds)
    return [degrees[j] for j in group_idx], members, _makespan(times, group_idx, members)


def _makespan(times, group_idx, members) -> float:
    return max((float(times[m, j].sum()) for j, m in zip(group_idx, members) if m), default=0.0)
