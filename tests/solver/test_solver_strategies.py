"""Every strategy's plans are valid, deterministic and survive JSON, on many instances;
`fast` is never slower than a baseline, on workloads of many shapes."""

from __future__ import annotations

import numpy as np
import pytest
from solver_helpers import tiny_cost, tiny_spec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from solver import BASELINES, STRATEGIES, Planner, lower_bound, plan
from solver.cost import load_preset, preset_cluster
from solver.plan import StepPlan, validate
from solver.workloads import BatchSampler, get_workload, workload_names


ALL = sorted(STRATEGIES)
OPTIONS = {"solve_time_limit_s": 0.5}
"""Keeps flexsp quick; time-limited MILPs must still give valid plans."""


@st.composite
def tiny_instances(draw):
    """Random N (powers of two and not: 6, 12, ...), nodes, capacity and lengths that fit."""
    num_ranks = draw(st.sampled_from([1, 2, 3, 4, 6, 8, 12, 16]))
    ranks_per_node = draw(st.sampled_from([2, 3, 4, 6, 8]))  # 3, 6: groups must still stay inside a node
    capacity = draw(st.integers(min_value=20, max_value=200))
    spec = tiny_spec(num_ranks, capacity_tokens=capacity, ranks_per_node=ranks_per_node)
    cost = tiny_cost(capacity, group_fixed_s=draw(st.sampled_from([0.0, 0.2, 1.0])))
    top = max(spec.degrees) * cost.token_capacity(spec)
    lengths = draw(st.lists(st.integers(min_value=1, max_value=top), min_size=1, max_size=30))
    return np.asarray(lengths, dtype=np.int64), spec, cost


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tiny_instances(), st.sampled_from(ALL))
def test_every_strategy_gives_valid_plans(instance, strategy):
    lengths, spec, cost = instance
    result = plan(lengths, spec, cost, strategy, **OPTIONS)
    validate(result, lengths, spec, cost)
    assert result.strategy == strategy
    assert result.lower_bound_s == pytest.approx(lower_bound(lengths, spec, cost))
    assert result.predicted_s >= result.lower_bound_s * (1 - 1e-9)


@pytest.mark.parametrize("strategy", ALL)
@pytest.mark.parametrize("preset", ["gpt-7b", "gpt-13b"])
def test_strategies_on_presets_with_odd_rank_counts(strategy, preset):
    """Real presets at N = 12 and 24 (not powers of two; 24 spans three 8-GPU nodes)."""
    rng = np.random.default_rng(3)
    for num_ranks in (12, 24):
        cost, spec = load_preset(preset, 192_000), preset_cluster(preset, num_ranks)
        top = max(spec.degrees) * cost.token_capacity(spec)
        lengths = np.minimum(rng.lognormal(7.0, 1.5, size=40).astype(np.int64) + 1, top)
        result = plan(lengths, spec, cost, strategy, **OPTIONS)
        validate(result, lengths, spec, cost)


@pytest.mark.parametrize("strategy", ALL)
def test_json_round_trip_is_lossless(strategy):
    cost, spec = load_preset("gpt-7b", 192_000), preset_cluster("gpt-7b", 16)
    lengths = np.random.default_rng(1).integers(100, 30_000, size=40)
    result = plan(lengths, spec, cost, strategy, **OPTIONS)
    again = StepPlan.from_json(result.to_json())
    assert again == result
    validate(again, lengths, spec, cost)


@pytest.mark.parametrize("strategy", ALL)
def test_same_input_gives_the_same_plan(strategy):
    """Deterministic for a given seed. flexsp is deterministic only when HiGHS finishes
    (a time limit cuts the search at a wall-clock moment), so its instance is small
    enough to be solved to optimality."""
    if strategy == "flexsp":
        cost, spec = tiny_cost(), tiny_spec(8)
        lengths = np.random.default_rng(5).integers(1, 300, size=8)
    else:
        cost, spec = load_preset("gpt-13b", 192_000), preset_cluster("gpt-13b", 32)
        lengths = np.random.default_rng(5).lognormal(7.5, 1.3, size=120).astype(np.int64) + 1
    first = plan(lengths, spec, cost, strategy, seed=0, solve_time_limit_s=60)
    second = plan(lengths, spec, cost, strategy, seed=0, solve_time_limit_s=60)
    assert not first.time_limited
    assert first.micro_batches == second.micro_batches
    assert first.predicted_s == second.predicted_s


@st.composite
def shaped_batches(draw):
    """A batch of one of the shipped workloads' shapes (short-tailed, long-tailed, long
    documents, all-long, bimodal, short-only) on a preset at N = 8 .. 64."""
    workload = draw(st.sampled_from(workload_names()))
    num_ranks = draw(st.sampled_from([8, 12, 16, 32, 64]))
    batch = draw(st.sampled_from([16, 64, 128]))
    seed = draw(st.integers(min_value=0, max_value=10_000))
    spec, cost = preset_cluster("gpt-7b", num_ranks), load_preset("gpt-7b", 192_000)
    max_len = min(192_000, max(spec.degrees) * cost.token_capacity(spec))
    lengths = BatchSampler(get_workload(workload), batch, max_len, seed).batch(0)
    return lengths, spec, cost


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shaped_batches())
def test_fast_is_never_slower_than_any_baseline(instance):
    lengths, spec, cost = instance
    fast = plan(lengths, spec, cost, "fast")
    validate(fast, lengths, spec, cost)
    for baseline in BASELINES:
        assert fast.predicted_s <= plan(lengths, spec, cost, baseline).predicted_s * (1 + 1e-9), baseline


def test_static_degree_option():
    cost, spec = load_preset("gpt-7b", 192_000), preset_cluster("gpt-7b", 64)
    lengths = np.random.default_rng(4).integers(100, 5_000, size=64)
    result = plan(lengths, spec, cost, "static", static_degree=32)
    assert {g.degree for mb in result.micro_batches for g in mb.groups} == {32}
    assert result.info["degree"] == 32
    default = plan(lengths, spec, cost, "static")
    assert {g.degree for mb in default.micro_batches for g in mb.groups} == {1}
    bfd = plan(lengths, spec, cost, "static-bfd", static_degree=32)
    assert bfd.predicted_s >= result.predicted_s * (1 - 1e-9)  # time-balanced is the better of two packings


def test_baselines_are_the_registry_minus_hsps_planners():
    assert set(BASELINES) == set(STRATEGIES) - {"fast", "flexsp"}


def test_planner_is_exported():
    assert Planner is not None and "fast" in STRATEGIES
