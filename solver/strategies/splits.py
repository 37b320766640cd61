"""Candidate splits of a step's sequences into M micro-batches, for `fast`.

- sorted: FlexSP's Sequence Blaster cut (sorted by length, min-max work, token cap).
- interleaved: longest first, each sequence to the micro-batch whose estimated time grows
  least, so short sequences fill in next to long ones; with a floor share, a long
  sequence is assumed to hold ranks for its time, and filler flows around it.
- critical: the micro-batch of the sequence that takes longest even at its fastest
  degree is filled, up to that finish time, with the sequences that bring the most work
  per token (the shape of the lower bound's critical micro-batch); repeated while such a
  sequence outlasts an even share of the rest, which is then split interleaved.
"""

from __future__ import annotations

import numpy as np

from solver.strategies.blaster import blast_greedy
from solver.strategies.problem import Problem

SPLIT_TOKEN_SLACK = 0.5
"""Splits fill a micro-batch to at most N*C minus this share of the batch's spare room
(and at most 90% when the batch leaves that much room), leaving the exact assignment
room to pack tokens."""
FLOOR_SHARES = (0.0, 0.5)
"""Interleaved-split variants: how much of the cluster a long sequence is assumed to use."""
CRITICAL_FILL = 0.95
"""Share of the critical micro-batch's free rank-seconds its filler may take."""
MAX_CRITICAL_BUDGETS = 2
EXACT_INTERLEAVE_PER_MB = 16
"""Interleaved splits place the 16 M longest sequences one by one, the rest in rounds."""


def splits_for(prob: Problem, m: int):
    """(name, chunks) of every candidate split into m micro-batches that exists."""
    chunks = sorted_split(prob, m)
    if chunks is not None:
        yield "sorted", chunks
    every = np.arange(prob.n)
    for share in FLOOR_SHARES:
        chunks = interleaved_split(prob, every, m, share)
        if chunks is not None:
            yield f"interleaved@{share:g}", chunks
    yield from critical_splits(prob, m)


def token_cap(prob: Problem, m: int) -> int:
    """Tokens a split puts in one micro-batch at most (see SPLIT_TOKEN_SLACK)."""
    full = prob.num_ranks * prob.capacity
    fill = int(prob.lengths.sum()) / (m * full)
    share = min(1.0, max(0.9, fill + SPLIT_TOKEN_SLACK * (1.0 - fill)))
    return int(share * full)


def fluid_time(sub: Problem, iters: int = 30) -> float:
    """Least T such that running every sequence on its cheapest degree (in rank-seconds)
    among those that finish within T needs at most N * T rank-seconds: a fluid estimate
    of a micro-batch's makespan (without b1) that sees long sequences' floors."""
    def fits(t: float) -> bool:
        need = sub.budget_work(t)
        return bool(np.isfinite(need).all()) and float(need.sum()) <= sub.num_ranks * t

    lo = max(float(sub.shortest().max()), float(sub.min_work().sum()) / sub.num_ranks)
    hi = max(lo, float(np.where(np.isfinite(sub.rank_s), sub.times, 0).max(axis=1).sum()))
    if fits(lo):
        return lo
    for _ in range(iters):
        if hi - lo <= 1e-3 * hi:
            break
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if fits(mid) else (mid, hi)
    return hi


def sorted_split(prob: Problem, m: int) -> list[np.ndarray] | None:
    order = np.argsort(prob.lengths, kind="stable")
    return blast_greedy(order, prob.min_work(), prob.lengths, m, token_cap(prob, m))


def interleaved_split(prob: Problem, ids: np.ndarray, m: int, floor_share: float) -> list[np.ndarray] | None:
    """Longest first, each sequence of `ids` to the micro-batch whose estimated time grows
    least (ties: the smaller estimate), among those with token room.

    A sequence is *long* if even on its smallest degree it runs longer than an even
    share of the work (work / (N M)); with floor_share > 0 a long sequence is assumed to
    run on the largest degree <= floor_share * N (at least its smallest), taking that
    many ranks for its time (its floor). A micro-batch's estimate is max(largest floor,
    other work / ranks left), so filler flows into a micro-batch whose long sequence
    leaves ranks idle. floor_share 0: plain balancing of work / N."""
    if m > len(ids):
        return None
    cap = token_cap(prob, m)
    if m * prob.num_ranks * prob.capacity < int(prob.lengths[ids].sum()):
        return None
    work_arr = prob.min_work()
    floor_arr, reserve_arr = _floors(prob, floor_share, float(work_arr[ids].sum()) / (prob.num_ranks * m))
    n_ranks = prob.num_ranks
    load, top, held = np.zeros(m), np.zeros(m), np.zeros(m, dtype=np.int64)
    room = np.full(m, cap, dtype=np.int64)
    parts: list[list[int]] = [[] for _ in range(m)]
    order = ids[np.argsort(-prob.lengths[ids], kind="stable")]
    head = order[: EXACT_INTERLEAVE_PER_MB * m]
    for i in head.tolist():
        # estimate = max(top, load / free ranks), or top + load / N when no rank is free
        before = _estimate(top, load, held, n_ranks)
        if reserve_arr[i]:
            after = _estimate(np.maximum(top, floor_arr[i]), load, np.minimum(n_ranks, held + reserve_arr[i]), n_ranks)
        else:
            after = _estimate(top, load + work_arr[i], held, n_ranks)
        ok = room >= prob.lengths[i]
        if not ok.any():
            return None
        grow = np.where(ok, after - before, np.inf)
        best = np.flatnonzero(grow <= grow.min() + 1e-12)
        k = int(best[np.argmin(after[best])])  # least growth, then the smaller estimate
        parts[k].append(i)
        room[k] -= prob.lengths[i]
        if reserve_arr[i]:
            top[k] = max(top[k], floor_arr[i])
            held[k] = min(n_ranks, held[k] + reserve_arr[i])
        else:
            load[k] += work_arr[i]
    if not _deal(prob, order[len(head):], parts, load, top, held, room.tolist(), work_arr):
        return None
    if any(not p for p in parts):
        return None
    return [np.asarray(sorted(p), dtype=np.int64) for p in parts]


