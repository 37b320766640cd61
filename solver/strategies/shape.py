"""Choosing a micro-batch's group shape (how many groups of each degree) for `fast`.

A shape is scored cheaply: the *explicit* sequences (those that need a degree > 1, or
that take a sizeable share of the target time on one rank) are placed longest first
into the shape's groups by earliest finish; the remaining short sequences are treated
as a fluid of rank-seconds poured over all groups (a group of degree d absorbs d / r_d
rank-seconds of it per second, r_d >= 1 being the fluid's all-to-all overhead at d).
The score is the higher of the tallest explicit group and the fluid's level.

Search: start from the shapes a fluid relaxation proposes for a few time budgets
(every sequence on its smallest degree that runs it within the budget) and the
one-degree shapes, then hill-climb: merge two groups of degree d into one of 2d, split
one of 2d into two of d, grow a group of d into 2d with spare ranks, or shrink one.
Degree-1 groups are always "whatever ranks are left", so every shape tiles N.
"""

from __future__ import annotations

import numpy as np

from solver.strategies.packing import earliest_finish
from solver.strategies.problem import Problem

BUDGET_SLACKS = (1.0, 1.2, np.inf)
"""Time budgets for the starting shapes, as multiples of the micro-batch's target time;
inf gives the memory-minimal shape (every sequence on its smallest degree)."""
EXPLICIT_SHARE = 0.4
"""A degree-1 sequence is placed explicitly if it takes > this share of the target time."""
MAX_CLIMB_STEPS = 12
"""Hill-climb moves at most (each takes the best improving neighbour)."""


