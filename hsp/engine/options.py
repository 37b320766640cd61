"""The user-facing options of the training engine: the optimizer and how ranks compute.

Plain dataclasses (no torch import), so command-line parsers can be built from them
cheaply; `WorkerConfig` receives their values (cluster/trainer.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal


@dataclass(kw_only=True)
class OptimizerConfig:
    lr: float = 2e-3
    """AdamW learning rate."""
    weight_decay: float = 0.0
    """AdamW decoupled weight decay."""
    max_grad_norm: float = 1.0
    """Clip the global gradient norm to this after the all-reduce; 0 = no clipping."""

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ValueError(f"lr={self.lr} must be > 0 (e.g. lr = 2e-3)")
        for name in ("weight_decay", "max_grad_norm"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0")

    @property
    def clip_norm(self) -> float | None:
        """WorkerConfig's form: None disables clipping."""
        return self.max_grad_norm or None


@dataclass(kw_only=True)
class EngineConfig:
    dtype: Literal["float32", "bfloat16", "float64"] = "float32"
    """Parameter and activation dtype on every rank."""
    pin_cpus: bool = False
    """Pin rank r to its own slice of the node's CPUs, so ranks behave like devices with a
    fixed share of the machine (as the cost model assumes)."""
    collective_timeout_s: float = 60.0
    """torch.distributed timeout: survivors of a dead peer error out after this."""

    def __post_init__(self) -> None:
        if not (self.collective_timeout_s > 0 and math.isfinite(self.collective_timeout_s)):
            raise ValueError(f"collective_timeout_s={self.collective_timeout_s} must be a positive number of seconds")
