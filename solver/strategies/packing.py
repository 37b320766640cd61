"""Assigning one micro-batch's sequences to a fixed set of groups, and a local search.

Everything works on a micro-batch `Problem` (`Problem.subset` of the step) and the
groups' degree indices `group_idx`. A group's time is b1 + its load; b1 is the same for
every busy group, so comparing loads compares finish times.

The assignment is longest first, each sequence to the group that finishes it earliest
among those whose degree holds it and that have token room (LPT / earliest finish).
When tokens nearly fill the groups that can fail where a packing exists, so two
token-first packings follow: worst fit (most room left) and best fit decreasing (least
room left that still holds it), both exact about memory; the local search then evens
out the times.
"""

from __future__ import annotations

import bisect
import heapq

import numpy as np

from solver.strategies.problem import Problem

EPS = 1e-12
MOVE_CANDIDATES = 8
"""The local search tries moves and swaps of the slowest group's 8 longest-running sequences."""


def assign(sub: Problem, group_idx: list[int]) -> tuple[list[list[int]], list[int]]:
    """(local sequence indices per group, sequences no group had room for). Earliest
    finish first; if it leaves some out, the token-first packings too, and the one that
    leaves the fewest tokens out wins."""
    order = np.argsort(-sub.lengths, kind="stable").tolist()
    room = [sub.degrees[j] * sub.capacity for j in group_idx]
    members, _, _, left = earliest_finish(order, sub.lengths.tolist(), sub.times.tolist(),
                                          sub.min_degree_idx.tolist(), room, group_idx)
    best = (members, left)
    for best_fit in (False, True):
        if not best[1]:
            break
        other = _pack_tokens(sub, group_idx, best_fit)
        if int(sub.lengths[other[1]].sum()) < int(sub.lengths[best[1]].sum()):
            best = other
    return best


def earliest_finish(
    order: list[int],
    lengths: list[int],
    rows: list[list[float]],
    min_idx: list[int],
    room: list[float],
    group_idx: list[int],
) -> tuple[list[list[int]], list[float], list[float], list[int]]:
    """The greedy core shared by the assignment, the shape scorer and the baselines: in
    `order` (longest first), each sequence i goes to the group that finishes it earliest
    (rows[i][j] seconds on degree class j) among classes >= min_idx[i] with token room
    for it. `room` is each group's token room. Returns (members, loads, room left) per
    group and the sequences no group had room for.

    Per class, a heap by load holds the groups with room for the current sequence and a
    heap by room the ones without; lengths only fall along `order`, so a group moves
    back once the sequences get short enough. Plain lists: scalar access dominates."""
    active: dict[int, list[tuple[float, int]]] = {}
    parked: dict[int, list[tuple[float, int]]] = {}  # (-room, group)
    for g, j in enumerate(group_idx):
        active.setdefault(j, []).append((0.0, g))
        parked.setdefault(j, [])
    classes = sorted(active)
    room = list(room)
    loads = [0.0] * len(group_idx)
    members: list[list[int]] = [[] for _ in group_idx]
    left: list[int] = []
    for i in order:
        s, t_i = lengths[i], rows[i]
        best = None  # (finish, class)
        for j in classes:
            if j < min_idx[i]:
                continue
            heap, waiting = active[j], parked[j]
            while waiting and -waiting[0][0] >= s:  # short enough now
                g = heapq.heappop(waiting)[1]
                heapq.heappush(heap, (loads[g], g))
            while heap and room[heap[0][1]] < s:
                g = heapq.heappop(heap)[1]
                heapq.heappush(waiting, (-room[g], g))
            if heap:
                finish = heap[0][0] + t_i[j]
                if best is None or finish < best[0] - EPS:
                    best = (finish, j)
        if best is None:
            left.append(i)
            continue
        finish, j = best
        g = heapq.heappop(active[j])[1]
        members[g].append(i)
        loads[g] = finish
        room[g] -= s
        heapq.heappush(active[j], (finish, g))
    return members, loads, room, left


def _pack_tokens(sub: Problem, group_idx: list[int], best_fit: bool) -> tuple[list[list[int]], list[int]]:
    """Longest first, each sequence to the group (whose degree holds it) with the most
    (worst fit) or least (best fit) token room that still takes it."""
    rooms: dict[int, list[tuple[int, int]]] = {}  # per degree class, sorted (room, group)
    for g, j in enumerate(group_idx):
        rooms.setdefault(j, []).append((sub.degrees[j] * sub.capacity, g))
    for entries in rooms.values():
        entries.sort()
    classes = sorted(rooms)
    members: list[list[int]] = [[] for _ in group_idx]
    left: list[int] = []
    lengths, min_idx = sub.lengths.tolist(), sub.min_degree_idx.tolist()
    for i in np.argsort(-sub.lengths, kind="stable").tolist():
        s, pick = lengths[i], None  # (room, class, position)
        for j in classes:
            entries = rooms[j]
            if j < min_idx[i] or not entries or entries[-1][0] < s:
                continue
            k = bisect.bisect_left(entries, (s, -1)) if best_fit else len(entries) - 1
            if pick is None or (entries[k][0] < pick[0] if best_fit else entries[k][0] > pick[0]):
                pick = (entries[k][0], j, k)
        if pick is None:
            left.append(i)
            continue
        room, j, k = pick
        g = rooms[j].pop(k)[1]
        members[g].append(i)
        bisect.insort(rooms[j], (room - s, g))
    return members, left


