"""`validate`: check every constraint of a StepPlan, trusting nothing it can recompute.

Checked: the types of every field (a float rank or a boolean sequence id is a violation,
not a TypeError), that the groups of every micro-batch tile the ranks with valid ranges
(aligned, inside one node or made of whole nodes, degree usable with the heads), token
capacity, every sequence exactly once, every predicted time against the cost model, the
lower bound against a recomputed one (the plan may not claim more than is provable),
each micro-batch against its own proven bound, and the optimal flag against the MILP's
recorded per-micro-batch bounds. Always raises PlanError (listing every violation).
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Sequence

import numpy as np

from solver import layout
from solver.bounds import busy_lower_bound, problem_lower_bound
from solver.cost import CostModel
from solver.plan import REL_TOL, GroupPlan, MicroBatchPlan, PlanError, StepPlan
from solver.spec import ClusterSpec
from solver.strategies.problem import build_problem

OPTIMAL_GAP = 1e-4
"""Largest recorded gap (1 - bound / time, per micro-batch) a plan claiming optimal may have."""


def validate_plan(plan: StepPlan, lengths: Sequence[int], spec: ClusterSpec, cost: CostModel) -> None:
    from solver.planner import check_lengths

    try:
        arr = check_lengths(lengths, spec, cost)
    except ValueError as err:
        raise PlanError([f"the batch's lengths are not valid: {err}"]) from None
    errors = _field_types(plan)
    if errors:
        raise PlanError(errors)
    if plan.num_ranks != spec.num_ranks:
        errors.append(f"plan is for {plan.num_ranks} ranks but the cluster has {spec.num_ranks}")
    if not plan.micro_batches:
        errors.append("plan has no micro-batches")
    capacity = cost.token_capacity(spec)
    prob = build_problem(arr, spec, cost)
    seen = np.zeros(len(arr), dtype=np.int64)
    for m, mb in enumerate(plan.micro_batches):
        where = f"micro-batch {m}"
        errors += _check_tiling(mb, spec, where)
        ids_here = []
        for g in mb.groups:
            gw = f"{where} group @rank{g.first_rank} SP{g.degree}"
            bad = [i for i in g.seq_ids if not 0 <= i < len(arr)]
            if bad:
                errors.append(f"{gw}: sequence ids {bad[:5]} out of range 0..{len(arr) - 1}")
                continue
            ids = list(g.seq_ids)
            ids_here += ids
            np.add.at(seen, ids, 1)
            tokens = int(arr[ids].sum())
            if tokens > g.degree * capacity:
                errors.append(f"{gw}: {tokens} tokens exceed its capacity {g.degree} x {capacity} = {g.degree * capacity}")
            if g.degree in spec.degrees:
                expect = cost.group_time_s(arr[ids], g.degree)
                if not math.isclose(g.predicted_s, expect, rel_tol=REL_TOL, abs_tol=1e-12):
                    errors.append(f"{gw}: predicted {g.predicted_s:.6g}s but the cost model gives {expect:.6g}s")
        slowest = max((g.predicted_s for g in mb.groups), default=0.0)
        if not math.isclose(mb.predicted_s, slowest, rel_tol=REL_TOL, abs_tol=1e-12):
            errors.append(f"{where}: predicted {mb.predicted_s:.6g}s but its slowest group takes {slowest:.6g}s")
        errors += _micro_batch_bound(prob, ids_here, mb, where)
    missing, repeated = np.flatnonzero(seen == 0), np.flatnonzero(seen > 1)
    if len(missing):
        errors.append(f"{len(missing)} sequence(s) never scheduled, e.g. ids {missing[:5].tolist()}")
    if len(repeated):
        errors.append(f"{len(repeated)} sequence(s) scheduled more than once, e.g. ids {repeated[:5].tolist()}")
    total = sum(mb.predicted_s for mb in plan.micro_batches)
    if not math.isclose(plan.predicted_s, total, rel_tol=REL_TOL, abs_tol=1e-12):
        errors.append(f"step predicted {plan.predicted_s:.6g}s but its micro-batches sum to {total:.6g}s")
    provable = problem_lower_bound(prob)
    if plan.lower_bound_s > provable * (1 + REL_TOL) + 1e-12:
        errors.append(f"lower bound {plan.lower_bound_s:.6g}s is above the provable bound {provable:.6g}s")
    if plan.lower_bound_s > plan.predicted_s * (1 + REL_TOL) + 1e-12:
        errors.append(f"lower bound {plan.lower_bound_s:.6g}s exceeds the plan's own time {plan.predicted_s:.6g}s")
    errors += _optimal_flag(plan)
    if errors:
        raise PlanError(errors)


def _is_int(value) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _is_seconds(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def _field_types(plan) -> list[str]:
    """Violations of the plan's field types (checked first: the rest assumes them)."""
    if not isinstance(plan, StepPlan):
        return [f"expected a StepPlan, got {type(plan).__name__}"]
    errors = []
    if not _is_int(plan.num_ranks):
        errors.append(f"num_ranks must be an integer, got {plan.num_ranks!r}")
    for name in ("predicted_s", "lower_bound_s", "solve_s"):
        if not _is_seconds(getattr(plan, name)):
            errors.append(f"{name} must be a finite number of seconds >= 0, got {getattr(plan, name)!r}")
    for name in ("optimal", "time_limited", "fallback"):
        if not isinstance(getattr(plan, name), bool):
            errors.append(f"{name} must be a bool, got {getattr(plan, name)!r}")
    if not isinstance(plan.strategy, str) or not isinstance(plan.info, dict):
        errors.append("strategy must be a str and info a dict")
    if not isinstance(plan.micro_batches, (tuple, list)):
        return errors + [f"micro_batches must be a sequence, got {type(plan.micro_batches).__name__}"]
    for m, mb in enumerate(plan.micro_batches):
        if not isinstance(mb, MicroBatchPlan) or not isinstance(mb.groups, (tuple, list)):
            errors.append(f"micro-batch {m} is not a MicroBatchPlan with a sequence of groups")
            continue
        if not _is_seconds(mb.predicted_s):
            errors.append(f"micro-batch {m}: predicted_s must be finite seconds >= 0, got {mb.predicted_s!r}")
        for k, g in enumerate(mb.groups):
            errors += [f"micro-batch {m} group {k}: {e}" for e in _group_types(g)]
    return errors


