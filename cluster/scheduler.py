"""The driver loop of `hsp train`.

Per step: the data cursor picks sample indices, the planner (already working on this
step while the previous one ran) turns their lengths into a StepPlan, the plan and the
indices go to every rank (each running hsp.engine.sft.SupervisedStep), and the rank
reports come back. Predicted and measured times are compared every step; a failed rank
rebuilds the group from the last checkpoint, up to `max_restarts` times, after which the
run stops with `RestartsExhausted` (the state of the finished steps stays readable).

Checkpoints (cluster.checkpoint) are written by the ranks, each its own shard, into a
staging folder the driver then commits with the run state as JSON. Loading tries the
newest committed checkpoint first and falls back to older ones, reporting each one that
fails (unreadable JSON, a missing or truncated shard, a shard the ranks cannot load) in
the log and in the run state's `warnings`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from cluster import checkpoint
from cluster.attribution import CAUSES
from cluster.checkpoint import CheckpointConfig, CheckpointCorrupt
from cluster.launch import GroupSpec, WorkerFailure, WorkerGroup
from cluster.metrics import Metrics
from cluster.placement import Placement
from hsp.data import DataCursor, Dataset
from hsp.engine.dcp import CheckpointLoadError
from solver.cost import CostModel
from solver.plan import validate
from solver.planner import Planner
from solver.spec import ClusterSpec

log = logging.getLogger("hsp.train")

DRIFT_EMA = 0.2
"""Weight of the newest step in the running measured/predicted ratio."""


@dataclass
class StepRecord:
    """One finished step, as written to history.jsonl."""

    step: int
    loss: float
    num_tokens: int
    predicted_s: float
    calibrated_predicted_s: float
    measured_s: float
    wall_s: float
    solve_s: float
    plan_wait_s: float
    overhead_s: float
    """Driver-view step time not spent in the slowest rank's SupervisedStep.run_step: plan wait,
    Ray dispatch/gather and the ranks' data materialisation."""
    imbalance: float
    fallback: bool
    plan: str
    sp_groups: dict[int, int]
    peak_memory_bytes: list[int]
    timestamp_s: float
    restarts: int
    materialise_s: float = 0.0
    """Slowest rank's seconds turning indices into tokens (part of overhead_s)."""
    in_actor_s: float = 0.0
    """Slowest rank's seconds inside its actor call; wall_s minus this is Ray transport."""
    model_state_bytes: int = 0
    """Largest model-state bytes (parameters, gradients, optimizer states) a rank holds."""
    activation_peak_bytes: int = 0
    """Largest peak of activation bytes saved for backward on a rank."""
    flops: float = 0.0
    """Model FLOPs of the step (hsp.engine.flops)."""
    mfu: float = 0.0
    """flops / (wall_s x peak_flops_per_s)."""
    peak_flops_per_s: float = 0.0
    """Sum over ranks of each rank's measured dense-matmul FLOP/s (hsp.engine.flops)."""
    lr: float = 0.0
    grad_norm: float = 0.0


