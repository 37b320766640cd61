"""Baselines: one SP degree for the whole run or batch, and a dynamic-CP-style greedy.

- `static` (DeepSpeed-Ulysses-like): one SP degree d for the whole run (default: the
  smallest usable degree that holds the batch's longest sequence; the simulator passes
  the workload's longest sequence after the max-length filter via `static_degree`), as
  many degree-d groups as the cluster layout holds (spare ranks idle), sequences packed
  into (micro-batch, group) bins of d * C tokens. Time-balanced: the better of token
  best-fit-decreasing and a refill of the same bins longest first, each sequence to the
  least-loaded bin (by time) with token room.
- `static-bfd`: the FlexSP paper's static baseline, token best-fit-decreasing only (each
  sequence, longest first, to the open bin with the least token room that holds it; a
  new micro-batch when none does).
- `batch-ada` / `batch-ada-bfd`: per global batch, the single degree (among those that
  hold the longest sequence) whose `static` / `static-bfd` plan is fastest; the paper's
  per-batch adaptive baseline is `batch-ada-bfd`.
- `dcp-greedy`: in the spirit of dynamic context parallelism (each sequence runs on the
  smallest power-of-two degree whose group holds it, as Megatron-Core's dynamic-CP docs
  size CP groups by length / per-rank capacity), packed greedily: sequences longest
  first, each into the first micro-batch where it fits, joining the existing group of
  its degree with the least s^2/d work and token room, or opening a new group while the
  layout has ranks for it. It is our greedy, not a port of Megatron-Core's scheduler.
"""

from __future__ import annotations

import bisect
import heapq

import numpy as np

from solver.strategies.packing import earliest_finish
from solver.strategies.problem import Group, Problem, StrategyResult, as_groups, step_time


def plan_static(prob: Problem, *, static_degree: int | None = None) -> StrategyResult:
    d = _static_degree(prob, static_degree)
    return StrategyResult(micro_batches=pack_static(prob, d, balance=True), info={"degree": d})


def plan_static_bfd(prob: Problem, *, static_degree: int | None = None) -> StrategyResult:
    d = _static_degree(prob, static_degree)
    return StrategyResult(micro_batches=pack_static(prob, d, balance=False), info={"degree": d})


def plan_batch_ada(prob: Problem) -> StrategyResult:
    return _best_degree(prob, balance=True)


def plan_batch_ada_bfd(prob: Problem) -> StrategyResult:
    return _best_degree(prob, balance=False)


def _static_degree(prob: Problem, static_degree: int | None) -> int:
    longest_needs = prob.degrees[int(prob.min_degree_idx.max())]
    if static_degree is None:
        return longest_needs
    if static_degree not in prob.degrees:
        raise ValueError(
            f"static_degree={static_degree} is not a usable degree for {prob.num_ranks} ranks and "
            f"{prob.spec.num_heads} heads; choose one of {list(prob.degrees)}"
        )
    if static_degree < longest_needs:
        longest = int(prob.lengths.max())
        raise ValueError(
            f"static_degree={static_degree} holds at most {static_degree * prob.capacity} tokens per group but "
            f"the batch has a sequence of {longest} tokens; use static_degree >= {longest_needs} or lower max length"
        )
    return static_degree


def _best_degree(prob: Problem, balance: bool) -> StrategyResult:
    best, best_t, times = None, np.inf, {}
    for d in prob.degrees[int(prob.min_degree_idx.max()) :]:
        mbs = pack_static(prob, d, balance=balance)
        total = step_time(prob, mbs)
        times[str(d)] = total
        if total < best_t - 1e-12:
            best, best_t = (d, mbs), total
    return StrategyResult(micro_batches=best[1], info={"degree": best[0], "step_s_by_degree": times})