def makespan(sub: Problem, group_idx: list[int], members: list[list[int]]) -> float:
    """Largest group load (without b1)."""
    if not any(members):
        return 0.0
    sizes = [len(m) for m in members]
    seqs = np.concatenate([np.asarray(m, dtype=np.int64) for m in members])
    group = np.repeat(np.arange(len(members)), sizes)
    col = np.repeat(np.asarray(group_idx, dtype=np.int64), sizes)
    return float(np.bincount(group, weights=sub.times[seqs, col], minlength=len(members)).max())


def local_search(sub: Problem, group_idx: list[int], members: list[list[int]], max_rounds: int = 200) -> list[list[int]]:
    """Shrink the slowest group by moving one of its sequences elsewhere or swapping it
    with a shorter one, while that strictly lowers the slowest of the two groups touched.
    Stops when the slowest group admits no such move (a local optimum) or after
    `max_rounds` improvements."""
    n = sub.n
    if n == 0 or max_rounds <= 0:
        return members
    gidx = np.asarray(group_idx)
    where = np.empty(n, dtype=np.int64)
    for g, ids in enumerate(members):
        where[ids] = g
    state = _State(sub.times, sub.lengths.astype(np.float64), gidx, where)
    state.room = sub.deg[gidx].astype(np.float64) * sub.capacity - state.tokens
    state.holds = gidx[None, :] >= sub.min_degree_idx[:, None]  # (n, G) the group's degree holds the sequence
    for _ in range(max_rounds):
        if not state.improve(int(np.argmax(state.load))):
            break
    out: list[list[int]] = [[] for _ in group_idx]
    for i, g in enumerate(state.where.tolist()):
        out[g].append(i)
    return out


class _State:
    """Where every sequence is, and each group's load and token room."""

    def __init__(self, times: np.ndarray, lengths: np.ndarray, gidx: np.ndarray, where: np.ndarray):
        self.times, self.lengths, self.gidx, self.where = times, lengths, gidx, where
        t_in = times[np.arange(len(where)), gidx[where]]  # (n,) each sequence's time in its group
        self.load = np.bincount(where, weights=t_in, minlength=len(gidx))
        self.tokens = np.bincount(where, weights=lengths, minlength=len(gidx))
        self.room = np.zeros(len(gidx))
        self.holds = np.zeros((len(where), len(gidx)), dtype=bool)

    def improve(self, g: int) -> bool:
        """One improving move or swap out of group g; updates the state in place."""
        times, gidx, load, room = self.times, self.gidx, self.load, self.room
        top = load[g]
        inside = np.flatnonzero(self.where == g)
        outside = np.flatnonzero(self.where != g)
        for i in inside[np.argsort(-times[inside, gidx[g]])][:MOVE_CANDIDATES]:
            # move i to the group h where it finishes earliest
            new_h = load + times[i, gidx]  # (G,)
            ok = self.holds[i] & (room >= self.lengths[i]) & (new_h < top - EPS)
            ok[g] = False
            if ok.any():
                self._apply(i, g, int(np.argmin(np.where(ok, new_h, np.inf))))
                return True
            if outside.size == 0:
                continue
            # swap i with k from another group h: both groups must end below `top`
            h = self.where[outside]
            new_g = top - times[i, gidx[g]] + times[outside, gidx[g]]
            new_hk = load[h] - times[outside, gidx[h]] + times[i, gidx[h]]
            fits = (
                self.holds[outside, g]
                & self.holds[i, h]
                & (room[g] + self.lengths[i] - self.lengths[outside] >= 0)
                & (room[h] + self.lengths[outside] - self.lengths[i] >= 0)
            )
            worst = np.maximum(new_g, new_hk)
            ok = fits & (worst < top - EPS)
            if ok.any():
                k = int(outside[np.argmin(np.where(ok, worst, np.inf))])
                hk = int(self.where[k])
                self._apply(i, g, hk)
                self._apply(k, hk, g)
                return True
        return False

    def _apply(self, i: int, src: int, dst: int) -> None:
        self.load[src] -= self.times[i, self.gidx[src]]
        self.load[dst] += self.times[i, self.gidx[dst]]
        self.room[src] += self.lengths[i]
        self.room[dst] -= self.lengths[i]
        self.where[i] = dst
