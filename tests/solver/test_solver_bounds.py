"""The lower bound against brute force: hundreds of random tiny instances, zero violations.

Each instance draws N (powers of two and not), ranks per node, capacity, b1 and up to 4
lengths; brute force enumerates every valid plan (every split into micro-batches, every
placeable tiling, every assignment). The step bound must not exceed the optimum, and the
micro-batch bound (what validate checks every micro-batch against) must not exceed the
best single micro-batch.
"""

import math

import numpy as np
import pytest
from solver_helpers import best_micro_batch, best_step, tilings, tiny_cost, tiny_spec

from solver.bounds import busy_lower_bound, lower_bound
from solver.strategies.problem import build_problem

NUM_INSTANCES = 500


def _instances(seed: int, count: int):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        num_ranks = int(rng.choice([1, 2, 3, 4, 6, 8]))
        spec = tiny_spec(num_ranks, capacity_tokens=int(rng.integers(40, 160)),
                         ranks_per_node=int(rng.choice([2, 3, 4, 8])))
        cost = tiny_cost(group_fixed_s=float(rng.choice([0.0, 0.2, 1.0])))
        top = max(spec.degrees) * cost.token_capacity(spec)
        lengths = rng.integers(1, top + 1, size=int(rng.integers(1, 5))).tolist()
        yield lengths, spec, cost


def test_step_bound_never_exceeds_the_brute_force_optimum():
    worst = 0.0
    for lengths, spec, cost in _instances(11, NUM_INSTANCES):
        optimum = best_step(lengths, spec, cost)
        bound = lower_bound(lengths, spec, cost)
        assert bound <= optimum * (1 + 1e-9), (lengths, spec, bound, optimum)
        worst = max(worst, bound / optimum)
    assert worst > 0.9  # the bound is tight on some instances, so the test can fail


def test_micro_batch_bound_never_exceeds_the_best_single_micro_batch():
    checked = 0
    for lengths, spec, cost in _instances(12, NUM_INSTANCES):
        best = best_micro_batch(lengths, spec, cost)
        if not math.isfinite(best):
            continue
        prob = build_problem(np.asarray(lengths, dtype=np.int64), spec, cost)
        assert cost.group_fixed_s + busy_lower_bound(prob) <= best * (1 + 1e-9), (lengths, spec)
        checked += 1
    assert checked > NUM_INSTANCES // 4


def test_bound_is_exact_where_it_should_be():
    """One sequence alone: b1 + its fastest time. Equal short sequences filling every
    rank: b1 + one sequence's time."""
    cost = tiny_cost()
    assert lower_bound([50], tiny_spec(1), cost) == pytest.approx(0.5 + cost.seq_time_s(50, 1))
    assert lower_bound([50] * 8, tiny_spec(8), cost) == pytest.approx(0.5 + cost.seq_time_s(50, 1))


def test_tilings_respect_the_layout():
    assert sorted(tilings(tiny_spec(4, ranks_per_node=4))) == sorted([(4,), (2, 2), (2, 1, 1), (1, 1, 1, 1)])
    # 6 ranks in nodes of 3: no degree 4, and a degree-2 group per node at most
    assert sorted(tilings(tiny_spec(6, ranks_per_node=3))) == sorted(
        [(2, 2, 1, 1), (2, 1, 1, 1, 1), (1,) * 6])
