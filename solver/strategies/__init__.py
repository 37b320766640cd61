"""Planning strategies behind `solver.planner.plan`; each maps a Problem to micro-batches."""

from __future__ import annotations

from typing import Callable

from solver.strategies.baselines import plan_batch_ada, plan_megatron_dcp, plan_static
from solver.strategies.fast import plan_fast
from solver.strategies.flexsp import plan_flexsp
from solver.strategies.problem import Problem, build_problem

STRATEGIES: dict[str, Callable[..., dict]] = {
    "fast": plan_fast,
    "flexsp": plan_flexsp,
    "static": plan_static,
    "batch-ada": plan_batch_ada,
    "megatron-dcp": plan_megatron_dcp,
}
"""name -> function(problem, **options) returning {"micro_batches", "info", ...}."""

__all__ = ["STRATEGIES", "Problem", "build_problem"]
