"""The LP at the core of `fast`: how much of each length bucket runs at each degree, and
how many ranks each degree gets, per micro-batch. Built with PuLP, solved by HiGHS.

Histogram: the longest sequences of a micro-batch are buckets of their own (they decide
the degrees), the rest share log-spaced length buckets. Bucket k has n_k sequences,
mean length S_k, and at degree j the mean time t_kj, rank-seconds r_kj = d_j t_kj and
the time of its longest member T_kj.

For micro-batch m, with tau_m its busy time (the makespan without b1):
    min  sum_m tau_m
    s.t. sum_j x[k,j] = n_k                              every sequence runs somewhere
         sum_k x[k,j] r_kj <= phi[j]                      work of degree j fits its rank-seconds
         sum_{j' >= j} phi[j'] <= caps_j tau_m            ranks (node-aware layout limits)
         sum_k x[k,j] S_k <= C phi[j] / tau0_m            tokens fit the ranks of degree j
         sum_j x[k,j] T_kj <= n_k tau_m                   a bucket's sequences finish in time
x[k,j] >= 0 only where degree j holds every member of bucket k; phi[j] = ranks of degree j
x tau_m. The token row is bilinear (ranks = phi / tau); it is linearised at tau0_m, and
x[k,j] exists only where degree j finishes bucket k's longest member within tau0_m (as
the fluid bound allows). Starting from the fluid time, the LP is re-solved with tau0_m =
tau_m while tau_m rises by more than 1%: a larger tau0 tightens the token row and
allows more degrees, and tau_m climbs to a fixed point where both rules are exact.

The LP relaxes integrality (fractional groups and sequences) but buckets use mean
values, so it is a planning model, not a bound; `solver.bounds` holds the proven bound.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pulp

from solver.strategies.highs import BulkHiGHS
from solver.strategies.problem import Problem
from solver.strategies.shape import fit_to_layout

NUM_SINGLETONS = 8
"""Longest sequences per micro-batch that get a bucket of their own."""
BUCKET_RATIO = 2.0
"""Length ratio between consecutive shared buckets."""
MAX_SOLVES = 2
RISE_TOL = 0.01


@dataclass(frozen=True)
class LPShape:
    """The LP's answer for one micro-batch."""

    ranks: np.ndarray
    """(D,) ranks the LP gives each degree (fractional)."""
    busy_s: float
    """tau: the LP's makespan without b1."""
    big: np.ndarray
    """(D,) sequences at each degree that take over half of tau (each needs a group)."""


@dataclass(frozen=True)
class _Histogram:
    counts: np.ndarray  # (K,)
    tokens: np.ndarray  # (K,) mean length
    rank_s: np.ndarray  # (K, D) mean rank-seconds, inf where a member does not fit
    longest_s: np.ndarray  # (K, D) time of the longest member


def histogram(sub: Problem) -> _Histogram:
    order = np.argsort(-sub.lengths, kind="stable")
    lone = order[: min(NUM_SINGLETONS, sub.n)]
    rest = order[len(lone) :]
    keys = np.full(sub.n, -1, dtype=np.int64)
    keys[lone] = np.arange(len(lone))
    if rest.size:
        logs = np.log(sub.lengths[rest].astype(np.float64))
        shared = np.floor((logs.max() - logs) / np.log(BUCKET_RATIO)).astype(np.int64)
        keys[rest] = len(lone) + shared
    _, bucket = np.unique(keys, return_inverse=True)
    counts = np.bincount(bucket)
    tokens = np.bincount(bucket, weights=sub.lengths) / counts
    num_k = len(counts)
    rank_s = np.stack([np.bincount(bucket, weights=sub.rank_s[:, j], minlength=num_k)
                       for j in range(len(sub.degrees))], axis=1) / counts[:, None]
    longest_s = np.zeros_like(rank_s)
    np.maximum.at(longest_s, bucket, sub.times)
    min_idx = np.zeros(num_k, dtype=np.int64)
    np.maximum.at(min_idx, bucket, sub.min_degree_idx)
    rank_s[np.arange(len(sub.degrees))[None, :] < min_idx[:, None]] = np.inf
    return _Histogram(counts, tokens, rank_s, longest_s)


def solve_shapes(subs: list[Problem], tau0: list[float]) -> tuple[list[LPShape], float, int]:
    """The LP for every micro-batch of one split (one model, blocks per micro-batch).
    Returns (shapes, LP solve seconds, number of solves)."""
    hists = [histogram(sub) for sub in subs]
    tau0 = [max(t, 1e-9) for t in tau0]
    lp_s, solves = 0.0, 0
    while True:
        model, taus, xs, phis = _build(subs, hists, tau0)
        began = time.thread_time()
        model.solve(BulkHiGHS())
        lp_s += time.thread_time() - began
        solves += 1
        if model.status != pulp.LpStatusOptimal:
            raise RuntimeError(f"fast's LP ended with status {pulp.LpStatus[model.status]}; this is a bug")
        new = [max(float(t.value() or 0.0), 1e-9) for t in taus]
        if solves >= MAX_SOLVES or all(n <= o * (1 + RISE_TOL) for n, o in zip(new, tau0)):
            break
        tau0 = [max(n, o) for n, o in zip(new, tau0)]
    shapes = []
    for sub, hist, tau, x, phi in zip(subs, hists, new, xs, phis):
        ranks = np.asarray([float(p.value() or 0.0) for p in phi]) / tau
        big = np.zeros(len(sub.degrees))
        for (k, j), var in x.items():
            if hist.longest_s[k, j] > 0.5 * tau:
                big[j] += float(var.value() or 0.0)
        shapes.append(LPShape(ranks=ranks, busy_s=tau, big=big))
    return shapes, lp_s, solves


