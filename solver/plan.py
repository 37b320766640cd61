"""StepPlan: the only value that crosses from planning to execution.

A step is a list of micro-batches run one after another. In each micro-batch the N
ranks are tiled by aligned power-of-two groups; group g (ranks first_rank ..
first_rank+degree-1) runs the sequences `seq_ids` (indices into the step's length
array) with Ulysses SP of degree `degree`. All fields are plain values, so a plan
serialises to JSON and back losslessly.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np

from solver.cost import CostModel
from solver.spec import ClusterSpec, is_power_of_two

REL_TOL = 1e-6


class PlanError(ValueError):
    """A plan breaks one or more constraints; `violations` lists each one."""

    def __init__(self, violations: list[str]):
        self.violations = violations
        shown = "\n  - ".join(violations[:20])
        more = f"\n  ... and {len(violations) - 20} more" if len(violations) > 20 else ""
        super().__init__(f"invalid plan ({len(violations)} violation(s)):\n  - {shown}{more}")

    def __reduce__(self):
        # pickled across processes (Ray) by its violations, not by the formatted message
        return (PlanError, (self.violations,))


@dataclass(frozen=True)
class GroupPlan:
    first_rank: int
    degree: int
    seq_ids: tuple[int, ...]
    predicted_s: float

    @property
    def ranks(self) -> range:
        return range(self.first_rank, self.first_rank + self.degree)


@dataclass(frozen=True)
class MicroBatchPlan:
    groups: tuple[GroupPlan, ...]
    predicted_s: float
    """Slowest group's predicted seconds."""

    def group_of(self, rank: int) -> GroupPlan:
        for group in self.groups:
            if group.first_rank <= rank < group.first_rank + group.degree:
                return group
        raise KeyError(f"rank {rank} is in no group of this micro-batch")

    def shape(self) -> str:
        """Groups as e.g. '1xSP32 + 4xSP8 + 8xSP2' (largest degree first)."""
        counts: dict[int, int] = {}
        for g in self.groups:
            counts[g.degree] = counts.get(g.degree, 0) + 1
        return " + ".join(f"{n}xSP{d}" for d, n in sorted(counts.items(), reverse=True))


@dataclass(frozen=True)
class StepPlan:
    num_ranks: int
    micro_batches: tuple[MicroBatchPlan, ...]
    predicted_s: float
    """Sum of micro-batch times."""
    lower_bound_s: float
    """A proven lower bound on any valid plan's step time for this batch."""
    strategy: str
    solve_s: float
    optimal: bool = False
    """True when the solver proved this plan optimal for its formulation."""
    time_limited: bool = False
    """True when a solver stopped at its time limit with a feasible, unproven solution."""
    fallback: bool = False
    """True when a deadline passed and the fast plan was returned instead."""
    info: dict = field(default_factory=dict)
    """Strategy-specific extras (plain JSON values), e.g. MILP gap or iterations."""

    @property
    def lower_bound_gap(self) -> float:
        """(predicted - lower bound) / lower bound."""
        return self.predicted_s / self.lower_bound_s - 1.0 if self.lower_bound_s > 0 else math.inf

    def summary(self) -> str:
        """One line, e.g. 'mb1: 1xSP2 | mb2: 2xSP1'."""
        return " | ".join(f"mb{i + 1}: {mb.shape()}" for i, mb in enumerate(self.micro_batches))

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict) -> "StepPlan":
        mbs = tuple(
            MicroBatchPlan(
                groups=tuple(
                    GroupPlan(g["first_rank"], g["degree"], tuple(g["seq_ids"]), g["predicted_s"])
                    for g in mb["groups"]
                ),
                predicted_s=mb["predicted_s"],
            )
            for mb in data["micro_batches"]
        )
        fields = {k: v for k, v in data.items() if k != "micro_batches"}
        return cls(micro_batches=mbs, **fields)

    @classmethod
    def from_json(cls, text: str) -> "StepPlan":
        return cls.from_dict(json.loads(text))


def make_plan(
    micro_batches: Sequence[Sequence[tuple[int, int, Sequence[int]]]],
    lengths: np.ndarray,
    spec: ClusterSpec,
    cost: CostModel,
    *,
    strategy: str,
    solve_s: float,
    lower_bound_s: float,
    optimal: bool = False,
    time_limited: bool = False,
    info: dict | None = None,
) -> StepPlan:
    """Build a StepPlan from [(first_rank, degree, seq_ids), ...] per micro-batch,
    filling in every predicted time from the cost model."""
    lengths = np.asarray(lengths)
    mbs = []
    for groups in micro_batches:
        gps = tuple(
            GroupPlan(int(r), int(d), tuple(int(i) for i in ids), cost.group_time_s(lengths[list(ids)], int(d)))
            for r, d, ids in sorted(groups, key=lambda g: g[0])
        )
        mbs.append(MicroBatchPlan(gps, max((g.predicted_s for g in gps), default=0.0)))
    return StepPlan(
        num_ranks=spec.num_ranks,
        micro_batches=tuple(mbs),
        predicted_s=float(sum(mb.predicted_s for mb in mbs)),
        lower_bound_s=float(lower_bound_s),
        strategy=strategy,
        solve_s=float(solve_s),
        optimal=optimal,
        time_limited=time_limited,
        info=dict(info or {}),
    )


