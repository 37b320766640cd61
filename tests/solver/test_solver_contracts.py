"""The solver contracts: ClusterSpec (degrees, K/V heads, limits) and CostModel (presets
in FlexSP's units, all-to-all volume, bandwidth, memory, fitting). validate: test_solver_validate.py."""

import json
import math

import numpy as np
import pytest

from solver import (
    MAX_NUM_RANKS,
    ClusterSpec,
    CostModel,
    fit_cost_model,
    load_preset,
    preset_cluster,
    preset_names,
    usable_degrees,
)
from solver.cost import MIB_PER_MS


@pytest.fixture
def gpt7b():
    return load_preset("gpt-7b", 192_000), preset_cluster("gpt-7b", 64)


def test_presets_are_data_files_with_the_paper_constants():
    assert preset_names() == ["gpt-13b", "gpt-30b", "gpt-7b"]
    cost = load_preset("gpt-13b", 384_000)
    assert cost.num_params == pytest.approx(14.032 * 2**30)  # FlexSP counts parameters in units of 2^30
    assert cost.attn_s_per_token2 == pytest.approx(9.2852e-6 / 1e3)
    assert cost.bandwidth(16) == pytest.approx(10.33 * 2**20 * 1e3)  # FlexSP's bandwidths are MiB/ms


def test_per_rank_capacity_matches_flexsp():
    """FlexSP's memory model, GPT-7B on 64 GPUs with 28 GiB each: (28 GiB - 16 B x 7.117
    x 2^30 params / 64) / 4.4804 MiB per token = 5,992 tokens per rank."""
    cost, spec = load_preset("gpt-7b", 192_000), preset_cluster("gpt-7b", 64)
    assert cost.token_capacity(spec) == 5992


def test_all_to_all_time_by_hand():
    """GPT-7B, one 32,768-token sequence on SP8: per layer 8 all-to-alls of s/d tokens x
    4096 hidden x 2 bytes = 8 x 4096 x 4096 x 2 = 268,435,456 bytes per rank, x 32 layers
    = 8,589,934,592 bytes, at 96.5 MiB/ms = 101,187,584,000 B/s: 0.0848912 s."""
    cost = load_preset("gpt-7b", 192_000)
    assert cost.comm_s(32_768, 8) == pytest.approx(8_589_934_592 / 101_187_584_000, rel=1e-9)
    assert cost.comm_s(32_768, 8) == pytest.approx(0.0848912, rel=1e-6)
    assert cost.comm_s(32_768, 1) == 0.0


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
    comm = 16 * 32 * 4096 * s / d / (96.5 * MIB_PER_MS)
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
    with pytest.raises(ValueError, match="num_ranks"):
        ClusterSpec(num_ranks=4.0, num_heads=4, device_memory_bytes=1)
    with pytest.raises(ValueError, match="num_ranks"):
        ClusterSpec(num_ranks=True, num_heads=4, device_memory_bytes=1)
    assert ClusterSpec(num_ranks=12, num_heads=4, device_memory_bytes=1).degrees == (1, 2, 4)


def test_num_ranks_has_a_documented_limit():
    ClusterSpec(num_ranks=MAX_NUM_RANKS, num_heads=64, device_memory_bytes=1)
    with pytest.raises(ValueError, match=rf"num_ranks=1,000,000 is above the planner's limit of {MAX_NUM_RANKS:,}"):
        ClusterSpec(num_ranks=1_000_000, num_heads=64, device_memory_bytes=1)


@pytest.mark.parametrize(
    "num_ranks, heads, kv, per_node, expect",
    [
        (64, 64, None, 8, (1, 2, 4, 8, 16, 32, 64)),
        (64, 32, 8, 8, (1, 2, 4, 8, 16, 32)),  # kv 8: d | 8 (split) or 8 | d (replicated)
        (64, 24, 6, 8, (1, 2)),  # 4 divides 24 but neither divides the other with 6 K/V heads
        (16, 16, 1, 8, (1, 2, 4, 8, 16)),  # one K/V head: replicated everywhere
        (3, 8, None, 3, (1, 2)),  # hsp train --num-workers 3: degree 2 inside the node of 3
        (24, 64, None, 6, (1, 2, 4)),  # 6 per node: 8 would be part of a node
        (24, 64, None, 8, (1, 2, 4, 8, 16)),  # 16 = two whole nodes of 8
    ],
)
def test_usable_degrees(num_ranks, heads, kv, per_node, expect):
    assert usable_degrees(num_ranks, heads, kv, per_node) == expect
    spec = ClusterSpec(num_ranks=num_ranks, ranks_per_node=per_node, num_heads=heads, num_kv_heads=kv,
                       device_memory_bytes=1)
    assert spec.degrees == expect and spec.kv_heads == (heads if kv is None else kv)


def test_grouped_query_attention_that_cannot_shard_names_the_fix():
    with pytest.raises(ValueError, match=r"num_kv_heads=5 does not divide num_heads=32"):
        ClusterSpec(num_ranks=8, num_heads=32, num_kv_heads=5, device_memory_bytes=1)
    with pytest.raises(ValueError, match=r"num_kv_heads=3 is odd.*degree 2 needs 2 \| num_kv_heads"):
        ClusterSpec(num_ranks=8, num_heads=6, num_kv_heads=3, device_memory_bytes=1)


def test_all_to_all_volume_counts_kv_heads():
    """K and V move kv(d) = max(num_kv_heads, d) heads: with 16 K/V heads of 64, an SP4
    group moves (1 + 16/64) / 2 of the multi-head volume, an SP32 one (1 + 32/64) / 2."""
    mha = load_preset("gpt-7b", 192_000)
    gqa = CostModel.from_dict({**mha.to_dict(), "num_kv_heads": 16})
    assert gqa.comm_s(8192, 4) == pytest.approx(mha.comm_s(8192, 4) * (1 + 16 / 64) / 2)
    assert gqa.comm_s(8192, 32) == pytest.approx(mha.comm_s(8192, 32) * (1 + 32 / 64) / 2)
    assert gqa.comm_s(8192, 64) == pytest.approx(mha.comm_s(8192, 64))
    with pytest.raises(ValueError, match="num_kv_heads"):
        CostModel.from_dict({**mha.to_dict(), "num_kv_heads": 7})


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
