"""Moving sequences between micro-batches: the step-level local search of `fast`.

The step takes sum_m (b1 + tau_m), tau_m the slowest group's load of micro-batch m. A
sequence in micro-batch A's slowest group can move to a group of another micro-batch B
(whose degree holds it, with token room) when A's tau falls by more than B's rises:
that lowers the step. Each round takes, for every micro-batch with the largest tau
first, the sequences of its slowest group (longest time first) and the best such move;
rounds repeat while one improves. Within-micro-batch moves are `packing.local_search`'s.
"""

from __future__ import annotations

import numpy as np

from solver.strategies.problem import Problem

EPS = 1e-12


class _Groups:
    """Every group of every micro-batch in flat arrays, over global sequence ids."""

    def __init__(self, prob: Problem, micro_batches):
        self.prob = prob
        self.gidx = np.asarray([j for g, _ in micro_batches for j in g], dtype=np.int64)  # (G,)
        self.mb = np.repeat(np.arange(len(micro_batches)), [len(g) for g, _ in micro_batches])  # (G,)
        self.members = [list(m) for _, ms in micro_batches for m in ms]
        self.load = np.asarray([float(prob.times[m, j].sum()) for j, m in zip(self.gidx, self.members)])
        tokens = np.asarray([float(prob.lengths[m].sum()) for m in self.members])
        self.room = prob.deg[self.gidx] * float(prob.capacity) - tokens
        self.tau = np.zeros(len(micro_batches))
        np.maximum.at(self.tau, self.mb, self.load)

    def improve(self, a: int) -> bool:
        """The best improving move of a sequence out of micro-batch a's slowest group."""
        prob, load = self.prob, self.load
        mine = np.flatnonzero(self.mb == a)
        g = int(mine[np.argmax(load[mine])])
        rest = float(np.delete(load[mine], int(np.argmax(load[mine]))).max(initial=0.0))
        j_src = int(self.gidx[g])
        for i in sorted(self.members[g], key=lambda i: -prob.times[i, j_src]):
            gain = self.tau[a] - max(rest, load[g] - prob.times[i, j_src])
            if gain <= EPS:
                continue
            rise = np.maximum(load + prob.times[i, self.gidx] - self.tau[self.mb], 0.0)  # (G,)
            ok = (self.mb != a) & (self.gidx >= prob.min_degree_idx[i]) & (self.room >= prob.lengths[i])
            h = int(np.argmin(np.where(ok, rise, np.inf)))
            if ok[h] and gain - rise[h] > EPS:
                self._move(i, g, h)
                return True
        return False

    def _move(self, i: int, g: int, h: int) -> None:
        prob = self.prob
        self.members[g].remove(i)
        self.members[h].append(i)
        self.load[g] -= prob.times[i, self.gidx[g]]
        self.load[h] += prob.times[i, self.gidx[h]]
        self.room[g] += prob.lengths[i]
        self.room[h] -= prob.lengths[i]
        for m in (self.mb[g], self.mb[h]):
            self.tau[m] = self.load[self.mb == m].max()

    def result(self) -> list[tuple[list[int], list[list[int]]]]:
        out = []
        for m in range(len(self.tau)):
            mine = np.flatnonzero(self.mb == m)
            out.append((self.gidx[mine].tolist(), [self.members[g] for g in mine]))
        return out


def rebalance(prob: Problem, micro_batches: list[tuple[list[int], list[list[int]]]], max_rounds: int = 20):
    """[(group degree indices, members as global ids)] per micro-batch, improved."""
    if len(micro_batches) < 2:
        return micro_batches
    groups = _Groups(prob, micro_batches)
    for _ in range(max_rounds):
        if not any(groups.improve(a) for a in np.argsort(-groups.tau, kind="stable").tolist()):
            break
    return groups.result()
