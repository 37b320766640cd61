"""validate: every violation listed, nothing it can recompute trusted, always PlanError."""

import dataclasses
import json
import math

import numpy as np
import pytest

from solver import ClusterSpec, CostModel, PlanError, StepPlan, load_preset, make_plan, plan, preset_cluster, validate
from solver.plan import GroupPlan, MicroBatchPlan


@pytest.fixture
def gpt7b():
    return load_preset("gpt-7b", 192_000), preset_cluster("gpt-7b", 64)


def toy(num_ranks: int, ranks_per_node: int):
    cost = CostModel(
        name="toy", attn_s_per_token2=1e-6, linear_s_per_token=1e-3, group_fixed_s=0.01,
        act_bytes_per_token=1.0, num_params=0.0, num_layers=1, hidden_size=8, num_heads=8,
        a2a_bytes_per_s={2: 1e9, 4: 1e9},
    )
    return cost, ClusterSpec(num_ranks=num_ranks, ranks_per_node=ranks_per_node, num_heads=8, device_memory_bytes=100)


def _two_group_plan(cost, spec, lengths):
    half = spec.num_ranks // 2
    return make_plan(
        [[(0, half, [0]), (half, half, [1, 2])]], lengths, spec, cost,
        strategy="hand", solve_s=0.0, lower_bound_s=0.0,
    )


def _violations(step_plan, lengths, spec, cost) -> str:
    with pytest.raises(PlanError) as err:
        validate(step_plan, lengths, spec, cost)
    return "\n".join(err.value.violations)


def test_validate_accepts_a_good_plan_and_round_trips_json(gpt7b):
    cost, spec = gpt7b
    lengths = np.array([100_000, 20_000, 30_000])
    step_plan = _two_group_plan(cost, spec, lengths)
    validate(step_plan, lengths, spec, cost)
    again = StepPlan.from_json(json.dumps(json.loads(step_plan.to_json())))
    assert again == step_plan
    assert step_plan.summary() == "mb1: 2xSP32"


def test_validate_lists_every_violation(gpt7b):
    cost, spec = gpt7b
    lengths = np.array([100_000, 20_000, 30_000, 5])
    good = _two_group_plan(cost, spec, lengths[:3])
    g0, g1 = good.micro_batches[0].groups
    broken_groups = (
        GroupPlan(g0.first_rank, g0.degree, (0, 1), g0.predicted_s),  # 1 repeated, time wrong
        GroupPlan(g1.first_rank + 1, 24, g1.seq_ids, g1.predicted_s),  # not usable, gap
    )
    mb = MicroBatchPlan(broken_groups, good.micro_batches[0].predicted_s)
    bad = dataclasses.replace(good, micro_batches=(mb,), lower_bound_s=1e9)
    text = _violations(bad, lengths, spec, cost)
    for needle in ("degree 24 is not usable", "belong to no group", "never scheduled", "more than once",
                   "cost model gives", "above the provable bound"):
        assert needle in text, needle


def test_validate_checks_capacity_alignment_and_nodes():
    cost, spec = toy(6, 3)
    lengths = np.array([150, 190, 10])
    straddling = make_plan([[(0, 2, [0, 1]), (2, 2, [2]), (4, 2, [])]], lengths, spec, cost,
                           strategy="hand", solve_s=0.0, lower_bound_s=0.0)
    text = _violations(straddling, lengths, spec, cost)
    assert "exceed its capacity 2 x 100" in text and "straddles nodes of 3 ranks" in text
    misaligned = make_plan([[(0, 1, [0]), (1, 2, [1]), (3, 1, [2]), (4, 2, [])]], lengths, spec, cost,
                           strategy="hand", solve_s=0.0, lower_bound_s=0.0)
    assert "not aligned" in _violations(misaligned, lengths, spec, cost)
    assert math.isinf(StepPlan(num_ranks=1, micro_batches=(), predicted_s=1, lower_bound_s=0,
                               strategy="x", solve_s=0).lower_bound_gap)


