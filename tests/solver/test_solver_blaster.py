"""Sequence Blaster's linear partition and the DP bucketing against brute force."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from solver.strategies.blaster import blast, blast_greedy, bucket_bounds


def _largest_chunk(chunks, weights):
    return max(float(weights[c].sum()) for c in chunks)


def _brute_partition(weights, tokens, m, cap):
    n = len(weights)
    best = np.inf
    for cuts in itertools.combinations(range(1, n), m - 1):
        bounds = (0, *cuts, n)
        parts = [np.arange(a, b) for a, b in zip(bounds, bounds[1:])]
        if all(tokens[p].sum() <= cap for p in parts):
            best = min(best, _largest_chunk(parts, weights))
    return best


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=9),
    st.integers(min_value=1, max_value=4),
    st.integers(min_value=50, max_value=200),
)
def test_linear_partition_dp_and_greedy_match_brute_force(values, m, cap):
    weights = np.asarray(values, dtype=np.float64) ** 1.5
    tokens = np.asarray(values, dtype=np.int64)
    order = np.arange(len(values))
    brute = _brute_partition(weights, tokens, m, cap) if m <= len(values) else np.inf
    dp = blast(order, weights, tokens, m, cap)
    greedy = blast_greedy(order, weights, tokens, m, cap)
    if not np.isfinite(brute):
        assert dp is None and greedy is None
        return
    for chunks in (dp, greedy):
        assert len(chunks) == m and all(len(c) for c in chunks)
        assert np.array_equal(np.concatenate(chunks), order)
        assert all(tokens[c].sum() <= cap for c in chunks)
        assert abs(_largest_chunk(chunks, weights) - brute) <= 1e-6 * brute


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=100), min_size=1, max_size=10), st.integers(min_value=1, max_value=4))
def test_bucketing_minimises_padding(values, k):
    lengths = np.asarray(values, dtype=np.int64)
    bounds = bucket_bounds(lengths, k)
    distinct = np.unique(lengths)
    assert len(bounds) <= k and bounds[-1] == lengths.max() and set(bounds) <= set(distinct)

    def padding(bs):
        return int((np.asarray(bs)[np.searchsorted(bs, lengths)] - lengths).sum())

    best = min(
        padding(sorted(set(extra) | {int(distinct[-1])}))
        for r in range(0, min(k, len(distinct)))
        for extra in itertools.combinations(distinct[:-1].tolist(), r)
    )
    assert padding(bounds) == best
