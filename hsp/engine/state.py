"""Model states on a rank: how parameters, gradients and AdamW states are laid out.

    model = place_model(model, device=dev, dtype=torch.bfloat16, sharding="zero3", world_size=N)
    optimizer = torch.optim.AdamW(param_groups(model, weight_decay=0.1), lr=lr)
    state_bytes(model, optimizer)          # bytes this rank holds (its shards)

- **zero3** (the default): FSDP2 `fully_shard` over all N ranks, once per transformer
  block and once for the root (embeddings, final norm). Every parameter, its gradient and
  its AdamW moments live as 1/N dim-0 shards; a block's parameters are all-gathered for
  its forward and again for its backward, and its gradients are reduce-scattered at the
  end of every backward pass. This is the one data-parallel dimension: the Ulysses groups
  of a micro-batch are subsets of it, so changing the group layout moves no parameters.
  Gradient reduction is a plain SUM (divide factor 1): each rank's loss is already a token
  sum divided by the global number of predicted tokens, so the summed shards are the
  gradient of the single-process full-batch mean loss.
- **replicated**: every rank holds the whole model and AdamW; the SFT and RL steps
  all-reduce the full gradients once per step (hsp.parallel.grads).

Mixed precision (dtype bfloat16, zero3 only): FSDP2's MixedPrecisionPolicy keeps fp32
sharded parameters (the master weights), computes in bf16 (the all-gathered copy) and
reduce-scatters gradients in fp32 into fp32 gradient shards, so AdamW runs in fp32:
4 (weight) + 4 (gradient) + 8 (moments) = 16 bytes per parameter / N, the cost model's
`state_bytes_per_param`. float32 and float64 run unmixed.

Activation checkpointing recomputes every block in backward (torch.utils.checkpoint,
reentrant): the reentrant form recomputes under the caller's saved-tensor hooks, so the
activation meter (hsp.engine.memory) sees the recomputed block and measures the real
peak; the non-reentrant form hides it behind hooks of its own.

The Decoder (hsp.model.decoder) gives its transformer blocks as `model.blocks` (an
nn.ModuleList), the one accessor used here; the root unit holds the embedding (also the
tied output projection), the final norm and an untied lm_head. A model built from
`--init-from` weights is loaded whole on every rank first and sharded here: fully_shard
keeps each rank's slice of the loaded values, so the sharded model starts from exactly
the checkpoint's weights.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor
from torch.utils.checkpoint import checkpoint


def blocks_of(model: nn.Module) -> nn.ModuleList:
    """The transformer blocks, each its own FSDP2 unit and checkpointing unit."""
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, nn.ModuleList):
        raise TypeError(f"{type(model).__name__} has no `blocks` ModuleList; the state layout shards per block")
    return blocks


def place_model(model: nn.Module, *, device: torch.device, dtype: torch.dtype, sharding: str, world_size: int,
                activation_checkpointing: bool = False) -> nn.Module:
    """Move `model` to `device` in the layout `sharding` names; returns the module to train."""
    if activation_checkpointing:
        checkpoint_blocks(model)
    if sharding == "replicated":
        if dtype == torch.bfloat16:
            raise ValueError("bf16 with fp32 master weights needs sharding='zero3' (FSDP2's MixedPrecisionPolicy)")
        return model.to(device=device, dtype=dtype)
    if sharding != "zero3":
        raise ValueError(f"sharding must be 'zero3' or 'replicated', got {sharding!r}")
    mixed = dtype == torch.bfloat16
    model.to(device=device, dtype=torch.float32 if mixed else dtype)  # fp32 master weights under bf16
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if mixed else MixedPrecisionPolicy()
    mesh = init_device_mesh(device.type, (world_size,))
    for block in blocks_of(model):
        fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.set_gradient_divide_factor(1.0)  # sum: losses already carry 1 / global tokens
            module.set_force_sum_reduction_for_comms(True)  # plain SUM (gloo has no PREMUL_SUM)
    return model


def is_sharded(model: nn.Module) -> bool:
    return isinstance(model, FSDPModule)


def checkpoint_blocks(model: nn.Module) -> None:
    """Recompute each block in backward; state-dict keys stay unchanged (no wrapper module)."""
    for block in blocks_of(model):
        block.forward = functools.partial(_recomputed, block.forward)


def _recomputed(forward, *args):
    return checkpoint(forward, *args, use_reentrant=True)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: matrices decay; norms, biases (1-D: RMSNorm weights, Qwen2's Q/K/V
    biases) and embedding tables do not. A tied output projection is the embedding table
    (no decay); an untied `lm_head` is a projection matrix and decays."""
    decay, keep, seen = [], [], set()
    for module in model.modules():
        for p in module.parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            (keep if isinstance(module, nn.Embedding) or p.ndim < 2 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": keep, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor from a shard (a collective over all ranks) or the tensor itself."""
    return t.full_tensor() if isinstance(t, DTensor) else t


def state_bytes(model: nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Bytes of the storages behind this rank's parameters, gradients and optimizer
    states (shards include FSDP2's padding; a storage shared by several tensors counts once)."""
    tensors = []
    for p in model.parameters():
        tensors += [p, p.grad] if p.grad is not None else [p]
    for per_param in optimizer.state.values():
        tensors += [v for v in per_param.values() if isinstance(v, torch.Tensor)]
    storages = {}
    for t in tensors:
        local = t.to_local() if isinstance(t, DTensor) else t
        storage = local.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


@dataclass(frozen=True, kw_only=True)
class LRSchedule:
    """Linear warmup to `lr`, then cosine decay to `min_lr` at `decay_steps` (0: constant)."""

    lr: float
    warmup_steps: int = 0
    decay_steps: int = 0
    min_lr: float = 0.0

    def at(self, step: int) -> float:
        """Learning rate of optimizer step `step` (0-based)."""
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        if not self.decay_steps:
            return self.lr
        if step >= self.decay_steps:
            return self.min_lr
        progress = (step - self.warmup_steps) / (self.decay_steps - self.warmup_steps)
        return self.min_lr + (self.lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
