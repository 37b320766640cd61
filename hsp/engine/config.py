"""Configuration and report of one rank's supervised (SFT) step (hsp.engine.sft)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from hsp.model.config import ModelConfig
from solver.cost import CostModel
from solver.spec import ClusterSpec

DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}


@dataclass(kw_only=True)
class WorkerConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    """The model every rank builds (same init seed -> same weights everywhere)."""
    init_from: str = ""
    """Local Hugging Face folder every rank loads the weights from ('' = initialise from
    model.init_seed); `model` must be its config.json's (`hsp.model.hf.read_config`), up to
    the run settings max_seq_len and init_seed."""
    spec: ClusterSpec
    """The cluster the plans are made for; num_ranks must equal the world size."""
    cost_model: CostModel
    """The planner's cost model: plans are validated against it before any collective."""
    lr: float = 1e-3
    """AdamW learning rate."""
    weight_decay: float = 0.0
    """AdamW decoupled weight decay."""
    max_grad_norm: float | None = 1.0
    """Clip the global gradient norm to this after the all-reduce; None disables clipping."""
    seed: int = 0
    """Seed of torch's RNG on every rank (the model's own init uses model.init_seed)."""
    backend: str = "auto"
    """'auto' (nccl when CUDA is available, else gloo), 'gloo' or 'nccl'."""
    act_budget_bytes: int | None = None
    """Activation bytes one rank may hold per forward/backward; a group whose share exceeds
    it is run in several accumulation chunks. None: never split."""
    act_bytes_per_token: float | None = None
    """Activation bytes per token on one rank; None takes cost_model.act_bytes_per_token."""
    collective_timeout_s: float = 120.0
    """A collective waiting longer than this (a dead or stuck peer) raises instead of hanging."""
    dtype: str = "float32"
    """Parameter and activation dtype: float32, float64 (exactness tests) or bfloat16."""
    num_threads: int = 1
    """torch intra-op threads per rank (ranks share the CPU cores); 0 leaves torch's default."""
    pin_cpus: bool = False
    """Pin rank r to its own slice of this process's CPUs (ranks r*C/N .. (r+1)*C/N - 1, shared
    when N > C). Ranks then behave like devices with a fixed share of the machine, which the
    cost model assumes; without it the OS lets busy groups steal a waiting group's cores."""
    pad_token_id: int = 0
    """Token id of the padding that makes a group's stream a multiple of its degree."""

    def __post_init__(self) -> None:
        if self.backend not in ("auto", "gloo", "nccl"):
            raise ValueError(f"backend must be 'auto', 'gloo' or 'nccl', got {self.backend!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        heads = (self.model.num_heads, self.model.num_kv_heads)
        if (self.spec.num_heads, self.spec.kv_heads) != heads:
            raise ValueError(
                f"spec.num_heads={self.spec.num_heads}, spec.num_kv_heads={self.spec.kv_heads} but the model has "
                f"{heads[0]} query and {heads[1]} key/value heads; build the ClusterSpec with num_heads={heads[0]}, "
                f"num_kv_heads={heads[1]}"
            )
        if self.act_budget_bytes is not None and self.act_budget_bytes <= 0:
            raise ValueError(f"act_budget_bytes must be > 0 or None, got {self.act_budget_bytes}")
        if self.collective_timeout_s <= 0:
            raise ValueError(f"collective_timeout_s must be > 0, got {self.collective_timeout_s}")
        if not 0 <= self.pad_token_id < self.model.vocab_size:
            raise ValueError(f"pad_token_id={self.pad_token_id} outside the vocabulary 0..{self.model.vocab_size - 1}")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ValueError(f"need lr > 0 and weight_decay >= 0, got lr={self.lr}, weight_decay={self.weight_decay}")

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]


@dataclass
class MicroBatchReport:
    compute_s: float
    """Forward + backward seconds outside all-to-alls."""
    a2a_s: float
    """Seconds inside Ulysses all-to-alls (forward and backward)."""
    total_s: float
    num_chunks: int = 1
    """Accumulation chunks the rank's group was split into (activation budget)."""

    def as_dict(self) -> dict:
        return {"compute_s": self.compute_s, "a2a_s": self.a2a_s, "total_s": self.total_s, "num_chunks": self.num_chunks}


@dataclass
class StepReport:
    rank: int
    loss: float
    """Global mean next-token loss over all predicted tokens of the batch."""
    num_tokens: int
    """Tokens in the whole batch."""
    rank_tokens: int
    """Real (unpadded) tokens this rank held over all micro-batches."""
    step_s: float
    micro_batches: list[dict]
    """Per micro-batch {compute_s, a2a_s, total_s, num_chunks}."""
    allreduce_s: float
    """Gradient all-reduce seconds."""
    peak_memory_bytes: int
    """Peak RSS during the step on CPU; torch.cuda.max_memory_allocated on CUDA."""
    materialise_s: float = 0.0
    """Seconds turning the batch's sample indices into token tensors before the step
    (0 when the batch came as tensors)."""
