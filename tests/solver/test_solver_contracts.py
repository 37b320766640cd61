"""The solver contracts: ClusterSpec, CostModel (presets, bandwidth, memory, fitting), validate."""

import json
import math

import numpy as np
import pytest

from solver import (
    ClusterSpec,
    CostModel,
    PlanError,
    StepPlan,
    fit_cost_model,
    load_preset,
    make_plan,
    preset_cluster,
    preset_names,
    validate,
)


@pytest.fixture
def gpt7b():
    return load_preset("gpt-7b", 192_000), preset_cluster("gpt-7b", 64)


def test_presets_are_data_files_with_the_paper_constants():
    assert preset_names() == ["gpt-13b", "gpt-30b", "gpt-7b"]
    cost = load_preset("gpt-13b", 384_000)
    assert cost.num_params == pytest.approx(14.032e9)
    assert cost.attn_s_per_token2 == pytest.approx(9.2852e-6 / 1e3)
    assert cost.bandwidth(16) == pytest.approx(10.33e9)


def test_unknown_preset_names_the_choices():
    with pytest.raises(ValueError, match="gpt-7b"):
        load_preset("gpt-9000")


def test_capacity_gives_the_papers_static_degrees(gpt7b):
    # FlexSP's setting: the longest Wikipedia sequence <= 192K (187,084) needs SP32,
    # the longest <= 384K (300,280) needs SP64.
    cost, spec = gpt7b
    assert cost.min_degree(187_084, spec) == 32
    cost384 = load_preset("gpt-7b", 384_000)
    assert cost384.min_degree(300_280, spec) == 64
    assert cost.min_degree(10**7, spec) is None


def test_seq_time_follows_the_formula(gpt7b):
    cost, _ = gpt7b
    s, d = 8192, 8
    comm = 16 * 32 * 4096 * s / d / 96.5e9
    expect = (5.128e-9 * s * s + 1.839576e-4 * s) / d + comm
    assert cost.seq_time_s(s, d) == pytest.approx(expect)
    assert cost.seq_time_s(s, 1) == pytest.approx(5.128e-9 * s * s + 1.839576e-4 * s)
    assert cost.group_time_s([], 4) == 0.0
    assert cost.group_time_s([s], d) == pytest.approx(expect + 0.6293563)


def test_bandwidth_interpolates_and_extrapolates_monotonically(gpt7b):
    cost, _ = gpt7b
    assert cost.bandwidth(1024) < cost.bandwidth(128) < cost.bandwidth(64)
    assert cost.bandwidth(1024) >= cost.bandwidth(64) / 4
    partial = CostModel.from_dict({**cost.to_dict(), "a2a_bytes_per_s": {"2": 100.0, "8": 25.0}})
    assert partial.bandwidth(4) == pytest.approx(50.0)  # log-log midpoint
    assert partial.bandwidth(1) == 100.0


def test_state_memory_too_large_is_a_clear_error():
    cost = load_preset("gpt-30b", 192_000)
    spec = ClusterSpec(num_ranks=1, num_heads=64, device_memory_bytes=2**30)
    with pytest.raises(ValueError, match="add ranks or memory"):
        cost.token_capacity(spec)


def test_cluster_spec_rejects_bad_values():
    with pytest.raises(ValueError, match="num_ranks"):
        ClusterSpec(num_ranks=0, num_heads=4, device_memory_bytes=1)
    with pytest.raises(ValueError, match="odd"):
        ClusterSpec(num_ranks=4, num_heads=7, device_memory_bytes=1)
    assert ClusterSpec(num_ranks=12, num_heads=4, device_memory_bytes=1).degrees == (1, 2, 4)


def test_cost_model_file_round_trip(tmp_path, gpt7b):
    cost, _ = gpt7b
    path = tmp_path / "cost.json"
    cost.save(path)
    assert CostModel.load(path) == cost
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        CostModel.load(tmp_path / "bad.json")