def validate(plan: StepPlan, lengths: Sequence[int], spec: ClusterSpec, cost: CostModel) -> None:
    """Check every constraint of `plan`; raise PlanError listing all violations."""
    lengths = np.asarray(lengths, dtype=np.int64)
    errors: list[str] = []
    if plan.num_ranks != spec.num_ranks:
        errors.append(f"plan is for {plan.num_ranks} ranks but the cluster has {spec.num_ranks}")
    if not plan.micro_batches:
        errors.append("plan has no micro-batches")
    capacity = cost.token_capacity(spec)
    seen = np.zeros(len(lengths), dtype=np.int64)
    for m, mb in enumerate(plan.micro_batches):
        where = f"micro-batch {m}"
        errors += _check_tiling(mb, spec, where)
        for g in mb.groups:
            gw = f"{where} group @rank{g.first_rank} SP{g.degree}"
            bad = [i for i in g.seq_ids if not 0 <= i < len(lengths)]
            if bad:
                errors.append(f"{gw}: sequence ids {bad[:5]} out of range 0..{len(lengths) - 1}")
                continue
            np.add.at(seen, list(g.seq_ids), 1)
            tokens = int(lengths[list(g.seq_ids)].sum())
            if tokens > g.degree * capacity:
                errors.append(
                    f"{gw}: {tokens} tokens exceed its capacity {g.degree} x {capacity} = {g.degree * capacity}"
                )
            if is_power_of_two(g.degree):
                expect = cost.group_time_s(lengths[list(g.seq_ids)], g.degree)
                if not math.isclose(g.predicted_s, expect, rel_tol=REL_TOL, abs_tol=1e-12):
                    errors.append(f"{gw}: predicted {g.predicted_s:.6g}s but the cost model gives {expect:.6g}s")
        slowest = max((g.predicted_s for g in mb.groups), default=0.0)
        if not math.isclose(mb.predicted_s, slowest, rel_tol=REL_TOL, abs_tol=1e-12):
            errors.append(f"{where}: predicted {mb.predicted_s:.6g}s but its slowest group takes {slowest:.6g}s")
    missing = np.flatnonzero(seen == 0)
    repeated = np.flatnonzero(seen > 1)
    if len(missing):
        errors.append(f"{len(missing)} sequence(s) never scheduled, e.g. ids {missing[:5].tolist()}")
    if len(repeated):
        errors.append(f"{len(repeated)} sequence(s) scheduled more than once, e.g. ids {repeated[:5].tolist()}")
    total = sum(mb.predicted_s for mb in plan.micro_batches)
    if not math.isclose(plan.predicted_s, total, rel_tol=REL_TOL, abs_tol=1e-12):
        errors.append(f"step predicted {plan.predicted_s:.6g}s but its micro-batches sum to {total:.6g}s")
    if plan.lower_bound_s > plan.predicted_s * (1 + REL_TOL) + 1e-12:
        errors.append(f"lower bound {plan.lower_bound_s:.6g}s exceeds the plan's own time {plan.predicted_s:.6g}s")
    if errors:
        raise PlanError(errors)


def _check_tiling(mb: MicroBatchPlan, spec: ClusterSpec, where: str) -> list[str]:
    errors = []
    owner = np.full(spec.num_ranks, -1)
    for k, g in enumerate(mb.groups):
        gw = f"{where} group @rank{g.first_rank} SP{g.degree}"
        if not is_power_of_two(g.degree):
            errors.append(f"{gw}: degree {g.degree} is not a power of two")
            continue
        if spec.num_heads % g.degree:
            errors.append(f"{gw}: degree {g.degree} does not divide num_heads={spec.num_heads}")
        if g.first_rank % g.degree:
            errors.append(f"{gw}: not aligned (first rank {g.first_rank} is not a multiple of {g.degree})")
        if g.first_rank < 0 or g.first_rank + g.degree > spec.num_ranks:
            errors.append(f"{gw}: ranks {g.first_rank}..{g.first_rank + g.degree - 1} outside 0..{spec.num_ranks - 1}")
            continue
        last = g.first_rank + g.degree - 1
        if g.degree <= spec.ranks_per_node and g.first_rank // spec.ranks_per_node != last // spec.ranks_per_node:
            errors.append(f"{gw}: straddles nodes of {spec.ranks_per_node} ranks although degree <= ranks per node")
        taken = owner[g.first_rank : last + 1]
        if (taken >= 0).any():
            errors.append(f"{gw}: overlaps another group")
        owner[g.first_rank : last + 1] = k
    idle = np.flatnonzero(owner < 0)
    if len(idle):
        errors.append(f"{where}: ranks {idle[:8].tolist()} belong to no group (groups must tile all ranks)")
    return errors
