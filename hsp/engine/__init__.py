"""The per-rank training engine: run a StepPlan on torch.distributed (no Ray)."""

from hsp.engine.config import MicroBatchReport, StepReport, WorkerConfig
from hsp.engine.worker import CollectiveError, Worker

__all__ = ["CollectiveError", "MicroBatchReport", "StepReport", "Worker", "WorkerConfig"]
