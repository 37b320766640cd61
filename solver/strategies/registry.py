"""Strategy names -> functions(problem, **options) -> StrategyResult."""

from __future__ import annotations

from typing import Callable

from solver.strategies.baselines import (
    plan_batch_ada,
    plan_batch_ada_bfd,
    plan_dcp_greedy,
    plan_static,
    plan_static_bfd,
)
from solver.strategies.fast import plan_fast
from solver.strategies.flexsp import plan_flexsp
from solver.strategies.problem import StrategyResult

STRATEGIES: dict[str, Callable[..., StrategyResult]] = {
    "fast": plan_fast,
    "flexsp": plan_flexsp,
    "static": plan_static,
    "batch-ada": plan_batch_ada,
    "dcp-greedy": plan_dcp_greedy,
    "static-bfd": plan_static_bfd,
    "batch-ada-bfd": plan_batch_ada_bfd,
}
"""`static-bfd` and `batch-ada-bfd` are the FlexSP paper's baselines (token best-fit
packing); `static` and `batch-ada` are their time-balanced versions."""

BASELINES = ("static", "batch-ada", "dcp-greedy", "static-bfd", "batch-ada-bfd")
"""Every strategy that is not hsp's own planner (fast, flexsp)."""
