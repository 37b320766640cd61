"""What `hsp plan` and `hsp simulate` share: the cluster and cost model from a preset or a
file, planner options routed to the strategies that take them (by the strategies' own
signatures, solver.planner.accepted_options), and the plan summary text."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from solver.cost import CostModel, load_preset, preset_cluster, preset_data
from solver.plan import PlanError, StepPlan
from solver.planner import accepted_options
from solver.simulate import plan_and_check
from solver.spec import GIB, ClusterSpec
from solver import STRATEGIES

DEFAULT_COST_FILE_MEMORY_GIB = 28.0
DEFAULT_PRESET = "gpt-7b"


def load_cluster(*, preset: str | None, cost_file: str | None, num_ranks: int, ranks_per_node: int | None,
                 memory_gib: float | None, num_heads: int | None, max_len: int) -> tuple[ClusterSpec, CostModel, str]:
    """(spec, cost, label) from a cost-model preset (default gpt-7b) or a cost-model file,
    with the cluster overrides that are not None."""
    positive("--num-ranks", num_ranks)
    if cost_file:
        if not Path(cost_file).is_file():
            raise ValueError(f"cost-model file {cost_file} does not exist")
        cost = CostModel.load(cost_file)
        spec = ClusterSpec(
            num_ranks=num_ranks,
            ranks_per_node=ranks_per_node or 8,
            num_heads=num_heads or cost.num_heads,
            device_memory_bytes=memory_bytes(DEFAULT_COST_FILE_MEMORY_GIB if memory_gib is None else memory_gib),
        )
        return spec, cost, f"cost file {cost_file}"
    name = DEFAULT_PRESET if preset is None else preset  # '' is an unknown preset, not the default
    preset_data(name)  # unknown preset -> ValueError listing the presets
    cost = load_preset(name, max_len=max_len)
    overrides = {
        "ranks_per_node": ranks_per_node,
        "device_memory_bytes": None if memory_gib is None else memory_bytes(memory_gib),
        "num_heads": num_heads,
    }
    spec = preset_cluster(name, num_ranks)
    return dataclasses.replace(spec, **{k: v for k, v in overrides.items() if v is not None}), cost, f"preset {name}"


def check_strategy(name: str) -> str:
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}: choose one of {', '.join(STRATEGIES)}")
    return name


def route_options(options: dict[str, object], strategies: list[str]) -> dict[str, dict[str, object]]:
    """Per strategy, the given options (None = not given) that it accepts."""
    given = {k: v for k, v in options.items() if v is not None}
    return {s: {k: v for k, v in given.items() if k in accepted_options(s)} for s in strategies}


def unused_options(options: dict[str, object], strategies: list[str]) -> dict[str, list[str]]:
    """Given options no chosen strategy takes -> the strategies that would take them."""
    routed = route_options(options, strategies)
    used = {k for per in routed.values() for k in per}
    return {
        k: [s for s in STRATEGIES if k in accepted_options(s)]
        for k, v in options.items() if v is not None and k not in used
    }


def checked_plan(lengths, spec: ClusterSpec, cost: CostModel, strategy: str, options: dict):
    """plan_and_check, with an invalid plan reported as the bug it is (not as bad input)."""
    try:
        return plan_and_check(lengths, spec, cost, strategy, options)
    except PlanError as err:
        message = f"the {strategy!r} planner produced an invalid plan (a bug; please report it): {err}"
        raise RuntimeError(message) from err


def format_plan_summary(step_plan: StepPlan, lengths: np.ndarray, spec: ClusterSpec, where: str) -> str:
    """Micro-batches with their group shapes, sizes and predicted seconds, the bound and the solve."""
    lengths = np.asarray(lengths)
    lines = [
        f"{step_plan.strategy} plan for {len(lengths):,} sequences, {int(lengths.sum()):,} tokens "
        f"(longest {int(lengths.max()):,}) on {spec.num_ranks} ranks ({spec.ranks_per_node} per node, "
        f"{spec.device_memory_bytes / GIB:.1f} GiB each)",
        f"  {where}",
        "  times are cost-model predictions, not measurements",
        "",
        f"{'mb':>3}  {'groups':<40} {'seqs':>6} {'tokens':>11} {'predicted_s':>12}",
    ]
    for i, mb in enumerate(step_plan.micro_batches, start=1):
        ids = [k for g in mb.groups for k in g.seq_ids]
        lines.append(
            f"{i:>3}  {mb.shape():<40} {len(ids):>6} {int(lengths[ids].sum()):>11,} {mb.predicted_s:>12.3f}"
        )
    lines += [
        "",
        f"step: predicted {step_plan.predicted_s:.3f} s, lower bound {step_plan.lower_bound_s:.3f} s, "
        f"gap {100 * step_plan.lower_bound_gap:.1f}%",
        f"solve: {step_plan.solve_s:.3f} s ({step_plan.status()})",
    ]
    return "\n".join(lines)


def positive(flag: str, value: int) -> int:
    if value <= 0:
        raise ValueError(f"{flag} must be a positive integer, got {value}")
    return value


def memory_bytes(gib: float) -> int:
    if not gib > 0:
        raise ValueError(f"--memory-gib must be positive, got {gib}")
    return int(gib * GIB)