def _group_types(g) -> list[str]:
    if not isinstance(g, GroupPlan):
        return [f"expected a GroupPlan, got {type(g).__name__}"]
    errors = []
    for name in ("first_rank", "degree"):
        if not _is_int(getattr(g, name)):
            errors.append(f"{name} must be an integer, got {getattr(g, name)!r}")
    if not isinstance(g.seq_ids, (tuple, list)) or not all(_is_int(i) for i in g.seq_ids):
        errors.append(f"seq_ids must be a sequence of integer ids, got {g.seq_ids!r}")
    if not _is_seconds(g.predicted_s):
        errors.append(f"predicted_s must be finite seconds >= 0, got {g.predicted_s!r}")
    return errors


def _check_tiling(mb: MicroBatchPlan, spec: ClusterSpec, where: str) -> list[str]:
    errors = []
    owner = np.full(spec.num_ranks, -1)
    for k, g in enumerate(mb.groups):
        gw = f"{where} group @rank{g.first_rank} SP{g.degree}"
        if g.degree not in spec.degrees:
            errors.append(
                f"{gw}: degree {g.degree} is not usable (usable with {spec.num_ranks} ranks, {spec.ranks_per_node} "
                f"per node, num_heads={spec.num_heads}, num_kv_heads={spec.kv_heads}: {list(spec.degrees)})"
            )
            continue
        why = layout.group_violation(spec, g.first_rank, g.degree)
        if why is not None:
            errors.append(f"{gw}: {why}")
            if "outside" in why:
                continue
        taken = owner[g.first_rank : g.first_rank + g.degree]
        if (taken >= 0).any():
            errors.append(f"{gw}: overlaps another group")
        owner[g.first_rank : g.first_rank + g.degree] = k
    idle = np.flatnonzero(owner < 0)
    if len(idle):
        errors.append(f"{where}: ranks {idle[:8].tolist()} belong to no group (groups must tile all ranks)")
    return errors


def _micro_batch_bound(prob, ids: list[int], mb: MicroBatchPlan, where: str) -> list[str]:
    """No micro-batch can beat b1 plus the proven bound of its own sequences."""
    if not ids or len(set(ids)) != len(ids):
        return []
    floor = prob.b1 + busy_lower_bound(prob.subset(np.asarray(sorted(ids))))
    if mb.predicted_s < floor * (1 - REL_TOL) - 1e-12:
        return [f"{where}: predicted {mb.predicted_s:.6g}s is below its proven lower bound {floor:.6g}s"]
    return []


def _optimal_flag(plan: StepPlan) -> list[str]:
    """optimal=True needs the per-micro-batch bounds of a solver that proved them."""
    if not plan.optimal:
        return []
    if plan.time_limited:
        return ["plan claims optimal although a solver hit its time limit"]
    bounds = plan.info.get("mip_bound_s")
    if not isinstance(bounds, list) or len(bounds) != len(plan.micro_batches):
        return ["plan claims optimal but records no per-micro-batch proven bound (info['mip_bound_s'])"]
    errors = []
    for m, (bound, mb) in enumerate(zip(bounds, plan.micro_batches)):
        if not _is_seconds(bound) or bound > mb.predicted_s * (1 + REL_TOL) + 1e-12:
            errors.append(f"micro-batch {m}: recorded bound {bound!r} is not a number <= its time {mb.predicted_s:.6g}s")
        elif mb.predicted_s > 0 and 1.0 - bound / mb.predicted_s > OPTIMAL_GAP:
            errors.append(
                f"micro-batch {m}: claims optimal but its time {mb.predicted_s:.6g}s is "
                f"{100 * (1 - bound / mb.predicted_s):.3g}% above its recorded bound {bound:.6g}s"
            )
    return errors