class ShapeScorer:
    """Scores shapes (group counts per degree) for one micro-batch `sub`."""

    def __init__(self, sub: Problem):
        self.sub = sub
        times, lengths, min_idx = sub.times, sub.lengths, sub.min_degree_idx
        self.times, self.lengths, self.min_idx = times, lengths, min_idx
        self.degrees, self.capacity, self.num_ranks = sub.degrees, sub.capacity, sub.num_ranks
        self.deg = sub.deg
        self.target = max(float(sub.min_work().sum()) / sub.num_ranks, float(sub.shortest().max()))
        explicit = (min_idx > 0) | (times[:, 0] > EXPLICIT_SHARE * self.target)
        self.explicit = np.flatnonzero(explicit)
        self.explicit = self.explicit[np.argsort(-lengths[self.explicit], kind="stable")]
        # plain lists for the placement loop: scalar access on them is cheap
        self.explicit_lengths = lengths[self.explicit].tolist()
        self.explicit_rows = times[self.explicit].tolist()
        self.explicit_min_idx = min_idx[self.explicit].tolist()
        self.explicit_work = sub.min_work()[self.explicit]
        fluid = ~explicit
        self.fluid_s = float(times[fluid, 0].sum())
        self.fluid_s_per_token = self.fluid_s / max(float(lengths[fluid].sum()), 1.0)
        per_deg = times[fluid].sum(axis=0) * self.deg  # (D,) fluid rank-seconds on each degree
        if fluid.any() and per_deg[0] > 0:
            self.absorb = self.deg / (per_deg / per_deg[0])  # (D,) fluid rank-seconds per second
        else:
            self.absorb = self.deg.astype(np.float64)

    def score(self, counts: np.ndarray) -> float:
        """Estimated makespan (without b1) of the shape; what its token room cannot hold
        spills to another micro-batch and is charged as its work spread over all ranks."""
        group_idx = tiling(counts, self.degrees, self.num_ranks)
        loads, room, spilled_s = self._explicit_loads(group_idx)
        level, overflow_s = self._fluid_level(group_idx, loads, room)
        return max(float(loads.max(initial=0.0)), level) + (spilled_s + overflow_s) / self.num_ranks

    def _explicit_loads(self, group_idx: list[int]) -> tuple[np.ndarray, np.ndarray, float]:
        """(loads, token room left) per group after placing the explicit sequences, and
        the fewest rank-seconds of those that found no room."""
        room = (self.deg[np.asarray(group_idx)] * self.capacity).tolist()  # token room per group
        lengths = self.explicit_lengths
        _, loads, room, left = earliest_finish(range(len(lengths)), lengths, self.explicit_rows,
                                               self.explicit_min_idx, room, group_idx)
        spilled = float(self.explicit_work[left].sum()) if left else 0.0
        return np.asarray(loads), np.asarray(room, dtype=np.float64), spilled

    def _fluid_level(self, group_idx: list[int], loads: np.ndarray, room: np.ndarray) -> tuple[float, float]:
        """(level L the fluid reaches, fluid rank-seconds that do not fit): sum_g
        min(rate_g (L - load_g)+, cap_g) = fluid, where cap_g is what the group's token
        room holds; when the rooms cannot hold it all, L is where every room is full."""
        if self.fluid_s <= 0:
            return 0.0, 0.0
        rate = self.absorb[np.asarray(group_idx)]  # (G,)
        cap = room * self.fluid_s_per_token  # (G,) rank-seconds of fluid each group's tokens allow
        # f(L) is piecewise linear: group g starts absorbing at load_g (slope += rate_g)
        # and is full at load_g + cap_g / rate_g (slope -= rate_g)
        xs = np.concatenate([loads, loads + cap / rate])  # (2G,)
        if cap.sum() < self.fluid_s * (1 - 1e-9):
            return float(xs.max()), self.fluid_s - float(cap.sum())
        ds = np.concatenate([rate, -rate])
        order = np.argsort(xs, kind="stable")
        xs, slope = xs[order], np.cumsum(ds[order])  # slope right after each breakpoint
        filled = np.concatenate([[0.0], np.cumsum(slope[:-1] * np.diff(xs))])  # (2G,) f at each breakpoint
        k = int(np.searchsorted(filled, self.fluid_s, side="left"))
        if k >= len(xs):
            return float(xs[-1]), 0.0
        if k == 0:
            return float(xs[0]), 0.0
        return float(xs[k - 1] + (self.fluid_s - filled[k - 1]) / max(slope[k - 1], 1e-300)), 0.0

    def neighbours(self, counts: np.ndarray):
        """Shapes one move away that fit the cluster: merge two groups of degree d into
        one of 2d, split one of 2d into two of d, grow a group of d to 2d with d spare
        ranks, or shrink one of 2d to d, freeing d ranks. Degree-1 groups are the spare
        ranks (counts[0] = 0)."""
        spare = self.num_ranks - int((counts[1:] * self.deg[1:]).sum())
        for j in range(len(self.degrees) - 1):
            if self.degrees[j + 1] != 2 * self.degrees[j]:
                continue
            d = int(self.deg[j])
            have = spare if j == 0 else counts[j]
            moves = []
            if have >= 2:  # merge
                moves.append(_moved(counts, j, -2 if j else 0, 1))
            if counts[j + 1] >= 1:  # split
                moves.append(_moved(counts, j, 2 if j else 0, -1))
            if j > 0 and counts[j] >= 1 and spare >= d:  # grow
                moves.append(_moved(counts, j, -1, 1))
            if j > 0 and counts[j + 1] >= 1:  # shrink
                moves.append(_moved(counts, j, 1, -1))
            yield from (m for m in moves if self.sub.fits(m))


def _moved(counts: np.ndarray, j: int, delta_j: int, delta_up: int) -> np.ndarray:
    out = counts.copy()
    out[j] += delta_j
    out[j + 1] += delta_up
    return out


def search_shape(
    scorer: ShapeScorer, climb_steps: int = MAX_CLIMB_STEPS, proposals: list[np.ndarray] = ()
) -> list[np.ndarray]:
    """Shapes (group counts per degree, spare ranks as degree 1) best first, hill-climbed
    from `proposals` (the LP's rounded shapes), the fluid relaxation's starting shapes
    and the one-degree shapes; with climb_steps 0 only the starts are scored."""
    starts = [np.asarray(c, dtype=np.int64) for c in proposals if scorer.sub.fits(np.asarray(c))]
    for slack in BUDGET_SLACKS:
        counts = fluid_counts(scorer, scorer.target * slack)
        if counts is not None:
            starts.append(counts)
    if climb_steps > 0 or not starts:
        starts += uniform_shapes(scorer)
    if not starts:
        return []
    scored = {tuple(c): scorer.score(c) for c in starts}
    current = min(starts, key=lambda c: scored[tuple(c)])
    for _ in range(climb_steps):
        best = None
        for cand in scorer.neighbours(current):
            key = tuple(cand)
            if key not in scored:
                scored[key] = scorer.score(cand)
            if scored[key] < scored[tuple(current)] - 1e-12 and (best is None or scored[key] < scored[tuple(best)]):
                best = cand
        if best is None:
            break
        current = best
    ranked = sorted(scored.items(), key=lambda kv: kv[1])  # shapes the scorer cannot pack (inf) last
    return [np.asarray(k) for k, _ in ranked]


