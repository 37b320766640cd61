"""Greedy assignment of sequences to a fixed set of groups, and a local search on it.

Both work on one micro-batch: `times` (n, D) seconds of each sequence on each candidate
degree, `lengths` (n,), `min_idx` (n,) the smallest degree index that holds each
sequence, and the groups' degree indices. A group's time is b1 + its load; b1 is the
same for every busy group, so comparing loads compares finish times.
"""

from __future__ import annotations

import heapq

import numpy as np

EPS = 1e-12


def assign_earliest_finish(
    times: np.ndarray,
    lengths: np.ndarray,
    min_idx: np.ndarray,
    group_idx: list[int],
    degrees: tuple[int, ...],
    capacity: int,
    by_room: bool = False,
) -> list[list[int]] | None:
    """Longest first, each sequence to the group that finishes it earliest among the
    groups whose degree holds it and that still have token room (LPT / earliest finish
    time). Returns local sequence indices per group, or None if one fits nowhere.
    `by_room`: instead, to the group with the most token room left (worst fit), for
    micro-batches whose tokens nearly fill the cluster."""
    if by_room:
        return _assign_by_room(lengths, min_idx, group_idx, degrees, capacity)
    order = np.argsort(-lengths, kind="stable").tolist()
    placed = earliest_finish(order, lengths.tolist(), times.tolist(), min_idx.tolist(),
                             [degrees[j] * capacity for j in group_idx], group_idx)
    return None if placed is None else placed[0]


def earliest_finish(
    order: list[int],
    lengths: list[int],
    rows: list[list[float]],
    min_idx: list[int],
    room: list[float],
    group_idx: list[int],
) -> tuple[list[list[int]], list[float], list[float]] | None:
    """The greedy core shared by the assignment and the shape scorer: in `order`, each
    sequence i goes to the group that finishes it earliest (rows[i][j] seconds on degree
    class j) among classes >= min_idx[i] with token room for it. `room` is each group's
    token room. Returns (members, loads, room left) per group, or None if one fits nowhere.
    Plain lists throughout: this runs per candidate shape, where scalar access dominates."""
    heaps: dict[int, list[tuple[float, int]]] = {}
    for g, j in enumerate(group_idx):
        heaps.setdefault(j, []).append((0.0, g))
    classes = sorted(heaps)
    room = list(room)
    loads = [0.0] * len(group_idx)
    members: list[list[int]] = [[] for _ in group_idx]
    smallest = min(lengths, default=0)
    for i in order:
        s, t_i = lengths[i], rows[i]
        best = None  # (finish, class)
        parked: list[tuple[int, tuple[float, int]]] = []
        for j in classes:
            if j < min_idx[i]:
                continue
            heap = heaps[j]
            while heap and room[heap[0][1]] < s:  # full for this one; maybe not for later ones
                entry = heapq.heappop(heap)
                if room[entry[1]] >= smallest:  # else it is full for good
                    parked.append((j, entry))
            if heap:
                finish = heap[0][0] + t_i[j]
                if best is None or finish < best[0] - EPS:
                    best = (finish, j)
        if best is not None:
            finish, j = best
            _, g = heapq.heappop(heaps[j])  # the top that has room (full ones are parked)
            members[g].append(i)
            loads[g] = finish
            room[g] -= s
            heapq.heappush(heaps[j], (finish, g))
        for j, entry in parked:
            heapq.heappush(heaps[j], entry)
        if best is None:
            return None
    return members, loads, room


def _assign_by_room(lengths, min_idx, group_idx, degrees, capacity) -> list[list[int]] | None:
    room = np.asarray([degrees[j] * capacity for j in group_idx], dtype=np.int64)
    gidx = np.asarray(group_idx)
    members: list[list[int]] = [[] for _ in group_idx]
    for i in np.argsort(-lengths, kind="stable").tolist():
        ok = (gidx >= min_idx[i]) & (room >= lengths[i])
        if not ok.any():
            return None
        g = int(np.argmax(np.where(ok, room, -1)))
        members[g].append(i)
        room[g] -= lengths[i]
    return members


def local_search(
    times: np.ndarray,
    lengths: np.ndarray,
    min_idx: np.ndarray,
    group_idx: list[int],
    degrees: tuple[int, ...],
    capacity: int,
    members: list[list[int]],
    max_rounds: int = 200,
) -> list[list[int]]:
    """Shrink the slowest group by moving one of its sequences elsewhere or swapping it
    with a shorter one, while that strictly lowers the slowest of the two groups touched.
    Stops when the slowest group admits no such move (a local optimum) or after
    `max_rounds` improvements."""
    n = len(lengths)
    gidx = np.asarray(group_idx)
    where = np.empty(n, dtype=np.int64)
    for g, ids in enumerate(members):
        where[ids] = g
    t_in = times[np.arange(n), gidx[where]]  # (n,) each sequence's time in its group
    load = np.bincount(where, weights=t_in, minlength=len(gidx))
    tokens = np.bincount(where, weights=lengths, minlength=len(gidx))
    room = np.asarray([degrees[j] for j in group_idx], dtype=np.float64) * capacity - tokens
    holds = gidx[None, :] >= min_idx[:, None]  # (n, G) the group's degree holds the sequence
    for _ in range(max_rounds):
        g = int(np.argmax(load))
        if not _improve(g, times, lengths, holds, gidx, where, load, room):
            break
    out: list[list[int]] = [[] for _ in group_idx]
    for i, g in enumerate(where.tolist()):
        out[g].append(i)
    return out


def _improve(g, times, lengths, holds, gidx, where, load, room) -> bool:
    """One improving move or swap out of group g; updates the arrays in place."""
    top = load[g]
    inside = np.flatnonzero(where == g)
    outside = np.flatnonzero(where != g)
    for i in inside[np.argsort(-times[inside, gidx[g]])]:
        t_here = times[i, gidx[g]]
        # move i to the group h where it finishes earliest
        new_h = load + times[i, gidx]  # (G,)
        ok = holds[i] & (room >= lengths[i]) & (new_h < top - EPS)
        ok[g] = False
        if ok.any():
            h = int(np.argmin(np.where(ok, new_h, np.inf)))
            _apply(i, g, h, times, lengths, gidx, where, load, room)
            return True
        if outside.size == 0:
            continue
        # swap i with k from another group h: both groups must end below `top`
        h = where[outside]
        new_g = top - t_here + times[outside, gidx[g]]
        new_hk = load[h] - times[outside, gidx[h]] + times[i, gidx[h]]
        fits = (
            holds[outside, g]
            & holds[i, h]
            & (room[g] + lengths[i] - lengths[outside] >= 0)
            & (room[h] + lengths[outside] - lengths[i] >= 0)
        )
        worst = np.maximum(new_g, new_hk)
        ok = fits & (worst < top - EPS)
        if ok.any():
            k = int(outside[np.argmin(np.where(ok, worst, np.inf))])
            hk = int(where[k])
            _apply(i, g, hk, times, lengths, gidx, where, load, room)
            _apply(k, hk, g, times, lengths, gidx, where, load, room)
            return True
    return False


def _apply(i, src, dst, times, lengths, gidx, where, load, room) -> None:
    load[src] -= times[i, gidx[src]]
    load[dst] += times[i, gidx[dst]]
    room[src] += lengths[i]
    room[dst] -= lengths[i]
    where[i] = dst
