"""A tiny hand-made cost model and cluster for the planner tests: numbers small enough
to brute-force and easy to reason about."""

from __future__ import annotations

from solver.cost import CostModel
from solver.spec import ClusterSpec


def tiny_cost(capacity_tokens: int = 100, group_fixed_s: float = 0.5) -> CostModel:
    """Pairs with `tiny_spec(..., capacity_tokens)`: 1 activation byte per token and no
    model states, so C = capacity_tokens. time(s, d) = (1e-4 s^2 + 1e-2 s) / d plus an
    all-to-all of 16 s / d bytes at 1600 / 1131 / 800 / 566 bytes/s for d = 2 / 4 / 8 / 16."""
    del capacity_tokens  # the capacity lives in the spec's memory
    return CostModel(
        name="tiny",
        attn_s_per_token2=1e-4,
        linear_s_per_token=1e-2,
        group_fixed_s=group_fixed_s,
        act_bytes_per_token=1.0,
        num_params=0.0,
        num_layers=1,
        hidden_size=1,
        num_heads=8,
        a2a_bytes_per_s={2: 1600.0, 4: 1131.0, 8: 800.0, 16: 566.0},
    )


def tiny_spec(num_ranks: int, capacity_tokens: int = 100, ranks_per_node: int = 4, num_heads: int = 8) -> ClusterSpec:
    return ClusterSpec(
        num_ranks=num_ranks, ranks_per_node=ranks_per_node, num_heads=num_heads, device_memory_bytes=capacity_tokens
    )
