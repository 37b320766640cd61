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
    """AdamW peak learning rate (reached after warmup_steps)."""
    weight_decay: float = 0.0
    """AdamW decoupled weight decay of the weight matrices; norms, biases and the embedding
    (also the tied output projection) never decay."""
    max_grad_norm: float = 1.0
    """Clip the global gradient norm (over all ranks' shards) to this before the optimizer
    step; 0 = no clipping."""
    warmup_steps: int = 0
    """Linear warmup: step k (0-based) of the first warmup_steps uses lr * (k + 1) / warmup_steps."""
    decay_steps: int = 0
    """Cosine decay from lr (at the end of the warmup) to min_lr at this step, min_lr after
    it; 0 = no decay (constant lr after the warmup). A function of the step alone, never
    of train.steps, so --resume with more --steps continues the schedule exactly. For a
    cosine over the whole run set it to train.steps; resuming with a larger --steps and a
    raised decay_steps changes the lr of every step still to run."""
    min_lr: float = 0.0
    """Learning rate at the end of the cosine decay (decay_steps)."""

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ValueError(f"lr={self.lr} must be > 0 (e.g. lr = 2e-3)")
        for name in ("weight_decay", "max_grad_norm", "warmup_steps", "decay_steps"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"optimizer.{name}={getattr(self, name)} must be >= 0")
        if self.decay_steps and self.decay_steps <= self.warmup_steps:
            raise ValueError(
                f"optimizer.decay_steps={self.decay_steps} <= optimizer.warmup_steps={self.warmup_steps}: the decay "
                f"starts when the warmup ends; set decay_steps > {self.warmup_steps}, or 0 for no decay"
            )
        if not 0 <= self.min_lr <= self.lr:
            raise ValueError(f"optimizer.min_lr={self.min_lr} must be in [0, optimizer.lr={self.lr}]")

    @property
    def clip_norm(self) -> float | None:
        """WorkerConfig's form: None disables clipping."""
        return self.max_grad_norm or None


@dataclass(kw_only=True)
class EngineConfig:
    dtype: Literal["float32", "bfloat16", "float64"] = "float32"
    """Compute dtype on every rank. bfloat16 is mixed precision: bf16 compute with fp32
    master weights, gradient shards and AdamW states (needs state_sharding = zero3)."""
    state_sharding: Literal["zero3", "replicated"] = "zero3"
    """Model-state layout: zero3 shards parameters, gradients and AdamW states over all
    ranks (FSDP2, 1/N each); replicated keeps all of them on every rank. The planner's cost
    model is given this layout (its model-state bytes per rank)."""
    activation_checkpointing: bool = False
    """Recompute every transformer block in backward instead of keeping its activations;
    the cost model must have been profiled the same way (profile.activation_checkpointing)."""
    pin_cpus: bool = False
    """Pin rank r to its own slice of the node's CPUs, so ranks behave like devices with a
    fixed share of the machine (as the cost model assumes)."""
    collective_timeout_s: float = 60.0
    """torch.distributed timeout: survivors of a dead peer error out after this."""

    def __post_init__(self) -> None:
        if not (self.collective_timeout_s > 0 and math.isfinite(self.collective_timeout_s)):
            raise ValueError(f"collective_timeout_s={self.collective_timeout_s} must be a positive number of seconds")
        if self.dtype == "bfloat16" and self.state_sharding != "zero3":
            raise ValueError(
                "engine.dtype='bfloat16' keeps fp32 master weights through FSDP2's mixed precision, which needs "
                f"engine.state_sharding='zero3' (got {self.state_sharding!r}); use zero3 or dtype float32"
            )
