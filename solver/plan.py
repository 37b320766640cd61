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
from solver.spec import ClusterSpec

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

    def status(self) -> str:
        """How the plan was found, e.g. 'proven optimal' or 'proven within 0.8% of optimal'."""
        gaps = self.info.get("mip_gap")
        if self.optimal:
            text = "proven optimal"
        elif self.time_limited:
            text = "time-limited, unproven"
        elif gaps:
            text = f"proven within {100 * max(gaps):.2g}% of optimal per micro-batch"
        else:
            text = "heuristic"
        return text + (", deadline fallback" if self.fallback else "")

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
    """Check every constraint of `plan` for this batch and cluster, recomputing what can be
    recomputed (see `solver.validate`); raise PlanError listing all violations."""
    from solver.validate import validate_plan  # it needs the bounds, which need this module's types

    validate_plan(plan, lengths, spec, cost)
