"""FlexSP's "Sequence Blaster" micro-batching and its DP bucketing (arXiv 2412.01523, §4).

Blaster: sort the batch by length and cut it into M consecutive chunks (micro-batches).
The cut is the linear-partition dynamic programme: minimise the largest chunk workload
(sum of each sequence's fewest rank-seconds) subject to every chunk's tokens fitting the
cluster's capacity N * C. Sorting keeps similar lengths together, so each micro-batch
needs few group shapes.

Bucketing: inside a micro-batch, represent each length by the upper bound of its
bucket; the K bucket bounds minimise the total padding sum(upper - s), again by DP over
the sorted distinct lengths.
"""

from __future__ import annotations

import numpy as np


def blast(order: np.ndarray, weights: np.ndarray, tokens: np.ndarray, num_chunks: int, token_cap: int) -> list[np.ndarray] | None:
    """Cut `order` (ids sorted by length) into `num_chunks` consecutive non-empty chunks
    minimising the largest chunk weight with each chunk's tokens <= token_cap; None if
    impossible."""
    n = len(order)
    if num_chunks > n:
        return None
    pw = np.concatenate([[0.0], np.cumsum(weights[order])])  # (n+1,) prefix weights
    pt = np.concatenate([[0], np.cumsum(tokens[order])])  # (n+1,) prefix tokens
    best = np.full(n + 1, np.inf)  # best[j]: min max-weight of the first j ids in m chunks
    best[0] = 0.0
    cuts = np.zeros((num_chunks + 1, n + 1), dtype=np.int64)
    for m in range(1, num_chunks + 1):
        new = np.full(n + 1, np.inf)
        for j in range(m, n + 1):
            i = np.arange(m - 1, j)  # last chunk is ids[i:j]
            ok = pt[j] - pt[i] <= token_cap
            if not ok.any():
                continue
            cand = np.where(ok, np.maximum(best[i], pw[j] - pw[i]), np.inf)
            k = int(np.argmin(cand))
            new[j], cuts[m, j] = cand[k], i[k]
        best = new
    if not np.isfinite(best[n]):
        return None
    chunks, j = [], n
    for m in range(num_chunks, 0, -1):
        i = int(cuts[m, j])
        chunks.append(order[i:j])
        j = i
    return chunks[::-1]


def bucket_bounds(lengths: np.ndarray, num_buckets: int) -> np.ndarray:
    """Upper bounds (ascending, each an actual length) of at most `num_buckets` buckets
    minimising sum over sequences of (its bucket's upper bound - its length)."""
    values, counts = np.unique(lengths, return_counts=True)
    u = len(values)
    k_max = min(num_buckets, u)
    if k_max == u:
        return values
    pc = np.concatenate([[0], np.cumsum(counts)]).astype(np.float64)  # (u+1,) prefix counts
    ps = np.concatenate([[0], np.cumsum(counts * values)]).astype(np.float64)  # (u+1,) prefix tokens
    # cost[j]: least padding of the first j distinct values with k buckets, the last ending at j-1
    cost = np.full(u + 1, np.inf)
    cost[0] = 0.0
    cuts = np.zeros((k_max + 1, u + 1), dtype=np.int64)
    for k in range(1, k_max + 1):
        new = np.full(u + 1, np.inf)
        for j in range(k, u + 1):
            i = np.arange(k - 1, j)  # bucket covers values[i:j], bound values[j-1]
            pad = values[j - 1] * (pc[j] - pc[i]) - (ps[j] - ps[i])
            cand = cost[i] + pad
            m = int(np.argmin(cand))
            new[j], cuts[k, j] = cand[m], i[m]
        cost = new
    bounds, j = [], u
    for k in range(k_max, 0, -1):
        bounds.append(values[j - 1])
        j = int(cuts[k, j])
        if j == 0:
            break
    return np.asarray(bounds[::-1], dtype=np.int64)


def blast_greedy(order: np.ndarray, weights: np.ndarray, tokens: np.ndarray, num_chunks: int, token_cap: int) -> list[np.ndarray] | None:
    """The same min-max linear partition as `blast`, found by bisecting the largest chunk
    weight W with a greedy check (cut as late as W and token_cap allow; greedy uses the
    fewest chunks for a given W). O(n log n) instead of the DP's O(M n^2); the chunk
    count is then topped up to exactly `num_chunks` by splitting the heaviest chunks."""
    n = len(order)
    if num_chunks > n:
        return None
    pw = np.concatenate([[0.0], np.cumsum(weights[order])])  # (n+1,)
    pt = np.concatenate([[0], np.cumsum(tokens[order])])  # (n+1,)

    def cuts_for(limit: float) -> list[int] | None:
        cuts, i = [0], 0
        while i < n:
            j = min(int(np.searchsorted(pw, pw[i] + limit, side="right")), int(np.searchsorted(pt, pt[i] + token_cap, side="right"))) - 1
            if j <= i:
                return None
            cuts.append(j)
            i = j
            if len(cuts) - 1 > num_chunks:
                return None
        return cuts

    lo, hi = float(weights.max(initial=0.0)), float(pw[-1])
    if cuts_for(hi) is None:
        return None
    for _ in range(50):
        if hi - lo <= 1e-9 * max(hi, 1e-12):
            break
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if cuts_for(mid) is not None else (mid, hi)
    cuts = cuts_for(hi)
    while len(cuts) - 1 < num_chunks:  # split the heaviest chunk with more than one id
        sizes = [(pw[b] - pw[a], a, b) for a, b in zip(cuts, cuts[1:]) if b - a > 1]
        _, a, b = max(sizes)
        mid = int(np.searchsorted(pw, 0.5 * (pw[a] + pw[b]), side="left"))
        cuts = sorted(set(cuts) | {min(max(mid, a + 1), b - 1)})
    return [order[a:b] for a, b in zip(cuts, cuts[1:])]
