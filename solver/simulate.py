"""Cluster-scale simulation: every strategy plans the same batches; compare predicted steps.

All times are cost-model predictions (the planner's own objective), not measurements:
this answers "how much faster would the plans be if the cost model is right", at cluster
sizes (64-1024 ranks) that do not exist here. Every plan is checked with `validate`.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np

from solver.cost import CostModel
from solver.plan import StepPlan, validate
from solver.planner import plan as make_plan
from solver.spec import ClusterSpec
from solver.strategies.registry import BASELINES
from solver.workloads import BatchSampler, LengthSource


@dataclass(frozen=True, kw_only=True)
class StrategyStats:
    strategy: str
    mean_step_s: float
    """Mean predicted step seconds over the simulated steps."""
    speedup_vs_best_baseline: float | None
    """The fastest baseline's mean step / this mean step (None when no baseline was run)."""
    best_baseline: str | None
    """That baseline: the non-hsp strategy (not fast or flexsp) with the lowest mean step."""
    speedup_vs_static: float | None
    """static's mean step / this mean step (None when static was not run)."""
    speedup_vs_batch_ada: float | None
    """batch-ada's mean step / this mean step (None when batch-ada was not run)."""
    solve_s_median: float
    """Median wall seconds of one plan() call (one global batch)."""
    solve_s_p95: float
    solve_cpu_s_median: float
    """Median CPU seconds (this thread) of one plan() call: what a busy machine does not inflate."""
    solve_cpu_s_p95: float
    lp_s_median: float | None
    """fast: median CPU seconds per plan spent in its LP (PuLP build + HiGHS solve)."""
    mip_gap_median: float | None
    """flexsp: median over all micro-batches of the MILP's proven gap, 1 - bound / time."""
    lower_bound_gap: float
    """Mean over steps of predicted / lower bound - 1."""
    max_lower_bound_gap: float
    num_steps: int
    num_optimal: int
    """Plans the MILP proved optimal."""
    num_time_limited: int
    """Plans where a solver stopped at its time limit with an unproven solution."""
    step_s: list[float] = field(default_factory=list)
    solve_s: list[float] = field(default_factory=list)

    def to_dict(self, *, per_step: bool = False) -> dict:
        data = asdict(self)
        if not per_step:
            data.pop("step_s")
            data.pop("solve_s")
        return data


def workload_static_degree(source: LengthSource, max_len: int, spec: ClusterSpec, cost: CostModel) -> int:
    """The `static` baseline's degree: the smallest usable one that fits the workload's
    longest sequence after the max-length filter (not just the current batch's), as a
    DeepSpeed-Ulysses run must pick one degree for the whole run."""
    longest = source.longest(max_len)
    if longest is None:
        raise ValueError(f"workload {source.name!r} has no sequence of <= {max_len:,} tokens; raise the max length")
    degree = cost.min_degree(longest, spec)
    if degree is None:
        capacity = cost.token_capacity(spec)
        raise ValueError(
            f"the workload's longest sequence ({longest:,} tokens, max length {max_len:,}) fits no group: "
            f"{spec.num_ranks} ranks x {capacity:,} tokens per rank = {spec.num_ranks * capacity:,}; "
            f"lower --max-len, add ranks or memory"
        )
    return degree


@dataclass
class StrategyRun:
    """Raw per-step results of one strategy over a stream of batches."""

    strategy: str
    step_s: list[float] = field(default_factory=list)
    solve_s: list[float] = field(default_factory=list)
    """Wall seconds of each plan() call (bounds included): what a driver would wait for."""
    cpu_s: list[float] = field(default_factory=list)
    """CPU seconds of each plan() call (the planner's own thread)."""
    lp_s: list[float] = field(default_factory=list)
    mip_gaps: list[float] = field(default_factory=list)
    """Proven MILP gap of every micro-batch of every step (flexsp)."""
    gaps: list[float] = field(default_factory=list)
    optimal: list[bool] = field(default_factory=list)
    time_limited: list[bool] = field(default_factory=list)

    def add(self, step_plan: StepPlan, wall_s: float) -> None:
        self.step_s.append(step_plan.predicted_s)
        self.solve_s.append(wall_s)
        self.cpu_s.append(float(step_plan.info.get("solve_cpu_s", wall_s)))
        if "lp_s" in step_plan.info:
            self.lp_s.append(float(step_plan.info["lp_s"]))
        self.mip_gaps += [float(g) for g in step_plan.info.get("mip_gap", [])]
        self.gaps.append(step_plan.lower_bound_gap)
        self.optimal.append(step_plan.optimal)
        self.time_limited.append(step_plan.time_limited)


