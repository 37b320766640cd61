"""Bad input gets a clear error; the background Planner and its deadline fallback."""

from __future__ import annotations

import time

import numpy as np
import pytest
from solver_helpers import tiny_cost, tiny_spec

from solver import Planner, lower_bound, plan
from solver.cost import load_preset, preset_cluster
from solver.plan import validate


@pytest.fixture
def preset():
    return preset_cluster("gpt-7b", 64), load_preset("gpt-7b", 192_000)


def test_empty_batch(preset):
    spec, cost = preset
    with pytest.raises(ValueError, match="empty"):
        plan([], spec, cost)


@pytest.mark.parametrize("bad", [0, -5])
def test_non_positive_length_names_index_and_value(preset, bad):
    spec, cost = preset
    with pytest.raises(ValueError, match=rf"sequence 2 has length {bad}"):
        plan([100, 200, bad, 300], spec, cost)


def test_fractional_length(preset):
    spec, cost = preset
    with pytest.raises(ValueError, match="whole token counts"):
        plan([100.5, 200], spec, cost)


def test_sequence_that_fits_no_group_names_capacity_and_ways_out(preset):
    spec, cost = preset
    capacity = cost.token_capacity(spec)
    too_long = 64 * capacity + 1
    with pytest.raises(ValueError) as err:
        plan([1000, too_long], spec, cost)
    text = str(err.value)
    assert f"sequence 1 has {too_long} tokens" in text
    assert f"64 x {capacity} = {64 * capacity}" in text
    for way_out in ("max length", "add ranks", "memory", "drop"):
        assert way_out in text


def test_unknown_strategy_lists_valid_ones(preset):
    spec, cost = preset
    with pytest.raises(ValueError, match="unknown strategy 'magic'.*fast.*flexsp.*static.*batch-ada.*dcp-greedy"):
        plan([100], spec, cost, "magic")


def test_unknown_option_is_rejected(preset):
    spec, cost = preset
    with pytest.raises(ValueError, match="unknown planner option"):
        plan([100], spec, cost, "fast", solve_time_limt_s=1)


def test_static_degree_that_does_not_hold_the_longest_sequence(preset):
    spec, cost = preset
    with pytest.raises(ValueError, match="static_degree=2 holds at most"):
        plan([100, 50_000], spec, cost, "static", static_degree=2)
    with pytest.raises(ValueError, match="not a usable degree"):
        plan([100], spec, cost, "static", static_degree=3)


def test_lower_bound_rejects_bad_input_too(preset):
    spec, cost = preset
    with pytest.raises(ValueError, match="empty"):
        lower_bound([], spec, cost)


def test_lower_bound_terms():
    """One sequence on one rank with b1 = 0.5: the bound is b1 + its time, exactly."""
    spec, cost = tiny_spec(1), tiny_cost()
    assert lower_bound([50], spec, cost) == pytest.approx(0.5 + cost.seq_time_s(50, 1))
    # eight equal short sequences on eight ranks: work / N = one sequence's time
    spec8 = tiny_spec(8)
    assert lower_bound([50] * 8, spec8, cost) == pytest.approx(0.5 + cost.seq_time_s(50, 1))
    assert plan([50] * 8, spec8, cost).predicted_s == pytest.approx(lower_bound([50] * 8, spec8, cost))


def test_planner_normal_path(preset):
    spec, cost = preset
    lengths = np.random.default_rng(0).integers(100, 20_000, size=64)
    with Planner(spec, cost, "fast", deadline_s=30.0) as planner:
        planner.submit(1, lengths)
        result = planner.result(1)
    validate(result, lengths, spec, cost)
    assert not result.fallback and result.strategy == "fast"
    assert result.micro_batches == plan(lengths, spec, cost, "fast").micro_batches


def test_planner_runs_flexsp_in_the_background(preset):
    spec, cost = preset
    lengths = np.random.default_rng(1).integers(100, 8_000, size=40)
    with Planner(spec, cost, "flexsp", deadline_s=60.0, solve_time_limit_s=0.5, num_extra_micro_batches=0) as planner:
        began = time.perf_counter()
        planner.submit(7, lengths)
        assert time.perf_counter() - began < 0.5  # submit does not wait for the solve
        result = planner.result(7)
    validate(result, lengths, spec, cost)
    assert result.strategy == "flexsp" and not result.fallback


def test_planner_deadline_falls_back_to_fast(preset):
    spec, cost = preset
    lengths = np.random.default_rng(2).integers(100, 12_000, size=60)
    with Planner(spec, cost, "flexsp", deadline_s=0.0, solve_time_limit_s=0.5, num_extra_micro_batches=0) as planner:
        planner.submit(3, lengths)
        result = planner.result(3)
    validate(result, lengths, spec, cost)
    assert result.fallback and result.strategy == "fast"
    assert "deadline" in result.info["fallback_reason"] and result.info["fallback_from"] == "flexsp"


def test_planner_result_of_unsubmitted_step(preset):
    spec, cost = preset
    with Planner(spec, cost) as planner, pytest.raises(KeyError, match="never submitted"):
        planner.result(5)


def test_planner_rejects_bad_settings(preset):
    spec, cost = preset
    with pytest.raises(ValueError, match="unknown strategy"):
        Planner(spec, cost, "nope")
    with pytest.raises(ValueError, match="deadline_s"):
        Planner(spec, cost, deadline_s=-1)
    with Planner(spec, cost) as planner, pytest.raises(ValueError, match="empty"):
        planner.submit(0, [])


@pytest.mark.parametrize(
    "strategy, options, message",
    [
        ("flexsp", {"solve_time_limit_s": 0}, "solve_time_limit_s must be > 0"),
        ("flexsp", {"num_buckets": 0}, "num_buckets >= 1"),
        ("fast", {"num_extra_micro_batches": -1}, "must be >= 0"),
    ],
)
def test_bad_strategy_options(preset, strategy, options, message):
    spec, cost = preset
    with pytest.raises(ValueError, match=message):
        plan([100, 200], spec, cost, strategy, **options)