def pack_static(prob: Problem, d: int, balance: bool) -> list[list[Group]]:
    """Micro-batches of `num_groups` degree-d groups: token best-fit-decreasing (which
    fixes the micro-batch count M), and with `balance` also the time-balanced refill of
    the same M x num_groups bins; the faster packing is kept."""
    j = prob.degrees.index(d)
    num_groups = int(prob.rank_caps[j]) // d
    bins = _best_fit(prob, j, num_groups)
    if balance:
        refill = _balanced(prob, j, len(bins))
        if refill is not None and _static_time(prob, refill, j, num_groups) < _static_time(prob, bins, j, num_groups):
            bins = refill
    mbs = [bins[m * num_groups : (m + 1) * num_groups] for m in range(len(bins) // num_groups)]
    return [as_groups(prob.spec, [d] * num_groups, mb) for mb in mbs]


def _best_fit(prob: Problem, j: int, num_groups: int) -> list[list[int]]:
    """Token best-fit-decreasing into bins of d * C tokens, `num_groups` bins per
    micro-batch (micro-batch-major); ties go to the earlier bin."""
    cap = prob.degrees[j] * prob.capacity
    rooms: list[tuple[int, int]] = []  # sorted (room, bin)
    bins: list[list[int]] = []
    for i in np.argsort(-prob.lengths, kind="stable").tolist():
        s = int(prob.lengths[i])
        k = bisect.bisect_left(rooms, (s, -1))
        if k == len(rooms):  # open a micro-batch
            start = len(bins)
            bins += [[] for _ in range(num_groups)]
            for b in range(start, start + num_groups):
                bisect.insort(rooms, (cap, b))
            k = bisect.bisect_left(rooms, (s, -1))
        room, b = rooms.pop(k)
        bins[b].append(i)
        bisect.insort(rooms, (room - s, b))
    return bins


def _balanced(prob: Problem, j: int, num_bins: int) -> list[list[int]] | None:
    """Longest first, each sequence to the least-loaded bin with token room."""
    order = np.argsort(-prob.lengths, kind="stable").tolist()
    rows = [[t] for t in prob.times[:, j].tolist()]
    room = [prob.degrees[j] * prob.capacity] * num_bins
    members, _, _, left = earliest_finish(order, prob.lengths.tolist(), rows, [0] * prob.n, room, [0] * num_bins)
    return None if left else members


def _static_time(prob: Problem, bins, j: int, num_groups: int) -> float:
    loads = np.asarray([prob.b1 + prob.times[b, j].sum() if b else 0.0 for b in bins]).reshape(-1, num_groups)
    return float(loads.max(axis=1).sum())


def plan_dcp_greedy(prob: Problem) -> StrategyResult:
    mbs: list[_DcpMicroBatch] = []
    most_room, used = np.zeros(0), np.zeros(0)  # per micro-batch: the quick test of `place`
    for i in np.argsort(-prob.lengths, kind="stable").tolist():
        s, j = int(prob.lengths[i]), int(prob.min_degree_idx[i])
        maybe = np.flatnonzero((most_room >= s) | (used + prob.degrees[j] <= prob.num_ranks)).tolist()
        k = next((k for k in maybe if mbs[k].place(i, s, j)), None)
        if k is None:
            mbs.append(_DcpMicroBatch(prob))
            mbs[-1].place(i, s, j)
            k = len(mbs) - 1
            most_room, used = np.append(most_room, 0.0), np.append(used, 0.0)
        for m in [k, *maybe]:  # what the tried ones learned about their room
            most_room[m], used[m] = mbs[m].most_room, mbs[m].used
    out = [as_groups(prob.spec, mb.group_degrees, mb.members) for mb in mbs]
    return StrategyResult(micro_batches=out)


class _DcpMicroBatch:
    """Groups opened so far in one micro-batch. Per degree, a heap by s^2/d work of the
    groups with room for the current sequence and a heap by room of the others (lengths
    only fall, so a group moves back once sequences are short enough)."""

    def __init__(self, prob: Problem):
        self.prob = prob
        self.caps = prob.rank_caps.tolist()
        self.covered = [0] * len(prob.degrees)  # ranks of groups of degree >= degrees[j] (j >= 1)
        self.used = 0
        self.group_degrees: list[int] = []
        self.members: list[list[int]] = []
        self.room: list[int] = []
        self.work: list[float] = []
        self.most_room = 0  # an upper bound on every group's token room
        self.active: dict[int, list[tuple[float, int]]] = {}  # (work, group)
        self.parked: dict[int, list[tuple[int, int]]] = {}  # (-room, group)

    def can_open(self, j: int) -> bool:
        d = self.prob.degrees[j]
        if self.used + d > self.prob.num_ranks:
            return False
        return all(self.covered[k] + d <= self.caps[k] for k in range(1, j + 1))

    def place(self, i: int, s: int, j: int) -> bool:
        """Open a new group of degree index j if the layout has ranks for it, else join
        the least-loaded group of that degree with token room; False if neither."""
        if self.most_room < s and self.used + self.prob.degrees[j] > self.prob.num_ranks:
            return False  # quick exit: a full micro-batch is tried by every later sequence
        d = self.prob.degrees[j]
        heap = self.active.setdefault(j, [])
        waiting = self.parked.setdefault(j, [])
        if self.can_open(j):
            g = len(self.members)
            self.used += d
            for k in range(1, j + 1):
                self.covered[k] += d
            self.group_degrees.append(d)
            self.members.append([])
            self.room.append(d * self.prob.capacity)
            self.most_room = max(self.most_room, d * self.prob.capacity)
            self.work.append(0.0)
            heapq.heappush(heap, (0.0, g))
        while waiting and -waiting[0][0] >= s:
            g = heapq.heappop(waiting)[1]
            heapq.heappush(heap, (self.work[g], g))
        while heap and self.room[heap[0][1]] < s:
            g = heapq.heappop(heap)[1]
            heapq.heappush(waiting, (-self.room[g], g))
        if not heap:
            self.most_room = max(self.room, default=0)  # exact again
            return False
        g = heapq.heappop(heap)[1]
        self.members[g].append(i)
        self.room[g] -= s
        self.work[g] += float(s) * s / d
        heapq.heappush(heap, (self.work[g], g))
        return True
