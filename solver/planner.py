"""`plan(lengths, spec, cost, strategy)`: the one entry point, and `Planner`, which plans
step t+1 in the background while step t runs."""

from __future__ import annotations

import inspect
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import replace

import numpy as np

from solver.bounds import problem_lower_bound
from solver.cost import CostModel
from solver.plan import StepPlan, make_plan
from solver.spec import ClusterSpec
from solver.strategies.problem import build_problem
from solver.strategies.registry import STRATEGIES


def check_lengths(lengths, spec: ClusterSpec, cost: CostModel) -> np.ndarray:
    """The lengths as int64, or a ValueError naming the bad entry and the fix."""
    arr = np.asarray(lengths)
    if arr.dtype == object or arr.dtype == bool:
        bad = next((i for i, v in enumerate(arr.tolist()) if isinstance(v, bool) or not isinstance(v, (int, float))
                    or abs(v) > np.iinfo(np.int64).max), 0)
        raise ValueError(
            f"sequence {bad} has length {arr.tolist()[bad]!r}; lengths must be whole token counts "
            f"between 1 and {np.iinfo(np.int64).max:,}"
        )
    if arr.ndim != 1:
        raise ValueError(f"lengths must be a 1-D list of token counts, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError("the batch is empty: give at least one sequence length")
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            bad = int(np.flatnonzero(~np.isfinite(arr) | (arr != np.round(arr)))[0])
            raise ValueError(f"sequence {bad} has length {arr[bad]!r}; lengths must be whole token counts")
    arr = arr.astype(np.int64)
    bad = np.flatnonzero(arr <= 0)
    if bad.size:
        raise ValueError(
            f"sequence {int(bad[0])} has length {int(arr[bad[0]])} ({bad.size} non-positive length(s) in all); "
            "every length must be >= 1 token: drop empty sequences before planning"
        )
    capacity = cost.token_capacity(spec)
    d_max = max(spec.degrees)
    too_long = np.flatnonzero(arr > d_max * capacity)
    if too_long.size:
        i = int(too_long[0])
        raise ValueError(
            f"sequence {i} has {int(arr[i])} tokens but the largest group holds {d_max} x {capacity} = "
            f"{d_max * capacity} tokens (degree {d_max} x per-rank capacity C); {too_long.size} sequence(s) "
            "fit no group. Lower the max length to drop it, add ranks or device memory, or drop the sequence"
        )
    return arr


def plan(lengths, spec: ClusterSpec, cost: CostModel, strategy: str = "fast", **options) -> StepPlan:
    """Plan one step: micro-batches of aligned SP groups for `lengths` on `spec`.

    Options go to the strategy (e.g. `solve_time_limit_s` for flexsp, `static_degree` for
    static); options that belong to another strategy are ignored, so one option set can
    drive a comparison; unknown option names raise."""
    fn = _strategy(strategy)
    began, began_cpu = time.perf_counter(), time.thread_time()
    arr = check_lengths(lengths, spec, cost)
    prob = build_problem(arr, spec, cost)
    out = fn(prob, **_options_for(fn, options))
    bound = problem_lower_bound(prob)
    info = dict(_jsonable(out.info), solve_cpu_s=time.thread_time() - began_cpu)
    return make_plan(
        out.micro_batches,
        arr,
        spec,
        cost,
        strategy=strategy,
        solve_s=time.perf_counter() - began,
        lower_bound_s=bound,
        optimal=out.optimal,
        time_limited=out.time_limited,
        info=info,
    )


def _strategy(name: str):
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    return STRATEGIES[name]


def accepted_options(strategy: str) -> frozenset[str]:
    """The option names `strategy` takes (plan() routes options by them)."""
    return frozenset(_accepted(_strategy(strategy)))


def _accepted(fn) -> set[str]:
    params = inspect.signature(fn).parameters.values()
    return {p.name for p in params if p.kind == inspect.Parameter.KEYWORD_ONLY}


def _options_for(fn, options: dict) -> dict:
    known = set().union(*(_accepted(f) for f in STRATEGIES.values()))
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"unknown planner option(s) {unknown}; known options: {sorted(known)}")
    mine = _accepted(fn)
    return {k: v for k, v in options.items() if k in mine}


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


class Planner:
    """Plans ahead: `submit(step, lengths)` starts planning in a background thread,
    `result(step)` waits at most until `deadline_s` after the submit and otherwise
    returns the `fast` plan with `fallback=True` (and `info["fallback_reason"]`).

    HiGHS releases the GIL while it solves (measured: a Python loop in the caller keeps
    running during a solve), so a flexsp solve in the worker thread does not stall the
    training loop; the fast fallback runs in the caller's thread. One worker: a solve
    that overruns its deadline keeps the worker until its own time limit, delaying the
    next step's solve (which then may fall back too)."""

    def __init__(self, spec: ClusterSpec, cost: CostModel, strategy: str = "fast", *, deadline_s: float = 5.0, **options):
        _strategy(strategy)
        _options_for(STRATEGIES[strategy], options)  # raise on unknown options now, not later
        if deadline_s < 0:
            raise ValueError(f"deadline_s must be >= 0, got {deadline_s}")
        self.spec, self.cost, self.strategy = spec, cost, strategy
        self.deadline_s = deadline_s
        self.options = options
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hsp-planner")
        self._jobs: dict[int, tuple[Future, float, np.ndarray]] = {}
        self._lock = threading.Lock()

    def submit(self, step: int, lengths) -> None:
        arr = check_lengths(lengths, self.spec, self.cost)
        future = self._pool.submit(plan, arr, self.spec, self.cost, self.strategy, **self.options)
        with self._lock:
            self._jobs[step] = (future, time.monotonic(), arr)

    def result(self, step: int) -> StepPlan:
        with self._lock:
            if step not in self._jobs:
                raise KeyError(f"step {step} was never submitted; call submit({step}, lengths) first")
            future, submitted, arr = self._jobs.pop(step)
        left = max(0.0, submitted + self.deadline_s - time.monotonic())
        try:
            return future.result(timeout=left)
        except FutureTimeout:
            future.cancel()
        fallback = plan(arr, self.spec, self.cost, "fast", **self.options)
        info = dict(
            fallback.info,
            fallback_from=self.strategy,
            fallback_reason=f"{self.strategy} missed the {self.deadline_s:g}s deadline",
        )
        return replace(fallback, fallback=True, info=info)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> "Planner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
