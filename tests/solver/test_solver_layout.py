"""Group placement for any ranks per node: exact against brute force, and every usable
degree plannable (the `hsp train --num-workers 3` case: degree 2 on a node of 3)."""

import itertools

import numpy as np
import pytest
from solver_helpers import tiny_cost, tiny_spec

from solver import ClusterSpec, plan, validate
from solver import layout
from solver.strategies.problem import build_problem


def _all_placements(spec: ClusterSpec, degrees: list[int]) -> bool:
    """Brute force: is there any assignment of valid, disjoint ranges to these degrees?"""
    def rec(k: int, taken: frozenset) -> bool:
        if k == len(degrees):
            return True
        d = degrees[k]
        for first in range(0, spec.num_ranks - d + 1, d):
            cells = set(range(first, first + d))
            if layout.group_violation(spec, first, d) is None and not cells & taken:
                if rec(k + 1, taken | cells):
                    return True
        return False

    return rec(0, frozenset())


@pytest.mark.parametrize("num_ranks, per_node", [(3, 3), (6, 3), (6, 6), (8, 4), (12, 6), (12, 8), (10, 4), (16, 8)])
def test_placement_is_exact_against_brute_force(num_ranks, per_node):
    spec = ClusterSpec(num_ranks=num_ranks, ranks_per_node=per_node, num_heads=16, device_memory_bytes=1)
    degrees = [d for d in spec.degrees if d > 1]
    prob = build_problem(np.asarray([1]), spec, tiny_cost())
    for counts in itertools.product(*(range(num_ranks // d + 1) for d in degrees)):
        shape = [d for d, c in zip(degrees, counts) for _ in range(c)]
        if sum(shape) > num_ranks:
            continue
        firsts = layout.place(spec, shape)
        exists = _all_placements(spec, sorted(shape, reverse=True))
        assert (firsts is not None) == exists, (shape, firsts)
        vector = np.zeros(len(spec.degrees), dtype=np.int64)
        for d, c in zip(degrees, counts):
            vector[spec.degrees.index(d)] = c
        assert prob.fits(vector) == exists, shape
        if firsts is not None:
            cells = [r for f, d in zip(firsts, shape) for r in range(f, f + d)]
            assert len(cells) == len(set(cells))
            assert all(layout.group_violation(spec, f, d) is None for f, d in zip(firsts, shape))


def test_node_blocks_cut_each_node_into_aligned_blocks():
    spec = ClusterSpec(num_ranks=12, ranks_per_node=6, num_heads=16, device_memory_bytes=1)
    assert layout.node_blocks(spec) == [(0, 4), (4, 2), (6, 2), (8, 4)]
    assert layout.capacity_at_least(spec, 4) == 8 and layout.capacity_at_least(spec, 2) == 12


@pytest.mark.parametrize("num_ranks, per_node", [(3, 3), (6, 6), (12, 6), (24, 6), (12, 12)])
@pytest.mark.parametrize("strategy", ["fast", "static", "dcp-greedy"])
def test_odd_ranks_per_node_plan_with_every_usable_degree(num_ranks, per_node, strategy):
    """A sequence that needs the largest usable degree gets it, and no group straddles a node."""
    spec = tiny_spec(num_ranks, capacity_tokens=100, ranks_per_node=per_node, num_heads=8)
    top = max(spec.degrees)
    lengths = np.asarray([top * 100 - 5, 30, 20, 10])  # the first needs degree `top`
    result = plan(lengths, spec, tiny_cost(), strategy)
    validate(result, lengths, spec, tiny_cost())
    used = {g.degree for mb in result.micro_batches for g in mb.groups}
    assert top in used and top > 1
    for mb in result.micro_batches:
        for g in mb.groups:
            assert layout.group_violation(spec, g.first_rank, g.degree) is None


def test_three_workers_use_degree_two():
    """`hsp train --num-workers 3`: ranks_per_node = 3; a sequence longer than one rank's
    capacity runs on degree 2, which the spec lists as usable."""
    spec = tiny_spec(3, capacity_tokens=100, ranks_per_node=3)
    assert spec.degrees == (1, 2)
    lengths = np.asarray([150, 40, 40])
    result = plan(lengths, spec, tiny_cost(), "fast")
    validate(result, lengths, spec, tiny_cost())
    assert any(g.degree == 2 and 0 in g.seq_ids for mb in result.micro_batches for g in mb.groups)