def _build(subs, hists, tau0):
    model = pulp.LpProblem("fast_shape", pulp.LpMinimize)
    taus, xs, phis = [], [], []
    for m, (sub, hist, t0) in enumerate(zip(subs, hists, tau0)):
        tau = model.add_variable(f"tau_{m}", lowBound=0)
        phi = [model.add_variable(f"phi_{m}_{j}", lowBound=0) for j in range(len(sub.degrees))]
        x = {
            (k, j): model.add_variable(f"x_{m}_{k}_{j}", lowBound=0)
            for k in range(len(hist.counts)) for j in _allowed(hist, k, t0)
        }
        _add_rows(model, sub, hist, t0, tau, phi, x)
        taus.append(tau)
        xs.append(x)
        phis.append(phi)
    model.setObjective(pulp.LpAffineExpression({t: 1.0 for t in taus}))
    return model, taus, xs, phis


def _allowed(hist: _Histogram, k: int, tau0: float) -> list[int]:
    """Degrees bucket k may use: those that hold it and finish its longest member within
    tau0 (the fluid's rule), or its fastest one if none does."""
    holds = np.flatnonzero(np.isfinite(hist.rank_s[k]))
    quick = [int(j) for j in holds if hist.longest_s[k, j] <= tau0 * (1 + 1e-9)]
    return quick or [int(holds[np.argmin(hist.longest_s[k, holds])])]


def _add_rows(model, sub: Problem, hist: _Histogram, tau0: float, tau, phi, x) -> None:
    def row(coefs: dict, sense, rhs: float = 0.0) -> None:
        model.addConstraint(pulp.LpConstraint(pulp.LpAffineExpression(coefs), sense, rhs=rhs))

    by_k: dict[int, dict] = {}
    by_j: dict[int, list] = {}
    for (k, j), var in x.items():
        by_k.setdefault(k, {})[var] = 1.0
        by_j.setdefault(j, []).append((k, var))
    for k, coefs in by_k.items():
        row(coefs, pulp.LpConstraintEQ, float(hist.counts[k]))
        late = {x[k, j]: float(hist.longest_s[k, j]) for j in range(len(sub.degrees)) if (k, j) in x}
        late[tau] = -float(hist.counts[k])
        row(late, pulp.LpConstraintLE)
    for j, members in by_j.items():
        work = {var: float(hist.rank_s[k, j]) for k, var in members}
        work[phi[j]] = -1.0
        row(work, pulp.LpConstraintLE)
        tokens = {var: float(hist.tokens[k]) for k, var in members}
        tokens[phi[j]] = -sub.capacity / tau0
        row(tokens, pulp.LpConstraintLE)
    for j in range(len(sub.degrees)):
        if j not in by_j:
            model.addConstraint(pulp.LpConstraint(pulp.LpAffineExpression({phi[j]: 1.0}), pulp.LpConstraintEQ, rhs=0.0))
        ranks = {phi[jj]: 1.0 for jj in range(j, len(sub.degrees))}
        ranks[tau] = -float(sub.rank_caps[j])
        row(ranks, pulp.LpConstraintLE)


def rounded_shapes(sub: Problem, shape: LPShape) -> list[np.ndarray]:
    """Integer group counts near the LP's fractional ones (counts[0] unused: degree-1
    groups take the ranks left): nearest, and floor plus the largest fractions while
    they fit; each keeps a group for every sequence the LP runs for over half of tau
    and is shrunk to the cluster layout where it does not fit."""
    groups = shape.ranks / sub.deg  # (D,) fractional groups per degree
    need = np.ceil(shape.big - 0.25).astype(np.int64)
    nearest = np.maximum(np.rint(groups).astype(np.int64), need)
    filled = np.maximum(np.floor(groups).astype(np.int64), need)
    for j in np.argsort(-(groups - np.floor(groups)), kind="stable"):
        if j > 0 and groups[j] - np.floor(groups[j]) > 0.05:
            filled[j] += 1
            filled[0] = 0
            if not sub.fits(filled):
                filled[j] -= 1
    out = []
    for counts in (nearest, filled):
        counts[0] = 0
        fitted = fit_to_layout(sub, counts, need > 0)
        if fitted is not None and not any(np.array_equal(fitted, o) for o in out):
            out.append(fitted)
    return out