@dataclass
class RunState:
    """Driver state that a checkpoint carries besides the ranks' own state."""

    history: list[dict] = field(default_factory=list)
    drift: float = 1.0
    """Running measured/predicted step-time ratio (the cost model's online rescale)."""
    restarts: int = 0
    recoveries: list[dict] = field(default_factory=list)
    first_plan: dict | None = None
    """The StepPlan of the first step of the run, for the Gantt chart."""
    warnings: list[dict] = field(default_factory=list)
    """Checkpoints that failed to load, each {path, moved_to, reason, time_s}."""

    def to_dict(self) -> dict:
        return {
            "history": self.history,
            "drift": self.drift,
            "restarts": self.restarts,
            "recoveries": self.recoveries,
            "first_plan": self.first_plan,
            "warnings": self.warnings,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "RunState":
        return cls(history=list(data["history"]), drift=float(data["drift"]), restarts=int(data["restarts"]),
                   recoveries=list(data["recoveries"]), first_plan=data["first_plan"], warnings=list(data.get("warnings", [])))


class RestartsExhausted(RuntimeError):
    """The worker group failed again after `max_restarts` rebuilds: the run stops."""

    def __init__(self, failure: WorkerFailure, step: int, restarts: int):
        self.rank, self.cause, self.step, self.restarts = failure.rank, failure.cause, step, restarts
        self.error = str(failure)
        self.time_s = time.time()
        super().__init__(
            f"step {step} failed ({self.error}) after the worker group was rebuilt {restarts} time(s) "
            "(train.max_restarts); fix the cause, then continue with --resume or raise train.max_restarts"
        )


@dataclass(frozen=True, kw_only=True)
class SchedulerConfig:
    """Everything the driver loop of `hsp train` runs with (built by cluster.trainer)."""

    num_steps: int
    """Train up to this step (a resumed run continues up to it)."""
    run_dir: str
    """Where the checkpoints go."""
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    """How often checkpoints are written, how many are kept, whether the run resumes."""
    max_restarts: int
    """Worker-group rebuilds allowed after failures before the run gives up."""
    step_timeout_s: float
    """A step (or checkpoint transfer) not finished by then counts as a failure."""
    group: GroupSpec
    """The worker group; its rank_spec is an hsp.engine.sft.SupervisedSpec, whose worker
    config holds the ClusterSpec and CostModel that plans are made and checked with."""
    strategy: str
    """Planner strategy (solver.planner)."""
    deadline_s: float
    """A plan not ready this long after the previous step ends falls back to `fast`."""
    cursor: DataCursor
    """Which samples make up each step."""

    def __post_init__(self) -> None:
        for name in ("num_steps", "max_restarts"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.step_timeout_s > 0 or not self.deadline_s > 0:
            raise ValueError(f"need step_timeout_s > 0 and deadline_s > 0, got {self.step_timeout_s}, {self.deadline_s}")

    @property
    def spec(self) -> ClusterSpec:
        return self.group.rank_spec.worker.spec

    @property
    def cost(self) -> CostModel:
        return self.group.rank_spec.worker.cost_model


class Scheduler:
    """Runs steps [start, num_steps) on a WorkerGroup it owns."""

    def __init__(self, config: SchedulerConfig, *, dataset: Dataset, metrics: Metrics):
        self.config, self.dataset, self.metrics = config, dataset, metrics
        self.spec, self.cost, self.cursor = config.spec, config.cost, config.cursor
        self.state = RunState()
        self.saved_step: int | None = None
        """Step of the checkpoint this run wrote or resumed from (None: restart from scratch)."""
        self.warnings: list[dict] = []
        """Every checkpoint this process rejected (also kept in the run state)."""
        self._replace_old = False
        self.callbacks: list[Callable[["Scheduler", StepRecord], None]] = []
        self.group: WorkerGroup | None = None
        self.placement: Placement | None = None
        """Where the latest worker group's ranks run (its ranks per node are self.spec's)."""
        self.furthest_step = 0
        """Highest step this process has finished: finishing it again is a re-run after a
        recovery went back to the last checkpoint (hsp_rerun_steps_total, not hsp_steps_total)."""
        start_failure_series(metrics)

    # ---- lifecycle --------------------------------------------------------------------

    def run(self, progress_factory: Callable[[int], object] | None = None) -> RunState:
        """Train to `num_steps`; `progress_factory(first_step)` makes a tqdm-like bar
        once the workers are up."""
        step = self._start()
        planner = self._new_planner(step)
        progress = progress_factory(step) if progress_factory is not None else None
        try:
            while True:
                try:
                    if step >= self.config.num_steps:
                        self._save(step)  # final checkpoint: --resume with more --steps continues
                        break
                    step = self._advance(step, planner, progress)
                except WorkerFailure as failure:
                    planner.close()
                    step = self._recover(failure, step)
                    planner = self._new_planner(step)
                    if progress is not None:
                        progress.n = step
                        progress.refresh()
        finally:
            planner.close()
            if progress is not None:
                progress.close()
            if self.group is not None:
                self.group.shutdown(graceful=True)
                self.group = None
        return self.state

    def _advance(self, step: int, planner, progress) -> int:
        """Run `step`, checkpoint if due, report; returns the next step."""
        record = self._one_step(step, planner)
        step += 1
        every = self.config.checkpoint.every_steps
        if every and step % every == 0 and step < self.config.num_steps:
            self._save(step)
        if progress is not None:
            progress.set_postfix_str(_progress_line(record, self.spec.device_memory_bytes), refresh=False)
            progress.update(1)
        for callback in self.callbacks:
            callback(self, record)
        return step

    def _start(self) -> int:
        self.group = self._build_group()
        self._replace_old = False
        if not self.config.checkpoint.resume:
            if checkpoint.committed(self.config.run_dir):
                log.warning(
                    "%s already holds checkpoints; starting from step 0, and this run's first checkpoint replaces them. "
                    "Use --resume to continue that run, or --run-dir DIR for a new one",
                    self.config.run_dir,
                )
                self._replace_old = True
            return 0
        step = self._load_newest()
        if step is None:
            self.state.warnings = list(self.warnings)
            log.warning("--resume: %s holds no usable checkpoint, starting from step 0",
                        checkpoint.checkpoint_dir(self.config.run_dir))
            return 0
        return step

    def _build_group(self) -> WorkerGroup:
        group = WorkerGroup(self.config.group)
        # plans are made for the ranks per node the group was really placed with
        self.spec, self.placement = group.rank_spec.worker.spec, group.placement
        return group

    def _new_planner(self, step: int):
        planner = Planner(self.spec, self.cost, strategy=self.config.strategy, deadline_s=self.config.deadline_s)
        if step < self.config.num_steps:
            planner.submit(step, self.lengths(step))
        return planner

    def lengths(self, step: int) -> np.ndarray:
        return self.dataset.lengths[self.cursor.indices(step)]

    # ---- one step -----------------------------------------------------------------------

    def _one_step(self, step: int, planner) -> StepRecord:
        wait_start = time.perf_counter()
        plan = planner.result(step)
        plan_wait_s = time.perf_counter() - wait_start
        validate(plan, self.lengths(step), self.spec, self.cost)  # a bad plan stops here, not on the ranks
        start = time.perf_counter()
        pending = self.group.call("step", plan, self.cursor.indices(step))
        if step + 1 < self.config.num_steps:
            # planned while this step runs; submitted after the dispatch so the ranks
            # get their work before the planner thread competes for the CPU
            planner.submit(step + 1, self.lengths(step + 1))
        results = self.group.gather(pending, timeout_s=self.config.step_timeout_s)
        wall_s = time.perf_counter() - start
        reports = [r.value for r in results]
        if self.state.first_plan is None:
            self.state.first_plan = {"step": step + 1, "plan": plan.to_dict(), "lengths": self.lengths(step).tolist()}
        record = self._record(step, plan, reports, wall_s, plan_wait_s)
        record.materialise_s = max(r.materialise_s for r in reports)
        record.in_actor_s = max(r.in_actor_s for r in results)
        _add_state_and_speed(record, reports)
        self.state.history.append(record.__dict__ | {"sp_groups": {str(k): v for k, v in record.sp_groups.items()}})
        self._update_metrics(record, plan)
        return record

    def _record(self, step, plan, reports, wall_s, plan_wait_s) -> StepRecord:
        measured_s = max(r.step_s for r in reports)
        ratio = measured_s / plan.predicted_s if plan.predicted_s > 0 else 1.0
        calibrated = plan.predicted_s * self.state.drift  # predicted with the rescale known before this step
        self.state.drift = (1 - DRIFT_EMA) * self.state.drift + DRIFT_EMA * ratio
        groups: dict[int, int] = {}
        for mb in plan.micro_batches:
            for g in mb.groups:
                groups[g.degree] = groups.get(g.degree, 0) + 1
        return StepRecord(
            step=step + 1,
            loss=float(reports[0].loss),
            num_tokens=int(reports[0].num_tokens),
            predicted_s=float(plan.predicted_s),
            calibrated_predicted_s=float(calibrated),
            measured_s=float(measured_s),
            wall_s=float(wall_s),
            solve_s=float(plan.solve_s),
            plan_wait_s=float(plan_wait_s),
            overhead_s=float(plan_wait_s + max(0.0, wall_s - measured_s)),
            imbalance=imbalance(plan, reports),
            fallback=bool(plan.fallback),
            plan=plan.summary(),
            sp_groups=dict(sorted(groups.items())),
            peak_memory_bytes=[int(r.peak_memory_bytes) for r in reports],
            timestamp_s=time.time(),
            restarts=self.state.restarts,
        )

    def _update_metrics(self, r: StepRecord, plan) -> None:
        m = self.metrics
        m["hsp_step_duration_seconds"].observe(r.wall_s)
        self._count_step(r.step)
        m["hsp_solve_seconds"].labels(strategy=plan.strategy).set(r.solve_s)
        m["hsp_step_predicted_seconds"].set(r.predicted_s)
        m["hsp_step_measured_seconds"].set(r.measured_s)
        m["hsp_prediction_error_ratio"].set(abs(r.predicted_s - r.measured_s) / r.measured_s if r.measured_s else 0.0)
        m["hsp_tokens_total"].inc(r.num_tokens)
        m["hsp_loss"].set(r.loss)
        for degree in self.spec.degrees:  # absent degrees read 0, not a stale value
            m["hsp_sp_groups"].labels(sp_degree=str(degree)).set(r.sp_groups.get(degree, 0))
        m["hsp_imbalance_ratio"].set(r.imbalance)
        for rank, peak in enumerate(r.peak_memory_bytes):
            m["hsp_peak_memory_bytes"].labels(rank=str(rank)).set(peak)
        if r.fallback:
            m["hsp_planner_fallbacks_total"].inc()
        m["hsp_last_step_timestamp_seconds"].set(r.timestamp_s)

    def _count_step(self, step: int) -> None:
        if step > self.furthest_step:
            self.furthest_step = step
            self.metrics["hsp_steps_total"].inc()
        else:
            self.metrics["hsp_rerun_steps_total"].inc()

    # ---- checkpoints and recovery -------------------------------------------------------------

    def _save(self, step: int) -> None:
        """Every rank writes its shard into a staging folder; the driver commits it."""
        run_dir = self.config.run_dir
        if self._replace_old:  # a fresh run in a folder with another run's checkpoints
            for old in checkpoint.committed(run_dir):
                shutil.rmtree(old, ignore_errors=True)
            self._replace_old = False
        staging = checkpoint.staging_dir(run_dir, step)
        rngs = self.group.run("save_checkpoint", str(staging), timeout_s=self.config.step_timeout_s)
        run_state = {
            "step": step,
            "num_ranks": self.spec.num_ranks,
            "data_fingerprint": self.dataset.fingerprint(),
            "cursor": {**dataclasses.asdict(self.cursor), "next_step": step},
            "rank_rng": rngs,
            "run": self.state.to_dict(),
            "time_s": time.time(),
        }
        checkpoint.commit(staging, run_state, keep_last=self.config.checkpoint.keep_last)
        self.saved_step = step

    def _load_newest(self) -> int | None:
        """Restore the newest checkpoint that loads; each one that does not is reported,
        moved aside and the previous one tried. Returns its step (None: none loaded)."""
        for path in checkpoint.committed(self.config.run_dir):
            try:
                run_state = checkpoint.read(path)
                checkpoint.check_resumable(run_state, fingerprint=self.dataset.fingerprint(), path=path)
                self._restore(path, run_state)
            except (CheckpointCorrupt, CheckpointLoadError) as err:
                self.warnings.append(self._reject(path, str(err)))
                continue
            self.state.warnings += [w for w in self.warnings if w not in self.state.warnings]
            log.info("resumed from %s at step %d", path, self.saved_step)
            return self.saved_step
        return None

    def _reject(self, path: Path, reason: str) -> dict:
        moved = checkpoint.quarantine(path)
        log.warning("checkpoint %s failed to load: %s; moved it to %s and trying the previous checkpoint",
                    path, reason, moved)
        return {"path": str(path), "moved_to": str(moved), "reason": reason, "time_s": time.time()}

    def _restore(self, path: Path, run_state: dict) -> None:
        """Every rank loads `path` (resharded onto this world) and its own RNG state."""
        rngs = run_state["rank_rng"]
        step = int(run_state["step"])
        args = [(str(path), step, rngs[r] if r < len(rngs) else None) for r in range(self.spec.num_ranks)]
        if len(rngs) != self.spec.num_ranks:
            log.warning("%s was written by %d ranks and loads onto %d (resharded); ranks without a saved RNG state "
                        "keep their seeded one", path, len(rngs), self.spec.num_ranks)
        self.group.run_each("load_checkpoint", args, timeout_s=self.config.step_timeout_s)
        self.state = RunState.from_dict(run_state["run"])
        self.saved_step = step

    def _recover(self, failure: WorkerFailure, step: int) -> int:
        """Rebuild the group and return the step to continue from."""
        restarts = self.state.restarts + 1
        limit = self.config.max_restarts
        count_failure(self.metrics, failure)
        if self.group is not None:
            self.group.shutdown()
            self.group = None
        if restarts > limit:
            raise RestartsExhausted(failure, step + 1, limit) from None
        event = {"at_step": step + 1, "rank": failure.rank, "cause": failure.cause, "error": str(failure), "time_s": time.time()}
        recoveries = self.state.recoveries + [event]
        self.metrics["hsp_worker_restarts_total"].inc()
        self.group = self._build_group()
        resume_at = self._load_newest() if self.saved_step is not None else None
        if resume_at is None:
            # no (usable) checkpoint in this run: a fresh group is exactly the initial state
            self.state = RunState(restarts=restarts, recoveries=recoveries, warnings=list(self.warnings))
            self.saved_step, resume_at = None, 0
        self.state.restarts, self.state.recoveries = restarts, recoveries
        event["resumed_at_step"] = resume_at
        log.warning(
            "worker failure at step %d: %s; rebuilt the worker group (restart %d/%d), continuing from step %d",
            step + 1, failure, restarts, limit, resume_at,
        )
        return resume_at


def start_failure_series(metrics: Metrics) -> None:
    """Every cause at 0 and no rank blamed yet, so dashboards have data before a failure."""
    for cause in CAUSES:
        metrics["hsp_worker_failures_total"].labels(cause=cause)
    metrics["hsp_last_failed_rank"].set(-1)


def count_failure(metrics: Metrics, failure: WorkerFailure) -> None:
    """The blamed rank and its cause (a failure with no rank to blame, e.g. a group that
    could not be placed, counts as a restart only)."""
    if failure.rank is not None and failure.cause in CAUSES:
        metrics["hsp_worker_failures_total"].labels(cause=failure.cause).inc()
        metrics["hsp_last_failed_rank"].set(failure.rank)


def imbalance(plan, reports) -> float:
    """Slowest group / mean group measured seconds, summed over micro-batches.

    A group's time in a micro-batch is its slowest member's; idle groups are left out.
    """
    slowest = mean = 0.0
    for m, mb in enumerate(plan.micro_batches):
        times = [
            max(reports[r].micro_batches[m]["total_s"] for r in g.ranks) for g in mb.groups if g.seq_ids
        ]
        if times:
            slowest += max(times)
            mean += sum(times) / len(times)
    return slowest / mean if mean > 0 else 1.0


def _add_state_and_speed(record: StepRecord, reports) -> None:
    """Memory (largest rank), the step's model FLOPs and MFU against the ranks' measured peaks."""
    record.model_state_bytes = max(int(r.model_state_bytes) for r in reports)
    record.activation_peak_bytes = max(int(r.activation_peak_bytes) for r in reports)
    record.flops = float(reports[0].flops)
    record.peak_flops_per_s = peak = float(sum(r.peak_flops_per_s for r in reports))
    record.mfu = record.flops / (record.wall_s * peak) if record.wall_s > 0 and peak > 0 else 0.0
    record.lr, record.grad_norm = float(reports[0].lr), float(reports[0].grad_norm)


def _progress_line(r: StepRecord, budget_bytes: int) -> str:
    tokens_per_s = r.num_tokens / r.wall_s if r.wall_s > 0 else math.nan
    memory = (r.model_state_bytes + r.activation_peak_bytes) / 2**20
    return (
        f"loss {r.loss:.3f} | {tokens_per_s:,.0f} tok/s | MFU {100 * r.mfu:.1f}% | "
        f"mem {memory:.1f}/{budget_bytes / 2**20:.1f} MiB | {r.plan} | solve {r.solve_s * 1e3:.1f} ms | "
        f"step pred {r.calibrated_predicted_s * 1e3:.0f} / meas {r.measured_s * 1e3:.0f} ms"
    )