def _estimate(top: np.ndarray, load: np.ndarray, held: np.ndarray, n_ranks: int) -> np.ndarray:
    """(M,) a micro-batch's estimated time: max(largest floor, load / free ranks), or
    floor + load / N when its long sequences hold every rank."""
    free = n_ranks - held
    return np.where(free > 0, np.maximum(top, load / np.maximum(free, 1)), top + load / n_ranks)


def _deal(prob: Problem, rest: np.ndarray, parts, load, top, held, room, work: np.ndarray) -> bool:
    """The shorter sequences (longest first) in rounds of one per micro-batch: each round's
    longest to the micro-batch with the lowest estimate, and so on, skipping those
    without token room; False if one fits nowhere. Short sequences are many and
    interchangeable, so rounds balance as well as one-by-one placement at a fraction of
    its cost."""
    m = len(parts)
    load_a, room_a = np.asarray(load, dtype=np.float64), np.asarray(room, dtype=np.int64)
    top_a, free = np.asarray(top), np.maximum(prob.num_ranks - np.asarray(held), 1)
    sizes = prob.lengths.tolist()
    for start in range(0, len(rest), m):
        block = rest[start : start + m].tolist()
        by_need = np.argsort(np.maximum(top_a, load_a / free), kind="stable").tolist()
        rooms = room_a.tolist()
        for i in block:
            k = next((k for k in by_need if rooms[k] >= sizes[i]), None)
            if k is None:
                k = next((k for k in range(m) if rooms[k] >= sizes[i]), None)
                if k is None:
                    return False
            else:
                by_need.remove(k)
            parts[k].append(i)
            rooms[k] -= sizes[i]
            load_a[k] += work[i]
        room_a = np.asarray(rooms, dtype=np.int64)
    return True


def _floors(prob: Problem, share: float, even_s: float) -> tuple[np.ndarray, np.ndarray]:
    """(floor seconds, ranks held) of each long sequence; zeros for the others."""
    if share <= 0:
        return np.zeros(prob.n), np.zeros(prob.n, dtype=np.int64)
    allowed = max([j for j, d in enumerate(prob.degrees) if d <= share * prob.num_ranks], default=0)
    col = np.maximum(prob.min_degree_idx, allowed)
    rows = np.arange(prob.n)
    long = prob.times[rows, prob.min_degree_idx] > even_s
    floor = np.where(long, prob.times[rows, col], 0.0)
    held = np.where(long, prob.deg[col], 0)
    return floor, held


def critical_splits(prob: Problem, m: int):
    """(name, chunks) of critical-first splits (see the module docstring), one per
    budget of the first critical micro-batch: the longest sequence's time at each degree
    that holds it, while that time is above an even share of the step."""
    shortest = prob.shortest()
    c = int(np.argmax(shortest))
    even = float(prob.min_work().sum()) / (prob.num_ranks * m)
    budgets = sorted({float(t) for t in prob.times[c, int(prob.min_degree_idx[c]):] if t > even and t >= shortest[c]})
    for tau in budgets[:MAX_CRITICAL_BUDGETS]:
        chunks = critical_split(prob, m, tau)
        if chunks is not None:
            yield f"critical@{prob.degrees[int(np.argmin(np.abs(prob.times[c] - tau)))]}", chunks


def critical_split(prob: Problem, m: int, first_tau: float) -> list[np.ndarray] | None:
    """The first critical micro-batch at busy time `first_tau`, later ones (while the
    longest sequence left outlasts an even share) at that sequence's fastest time, the
    rest interleaved."""
    left = np.arange(prob.n)
    shortest, cap = prob.shortest(), token_cap(prob, m)
    chunks: list[np.ndarray] = []
    tau = first_tau
    while len(chunks) < m - 1:
        even = float(prob.min_work()[left].sum()) / (prob.num_ranks * (m - len(chunks)))
        c = int(left[np.argmax(shortest[left])])
        if chunks:
            tau = float(shortest[c])
        if tau <= even:
            break
        chunk = _fill_critical(prob, left, c, tau, cap)
        chunks.append(chunk)
        left = np.setdiff1d(left, chunk, assume_unique=True)
    if not chunks or not left.size:
        return None
    rest = interleaved_split(prob, left, m - len(chunks), 0.0)
    return None if rest is None else chunks + list(rest)


def _fill_critical(prob: Problem, left: np.ndarray, c: int, tau: float, cap: int) -> np.ndarray:
    """c plus, by work per token, the sequences of `left` that finish within tau, while
    they fit CRITICAL_FILL of the free rank-seconds and the token cap."""
    work = prob.budget_work(tau)
    others = left[(left != c) & np.isfinite(work[left])]
    order = others[np.argsort(-work[others] / prob.lengths[others], kind="stable")]
    rank_room = CRITICAL_FILL * (prob.num_ranks * tau - float(work[c]))
    token_room = cap - int(prob.lengths[c])
    used_work = np.cumsum(work[order])
    used_tokens = np.cumsum(prob.lengths[order])
    take = int(np.count_nonzero((used_work <= rank_room) & (used_tokens <= token_room)))
    chunk = np.concatenate([[c], order[:take]])
    return np.sort(chunk)