def uniform_shapes(scorer: ShapeScorer) -> list[np.ndarray]:
    """One degree for the whole micro-batch (as many groups as fit, spare ranks as degree
    1), for every degree that holds its longest sequence: batch-ada's shapes."""
    out = []
    for j in range(int(scorer.min_idx.max()), len(scorer.degrees)):
        if j == 0:
            out.append(np.zeros(len(scorer.degrees), dtype=np.int64))
            continue
        counts = np.zeros(len(scorer.degrees), dtype=np.int64)
        counts[j] = int(scorer.sub.rank_caps[j]) // int(scorer.deg[j])
        out.append(counts)
    return out


def fluid_counts(scorer: ShapeScorer, budget: float) -> np.ndarray | None:
    """Groups per degree when every sequence takes its smallest degree that runs it
    within `budget`: max(ceil(time_d / budget), ceil(tokens_d / (d C)), #{t > budget/2}),
    shrunk degree by degree (smallest first) until the shape fits in N ranks."""
    times, min_idx = scorer.times, scorer.min_idx
    num_deg = len(scorer.degrees)
    fits = (np.arange(num_deg)[None, :] >= min_idx[:, None]) & (times <= budget)  # (n, D)
    choice = np.where(fits.any(axis=1), np.argmax(fits, axis=1), num_deg - 1)  # (n,)
    t = times[np.arange(len(choice)), choice]
    time_d = np.bincount(choice, weights=t, minlength=num_deg)
    tokens_d = np.bincount(choice, weights=scorer.lengths, minlength=num_deg)
    big_d = np.bincount(choice, weights=(t > budget / 2), minlength=num_deg)
    counts = np.maximum.reduce(
        [np.ceil(time_d / budget - 1e-9), np.ceil(tokens_d / (scorer.deg * scorer.capacity)), big_d]
    ).astype(np.int64)
    counts[0] = 0  # degree-1 groups are whatever ranks are left
    return fit_to_layout(scorer.sub, counts, need=np.bincount(choice, minlength=num_deg) > 0)


def fit_to_layout(sub: Problem, counts: np.ndarray, need: np.ndarray) -> np.ndarray | None:
    """`counts` shrunk until the shape fits the cluster: give up groups of the smallest
    degrees first, keeping one group of every degree in `need` while another is left;
    None if even that does not fit."""
    counts = counts.copy()
    for j in range(1, len(counts)):
        while counts[j] > int(need[j]) and not sub.fits(counts):
            covered = np.cumsum((counts * sub.deg)[::-1])[::-1]
            over = int(max(0, (covered[1:] - sub.rank_caps[1:]).max()))
            counts[j] -= max(1, min(int(counts[j]) - int(need[j]), -(-over // int(sub.deg[j]))))
    if sub.fits(counts):
        return counts
    for j in range(1, len(counts)):  # drop kept groups of small degrees: the big ones hold more
        while counts[j] > 0 and not sub.fits(counts):
            counts[j] -= 1
    return counts if sub.fits(counts) else None


def tiling(counts: np.ndarray, degrees, num_ranks: int) -> list[int]:
    """Degree indices of the groups, largest first; spare ranks become degree-1 groups."""
    group_idx = [j for j in range(len(degrees) - 1, 0, -1) for _ in range(int(counts[j]))]
    spare = num_ranks - sum(degrees[j] for j in group_idx)
    return group_idx + [0] * spare