@pytest.mark.parametrize("per_node", [3, 6, 12])
def test_node_alignment_for_any_ranks_per_node(per_node):
    """Degree 4 at rank 4 is aligned but crosses the node boundary at 6 (or 3): a
    violation for 3 and 6 ranks per node, fine for 12."""
    cost, spec = toy(12, per_node)
    lengths = np.array([10, 10])
    groups = [(4, 4, [0]), (0, 4, [1])] + [(r, 1, []) for r in range(8, 12)]
    if 4 not in spec.degrees:  # 3 per node: degree 4 is larger than a node and not whole nodes
        groups = [(4, 2, [0]), (6, 2, []), (0, 2, [1]), (2, 2, [])] + [(r, 1, []) for r in range(8, 12)]
    step_plan = make_plan([groups], lengths, spec, cost, strategy="hand", solve_s=0.0, lower_bound_s=0.0)
    if per_node == 12:
        validate(step_plan, lengths, spec, cost)
    elif per_node == 6:
        assert "straddles nodes of 6 ranks" in _violations(step_plan, lengths, spec, cost)
    else:
        assert "straddles nodes of 3 ranks" in _violations(step_plan, lengths, spec, cost)


def test_a_forged_lower_bound_or_optimal_flag_is_caught(gpt7b):
    cost, spec = gpt7b
    lengths = np.random.default_rng(0).integers(100, 20_000, size=64)
    real = plan(lengths, spec, cost, "fast")
    validate(real, lengths, spec, cost)
    forged = dataclasses.replace(real, lower_bound_s=real.predicted_s)
    assert "above the provable bound" in _violations(forged, lengths, spec, cost)
    assert "records no per-micro-batch proven bound" in _violations(
        dataclasses.replace(real, optimal=True), lengths, spec, cost)
    bounds = [0.5 * mb.predicted_s for mb in real.micro_batches]
    loose = dataclasses.replace(real, optimal=True, info={**real.info, "mip_bound_s": bounds})
    assert "claims optimal but its time" in _violations(loose, lengths, spec, cost)
    assert "time limit" in _violations(dataclasses.replace(real, optimal=True, time_limited=True), lengths, spec, cost)


def test_a_micro_batch_faster_than_its_own_bound_is_caught(gpt7b):
    """Times are recomputed from the cost model, and each micro-batch against the proven
    bound of its own sequences: a plan whose times were all scaled down fails both."""
    cost, spec = gpt7b
    lengths = np.array([100_000, 20_000, 30_000])
    good = _two_group_plan(cost, spec, lengths)
    mb = good.micro_batches[0]
    fast_mb = MicroBatchPlan(tuple(dataclasses.replace(g, predicted_s=g.predicted_s / 10) for g in mb.groups),
                             mb.predicted_s / 10)
    scaled = dataclasses.replace(good, micro_batches=(fast_mb,), predicted_s=good.predicted_s / 10)
    text = _violations(scaled, lengths, spec, cost)
    assert "below its proven lower bound" in text and "cost model gives" in text


@pytest.mark.parametrize(
    "group, needle",
    [
        (GroupPlan(0.0, 64, (0, 1, 2), 1.0), "first_rank must be an integer"),
        (GroupPlan(0, 64, (0, True, 2), 1.0), "seq_ids must be a sequence of integer ids"),
        (GroupPlan(0, "64", (0, 1, 2), 1.0), "degree must be an integer"),
        (GroupPlan(0, 64, (0, 1, 2), float("nan")), "predicted_s must be finite"),
        ("not a group", "expected a GroupPlan"),
    ],
)
def test_wrong_types_are_violations_not_type_errors(gpt7b, group, needle):
    cost, spec = gpt7b
    lengths = np.array([100_000, 20_000, 30_000])
    good = _two_group_plan(cost, spec, lengths)
    bad = dataclasses.replace(good, micro_batches=(MicroBatchPlan((group,), 1.0),))
    assert needle in _violations(bad, lengths, spec, cost)


def test_bad_lengths_and_non_plans_raise_plan_error(gpt7b):
    cost, spec = gpt7b
    good = _two_group_plan(cost, spec, np.array([100_000, 20_000, 30_000]))
    assert "not valid" in _violations(good, [100, -3, 5], spec, cost)
    assert "expected a StepPlan" in _violations({"micro_batches": []}, [100], spec, cost)
    assert "bool" in _violations(dataclasses.replace(good, optimal="yes"), [100_000, 20_000, 30_000], spec, cost)
