"""Pure step planning: lengths + ClusterSpec + CostModel -> StepPlan. No torch, no ray."""

from solver.cost import CostModel, FitReport, fit_cost_model, load_preset, preset_cluster, preset_names
from solver.plan import GroupPlan, MicroBatchPlan, PlanError, StepPlan, make_plan, validate
from solver.spec import MAX_NUM_RANKS, ClusterSpec, is_power_of_two, usable_degrees
from solver.bounds import lower_bound
from solver.planner import Planner, plan
from solver.strategies.registry import BASELINES, STRATEGIES

__all__ = [
    "BASELINES",
    "ClusterSpec",
    "MAX_NUM_RANKS",
    "CostModel",
    "FitReport",
    "GroupPlan",
    "MicroBatchPlan",
    "PlanError",
    "Planner",
    "STRATEGIES",
    "StepPlan",
    "fit_cost_model",
    "is_power_of_two",
    "load_preset",
    "lower_bound",
    "make_plan",
    "plan",
    "preset_cluster",
    "preset_names",
    "usable_degrees",
    "validate",
]