def plan_and_check(lengths, spec: ClusterSpec, cost: CostModel, strategy: str, options: dict) -> tuple[StepPlan, float]:
    """(validated plan, wall seconds of the plan() call). An invalid plan raises
    `PlanError`: that is a planner bug, never the user's input."""
    started = time.perf_counter()
    step_plan = make_plan(lengths, spec, cost, strategy=strategy, **options)
    wall_s = time.perf_counter() - started
    validate(step_plan, lengths, spec, cost)
    return step_plan, wall_s


def simulate(
    sampler: BatchSampler,
    spec: ClusterSpec,
    cost: CostModel,
    strategies: Sequence[str],
    *,
    num_steps: int,
    options: dict[str, dict] | None = None,
    on_plan: Callable[[str, int, StepPlan], None] | None = None,
) -> dict[str, StrategyStats]:
    """Plan `num_steps` batches of `sampler` with each strategy; stats keyed by strategy.

    Every strategy sees the same batches (batch k depends only on the sampler's seed and
    k). `options[strategy]` are extra planner options; `on_plan(strategy, step, plan)` is
    called after each plan (progress bars, logging).
    """
    if num_steps <= 0:
        raise ValueError(f"number of steps must be positive, got {num_steps}")
    if not strategies:
        raise ValueError("no strategies to simulate")
    options = options or {}
    runs = {s: StrategyRun(s) for s in strategies}
    for step in range(num_steps):
        lengths = sampler.batch(step)
        for strategy in strategies:
            step_plan, wall_s = plan_and_check(lengths, spec, cost, strategy, options.get(strategy, {}))
            runs[strategy].add(step_plan, wall_s)
            if on_plan is not None:
                on_plan(strategy, step, step_plan)
    return summarize_runs(runs)


def summarize_runs(runs: dict[str, StrategyRun]) -> dict[str, StrategyStats]:
    """Stats per strategy; speedups need baseline runs over the same steps."""
    mean = {s: float(np.mean(r.step_s)) for s, r in runs.items()}
    baselines = [s for s in mean if s in BASELINES]
    best = min(baselines, key=lambda s: mean[s]) if baselines else None
    out = {}
    for s, r in runs.items():
        out[s] = StrategyStats(
            strategy=s,
            mean_step_s=mean[s],
            speedup_vs_best_baseline=mean[best] / mean[s] if best else None,
            best_baseline=best,
            speedup_vs_static=mean["static"] / mean[s] if "static" in mean else None,
            speedup_vs_batch_ada=mean["batch-ada"] / mean[s] if "batch-ada" in mean else None,
            solve_s_median=float(np.median(r.solve_s)),
            solve_s_p95=float(np.percentile(r.solve_s, 95)),
            solve_cpu_s_median=float(np.median(r.cpu_s)),
            solve_cpu_s_p95=float(np.percentile(r.cpu_s, 95)),
            lp_s_median=float(np.median(r.lp_s)) if r.lp_s else None,
            mip_gap_median=float(np.median(r.mip_gaps)) if r.mip_gaps else None,
            lower_bound_gap=float(np.mean(r.gaps)),
            max_lower_bound_gap=float(np.max(r.gaps)),
            num_steps=len(r.step_s),
            num_optimal=sum(r.optimal),
            num_time_limited=sum(r.time_limited),
            step_s=list(r.step_s),
            solve_s=list(r.solve_s),
        )
    return out


def format_table(stats: dict[str, StrategyStats]) -> str:
    """A fixed-width table, one row per strategy; the speedup over the strongest baseline first."""
    best = next((s.best_baseline for s in stats.values() if s.best_baseline), None)
    head = (
        f"{'strategy':<14}{'mean_step_s':>12}{'vs_best':>9}{'vs_static':>10}{'vs_batch_ada':>13}"
        f"{'cpu_med_s':>10}{'wall_med_s':>11}{'lp_med_s':>9}{'lb_gap':>8}  notes"
    )
    rows = [head, "-" * len(head)]
    for s in stats.values():
        notes = []
        if s.num_time_limited:
            notes.append(f"{s.num_time_limited}/{s.num_steps} time-limited")
        if s.num_optimal:
            notes.append(f"{s.num_optimal}/{s.num_steps} proven optimal")
        if s.mip_gap_median is not None:
            notes.append(f"MIP gap median {100 * s.mip_gap_median:.2f}%")
        lp = "-" if s.lp_s_median is None else f"{s.lp_s_median:.4f}"
        rows.append(
            f"{s.strategy:<14}{s.mean_step_s:>12.3f}{_ratio(s.speedup_vs_best_baseline):>9}"
            f"{_ratio(s.speedup_vs_static):>10}{_ratio(s.speedup_vs_batch_ada):>13}"
            f"{s.solve_cpu_s_median:>10.4f}{s.solve_s_median:>11.4f}{lp:>9}{100 * s.lower_bound_gap:>7.1f}%  "
            f"{', '.join(notes)}"
        )
    if best:
        rows.append(f"vs_best: speedup over the strongest baseline in this run ({best})")
    return "\n".join(rows)


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"
