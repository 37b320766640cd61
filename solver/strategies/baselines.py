"""Baselines: `static` (DeepSpeed-Ulysses-like), `batch-ada`, `megatron-dcp`.

- static: one SP degree d for the whole run (default: the smallest candidate degree that
  holds the batch's longest sequence; the simulator passes the workload's longest
  sequence after the max-length filter via `static_degree`), N // d groups (spare ranks,
  when d does not divide N, form degree-1 groups that stay idle), sequences packed
  best-fit-decreasing into (micro-batch, group) bins of d * C tokens: each sequence, longest
  first, goes to the open bin with the least token room left that still holds it, by time
  as the tie-breaker; a new micro-batch opens when none does. `static_balance=True` also
  tries a time-balanced refill of the same bins and keeps the faster packing.
- batch-ada: per global batch, the single degree (among those >= the longest sequence's
  minimum) whose static plan is fastest.
- megatron-dcp: Megatron-Core dynamic context parallelism: each sequence gets the smallest
  power-of-two degree that holds it; sequences, longest first, go into micro-batches in
  order, each micro-batch's groups formed on demand; within the micro-batch a sequence
  joins the existing group of its degree with the least s^2/d work (a new group when
  none has room and ranks are free), the rest of the ranks become degree-1 groups.
"""

from __future__ import annotations

import numpy as np

from solver.strategies.problem import Group, Problem, as_groups


def plan_static(prob: Problem, *, static_degree: int | None = None, static_balance: bool = False) -> dict:
    """`static_balance`: also try refilling BFD's micro-batches by time and keep the
    faster packing (a stronger baseline than plain BFD)."""
    d = _static_degree(prob, static_degree)
    return {"micro_batches": pack_static(prob, d, balance=static_balance), "info": {"degree": d}}


def _static_degree(prob: Problem, static_degree: int | None) -> int:
    longest_needs = prob.degrees[int(prob.min_degree_idx.max())]
    if static_degree is None:
        return longest_needs
    if static_degree not in prob.degrees:
        raise ValueError(
            f"static_degree={static_degree} is not a usable degree for {prob.num_ranks} ranks and "
            f"{prob.spec.num_heads} heads; choose one of {list(prob.degrees)}"
        )
    if static_degree < longest_needs:
        longest = int(prob.lengths.max())
        raise ValueError(
            f"static_degree={static_degree} holds at most {static_degree * prob.capacity} tokens per group but "
            f"the batch has a sequence of {longest} tokens; use static_degree >= {longest_needs} or lower max length"
        )
    return static_degree


def pack_static(prob: Problem, d: int, balance: bool = False) -> list[list[Group]]:
    """N // d groups of degree d per micro-batch, best-fit-decreasing on tokens (which
    fixes the micro-batch count M). With `balance`, the same M x N/d bins are also
    refilled longest first, each sequence to the least-loaded (by time) bin with token
    room, and the faster of the two packings is kept."""
    j = prob.degrees.index(d)
    num_groups = prob.num_ranks // d
    order = np.argsort(-prob.lengths, kind="stable")
    bfd = _fill(prob, order, j, num_groups, None)
    lpt = _fill(prob, order, j, num_groups, len(bfd) // num_groups) if balance else None
    packs = [p for p in (bfd, lpt) if p is not None]
    best = min(packs, key=lambda p: _static_time(prob, p, j, num_groups))
    spare = prob.num_ranks - num_groups * d
    mbs = [best[m * num_groups : (m + 1) * num_groups] for m in range(len(best) // num_groups)]
    return [as_groups([d] * num_groups + [1] * spare, mb + [[] for _ in range(spare)]) for mb in mbs]


def _fill(prob: Problem, order, j: int, num_groups: int, num_micro_batches: int | None):
    """Bins (micro-batch-major, `num_groups` per micro-batch) of sequence ids. With
    `num_micro_batches` None: best fit on tokens, opening micro-batches as needed;
    otherwise least time load among that many micro-batches (None if one fits nowhere)."""
    cap = prob.degrees[j] * prob.capacity
    fixed = num_micro_batches is not None
    num_bins = num_groups * (num_micro_batches or 1)
    room = np.full(num_bins, cap, dtype=np.int64)
    load = np.zeros(num_bins)
    bins: list[list[int]] = [[] for _ in range(num_bins)]
    for i in order.tolist():
        s = int(prob.lengths[i])
        ok = room >= s
        if not ok.any():
            if fixed:
                return None
            room = np.concatenate([room, np.full(num_groups, cap, dtype=np.int64)])
            load = np.concatenate([load, np.zeros(num_groups)])
            bins += [[] for _ in range(num_groups)]
            ok = room >= s
        key = load if fixed else room + load / (load.max() + 1.0)  # best fit, then least time
        b = int(np.argmin(np.where(ok, key, np.inf)))
        room[b] -= s
        load[b] += prob.times[i, j]
        bins[b].append(i)
    return bins


def _static_time(prob: Problem, bins, j: int, num_groups: int) -> float:
    loads = np.asarray([prob.b1 + prob.times[b, j].sum() if b else 0.0 for b in bins]).reshape(-1, num_groups)
    return float(loads.max(axis=1).sum())


def plan_batch_ada(prob: Problem, *, static_balance: bool = False) -> dict:
    best, best_t, times = None, np.inf, {}
    for d in prob.degrees[int(prob.min_degree_idx.max()) :]:
        mbs = pack_static(prob, d, balance=static_balance)
        total = sum(max(prob.group_time(ids, dd) for _, dd, ids in mb) for mb in mbs)
        times[str(d)] = total
        if total < best_t - 1e-12:
            best, best_t = (d, mbs), total
    return {"micro_batches": best[1], "info": {"degree": best[0], "step_s_by_degree": times}}


def plan_megatron_dcp(prob: Problem) -> dict:
    cap = prob.capacity
    mbs: list[dict] = []  # each: {"groups": [[degree, tokens, work, ids]], "ranks": used ranks}
    for i in np.argsort(-prob.lengths, kind="stable").tolist():
        s = int(prob.lengths[i])
        d = prob.min_degree(i)
        work = float(s) * s / d
        for mb in mbs:
            if _dcp_place(mb, i, s, d, work, cap, prob.num_ranks):
                break
        else:
            mbs.append({"groups": [], "ranks": 0})
            _dcp_place(mbs[-1], i, s, d, work, cap, prob.num_ranks)
    out = []
    for mb in mbs:
        degrees = [g[0] for g in mb["groups"]] + [1] * (prob.num_ranks - mb["ranks"])
        members = [g[3] for g in mb["groups"]] + [[] for _ in range(prob.num_ranks - mb["ranks"])]
        out.append(as_groups(degrees, members))
    return {"micro_batches": out, "info": {}}


def _dcp_place(mb: dict, i: int, s: int, d: int, work: float, cap: int, num_ranks: int) -> bool:
    """Put sequence i into the least-loaded (by s^2/d) group of degree d with token room,
    else open a new group of degree d if free ranks remain; False if neither."""
    fitting = [g for g in mb["groups"] if g[0] == d and g[1] + s <= d * cap]
    if num_ranks - mb["ranks"] >= d and (not fitting or min(g[2] for g in fitting) > 0):
        mb["groups"].append([d, 0, 0.0, []])
        mb["ranks"] += d
        fitting = [mb["groups"][-1]]
    if not fitting:
        return False
    g = min(fitting, key=lambda g: g[2])
    g[1] += s
    g[2] += work
    g[3].append(i)
    return True

