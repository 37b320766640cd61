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


# ---- brute force over every valid plan of a tiny instance -------------------------------


def tilings(spec: ClusterSpec):
    """Every multiset of usable degrees (descending tuples, degree-1 groups filling the
    rest) that the cluster layout can place."""
    from solver import layout

    degrees = [d for d in spec.degrees if d > 1]

    def rec(left: int, max_j: int):
        yield ()
        for j in range(max_j, -1, -1):
            if degrees[j] <= left:
                for rest in rec(left - degrees[j], j):
                    yield (degrees[j],) + rest

    for big in rec(spec.num_ranks, len(degrees) - 1):
        if layout.place(spec, list(big)) is not None:
            yield big + (1,) * (spec.num_ranks - sum(big))


def best_micro_batch(lengths, spec, cost) -> float:
    """Least time of one micro-batch running all `lengths`, over every valid plan (inf if
    no single micro-batch holds them)."""
    import math

    cap = cost.token_capacity(spec)
    best = math.inf
    for tiling in tilings(spec):
        best = min(best, _best_assignment(list(lengths), tiling, cap, cost))
    return best


def _best_assignment(lengths, tiling, cap, cost) -> float:
    import math

    groups = [[] for _ in tiling]
    best = [math.inf]

    def rec(i: int):
        if i == len(lengths):
            best[0] = min(best[0], max(cost.group_time_s(g, d) for g, d in zip(groups, tiling)))
            return
        tried_empty = set()
        for g, d in enumerate(tiling):
            if sum(groups[g]) + lengths[i] > d * cap:
                continue
            if not groups[g]:  # empty groups of one degree are interchangeable
                if d in tried_empty:
                    continue
                tried_empty.add(d)
            groups[g].append(lengths[i])
            rec(i + 1)
            groups[g].pop()

    rec(0)
    return best[0]


def best_step(lengths, spec, cost) -> float:
    """Least step time over every split into micro-batches (set partitions)."""
    import math

    best = math.inf
    for parts in _set_partitions(list(range(len(lengths)))):
        best = min(best, sum(best_micro_batch([lengths[i] for i in part], spec, cost) for part in parts))
    return best


def _set_partitions(items):
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for parts in _set_partitions(rest):
        yield [[first]] + parts
        for k in range(len(parts)):
            yield parts[:k] + [[first] + parts[k]] + parts[k + 1 :]