def test_fit_recovers_known_coefficients(gpt7b):
    truth, _ = gpt7b
    rng = np.random.default_rng(0)
    samples = []
    for d in (1, 2, 4, 8):
        for s in rng.integers(1_000, 60_000, size=12):
            samples.append((int(s), d, truth.group_time_s([s], d) * (1 + rng.normal(0, 1e-4))))
    template = CostModel.from_dict({**truth.to_dict(), "attn_s_per_token2": 0, "linear_s_per_token": 0})
    report = fit_cost_model(samples, template)
    fit = report.model
    assert fit.attn_s_per_token2 == pytest.approx(truth.attn_s_per_token2, rel=0.02)
    assert fit.linear_s_per_token == pytest.approx(truth.linear_s_per_token, rel=0.05)
    assert fit.group_fixed_s == pytest.approx(truth.group_fixed_s, rel=0.05)
    assert report.median_rel_error < 1e-3
    with pytest.raises(ValueError, match="at least 3"):
        fit_cost_model([(1, 1, 1.0)], template)


def _two_group_plan(cost, spec, lengths):
    half = spec.num_ranks // 2
    return make_plan(
        [[(0, half, [0]), (half, half, [1, 2])]], lengths, spec, cost,
        strategy="hand", solve_s=0.0, lower_bound_s=0.0,
    )


def test_validate_accepts_a_good_plan_and_round_trips_json(gpt7b):
    cost, spec = gpt7b
    lengths = np.array([100_000, 20_000, 30_000])
    plan = _two_group_plan(cost, spec, lengths)
    validate(plan, lengths, spec, cost)
    again = StepPlan.from_json(json.dumps(json.loads(plan.to_json())))
    assert again == plan
    assert plan.summary() == "mb1: 2xSP32"


def test_validate_lists_every_violation(gpt7b):
    cost, spec = gpt7b
    lengths = np.array([100_000, 20_000, 30_000, 5])
    good = _two_group_plan(cost, spec, lengths[:3])
    g0, g1 = good.micro_batches[0].groups
    broken_groups = (
        g0.__class__(g0.first_rank, g0.degree, (0, 1), g0.predicted_s),  # 1 repeated, time wrong
        g1.__class__(g1.first_rank + 1, 24, g1.seq_ids, g1.predicted_s),  # not pow2, gap
    )
    mb = good.micro_batches[0].__class__(broken_groups, good.micro_batches[0].predicted_s)
    bad = StepPlan(**{**good.__dict__, "micro_batches": (mb,), "lower_bound_s": 1e9})
    with pytest.raises(PlanError) as err:
        validate(bad, lengths, spec, cost)
    text = "\n".join(err.value.violations)
    for needle in ("not a power of two", "belong to no group", "never scheduled", "more than once",
                   "cost model gives", "lower bound"):
        assert needle in text, needle


def test_validate_checks_capacity_alignment_and_nodes():
    cost = CostModel(
        name="toy", attn_s_per_token2=1e-6, linear_s_per_token=1e-3, group_fixed_s=0.01,
        act_bytes_per_token=1.0, num_params=0.0, num_layers=1, hidden_size=8, num_heads=8,
        a2a_bytes_per_s={2: 1e9, 4: 1e9},
    )
    spec = ClusterSpec(num_ranks=6, ranks_per_node=3, num_heads=8, device_memory_bytes=100)
    lengths = np.array([150, 250, 10])
    plan = make_plan([[(0, 2, [0]), (2, 2, [1]), (4, 2, [2])]], lengths, spec, cost,
                     strategy="hand", solve_s=0.0, lower_bound_s=0.0)
    with pytest.raises(PlanError) as err:
        validate(plan, lengths, spec, cost)
    text = "\n".join(err.value.violations)
    assert "exceed its capacity 2 x 100" in text
    assert "straddles nodes" in text
    misaligned = make_plan([[(0, 1, [0, 2]), (1, 4, [1]), (5, 1, [])]], lengths, spec, cost,
                           strategy="hand", solve_s=0.0, lower_bound_s=0.0)
    with pytest.raises(PlanError, match="not aligned"):
        validate(misaligned, lengths, spec, cost)
    assert math.isinf(StepPlan(num_ranks=1, micro_batches=(), predicted_s=1, lower_bound_s=0,
                               strategy="x", solve_s=0).lower_bound_gap)
