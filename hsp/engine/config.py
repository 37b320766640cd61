"""Configuration and report of one rank's supervised (SFT) step (hsp.engine.sft)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from hsp.model.config import ModelConfig
from solver.cost import STATE_SHARDINGS, CostModel
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
    """AdamW peak learning rate (reached after warmup_steps)."""
    weight_decay: float = 0.0
    """AdamW decoupled weight decay of the matrices; norms, biases and embeddings never decay."""
    warmup_steps: int = 0
    """Linear warmup: step k (0-based) of the first warmup_steps uses lr * (k + 1) / warmup_steps."""
    decay_steps: int = 0
    """Cosine decay from lr to min_lr from the end of warmup to this step (then min_lr);
    0 keeps lr constant after warmup."""
    min_lr: float = 0.0
    """Learning rate at the end of the cosine decay."""
    max_grad_norm: float | None = 1.0
    """Clip the global gradient norm (over all shards) to this before the optimizer step;
    None disables clipping."""
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
    """Compute dtype: float32, float64 (exactness tests) or bfloat16 (mixed precision:
    bf16 compute, fp32 master weights, gradient shards and AdamW states; needs zero3)."""
    state_sharding: str = "zero3"
    """'zero3': FSDP2 fully_shard over all ranks, per transformer block and the root
    (parameters, gradients and AdamW states 1/N per rank, gradients reduce-scattered after
    every forward/backward pass); 'replicated': every rank holds everything and
    gradients are all-reduced once per step. Must match cost_model.state_sharding."""
    activation_checkpointing: bool = False
    """Recompute each transformer block in backward instead of keeping its activations;
    must match cost_model.activation_checkpointing (profile with it on)."""
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
        if self.state_sharding not in STATE_SHARDINGS:
            raise ValueError(f"state_sharding must be one of {', '.join(STATE_SHARDINGS)}, got {self.state_sharding!r}")
        if self.dtype == "bfloat16" and self.state_sharding != "zero3":
            raise ValueError(
                "dtype='bfloat16' keeps fp32 master weights through FSDP2's MixedPrecisionPolicy, which needs "
                f"state_sharding='zero3' (got {self.state_sharding!r}); use state_sharding='zero3' or dtype='float32'"
            )
        cost = self.cost_model
        if (cost.state_sharding, cost.activation_checkpointing) != (self.state_sharding, self.activation_checkpointing):
            raise ValueError(
                f"the cost model {cost.name!r} describes state_sharding={cost.state_sharding!r}, "
                f"activation_checkpointing={cost.activation_checkpointing} but the ranks run "
                f"state_sharding={self.state_sharding!r}, activation_checkpointing={self.activation_checkpointing}; "
                "plans would assume memory the ranks do not have: set the same values in both "
                "(profile with the ranks' settings, or edit the cost model's JSON)"
            )
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
        if not (self.lr > 0 and self.weight_decay >= 0):
            raise ValueError(f"need lr > 0 and weight_decay >= 0, got lr={self.lr}, weight_decay={self.weight_decay}")
        if self.warmup_steps < 0 or self.decay_steps < 0:
            raise ValueError(f"need warmup_steps >= 0 and decay_steps >= 0, got {self.warmup_steps}, {self.decay_steps}")
        if self.decay_steps and self.decay_steps <= self.warmup_steps:
            raise ValueError(
                f"decay_steps={self.decay_steps} must be > warmup_steps={self.warmup_steps} (the decay starts after "
                "the warmup), or 0 for a constant lr after warmup"
            )
        if not 0 <= self.min_lr <= self.lr:
            raise ValueError(f"min_lr={self.min_lr} must be in [0, lr={self.lr}]")

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
    num_passes: int = 1
    """Forward/backward passes the rank ran: under zero3 every rank runs the micro-batch's
    largest chunk count (passes beyond its own chunks are empty, see hsp.engine.sft)."""

    def as_dict(self) -> dict:
        return {"compute_s": self.compute_s, "a2a_s": self.a2a_s, "total_s": self.total_s,
                "num_chunks": self.num_chunks, "num_passes": self.num_passes}


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
    """Seconds of the end-of-step reduction: the gradient all-reduce when replicated; only
    the loss sum under zero3 (its gradients are reduce-scattered inside every pass)."""
    peak_memory_bytes: int
    """Peak RSS during the step on CPU; torch.cuda.max_memory_allocated on CUDA."""
    materialise_s: float = 0.0
    """Seconds turning the batch's sample indices into token tensors before the step
    (0 when the batch came as tensors)."""
    model_state_bytes: int = 0
    """Bytes of parameters, gradients and optimizer states this rank holds after the step
    (its shards under zero3, everything when replicated)."""
    activation_peak_bytes: int = 0
    """Peak bytes autograd saved for backward during the step (parameters excluded)."""
    lr: float = 0.0
    """Learning rate of this step's optimizer update."""
    grad_norm: float = 0.0
    """Global gradient norm over all shards, before clipping."""
    flops: float = 0.0
    """Model FLOPs of the whole batch's forward and backward (hsp.engine.flops), the same on every rank."""
    peak_flops_per_s: float = 0.0
    """This rank's peak FLOP/s, measured with a dense matmul at start-up (hsp.engine.flops)."""
