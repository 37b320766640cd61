"""Shared pieces of the execution tests: tiny model, random batches, random valid plans,
and the single-process reference the distributed runs are compared with."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from hsp.engine import WorkerConfig
from hsp.model import Decoder, ModelConfig, pack_positions
from solver.cost import CostModel
from solver.plan import StepPlan, make_plan
from solver.spec import ClusterSpec

# grouped-query: 4 query heads share 2 K/V heads, so degree-2 groups split the K/V heads
# and degree-4 groups replicate them (hsp.parallel.ulysses)
MODEL = ModelConfig(vocab_size=37, num_layers=2, hidden_size=32, num_heads=4, num_kv_heads=2, intermediate_size=40,
                    max_seq_len=256, init_seed=3, init_std=0.1)
# float64 so that the only difference between sharded and single-process runs is the
# summation order (relative error ~1e-15 per op); a wrong mask, shard or weighting
# shows up as >1e-3, so 1e-9 separates them with a wide margin on both sides.
RTOL, ATOL = 1e-9, 1e-12


def cost_model(num_heads: int = 4, state_sharding: str = "zero3", activation_checkpointing: bool = False) -> CostModel:
    """Made-up constants: the tests only need the plans to be valid, not fast."""
    return CostModel(
        name="test", attn_s_per_token2=1e-9, linear_s_per_token=1e-6, group_fixed_s=1e-3,
        act_bytes_per_token=1000.0, num_params=1e5, num_layers=2, hidden_size=32, num_heads=num_heads,
        a2a_bytes_per_s={2: 1e9, 4: 1e9}, state_sharding=state_sharding, activation_checkpointing=activation_checkpointing,
    )


def spec(world_size: int) -> ClusterSpec:
    return ClusterSpec(num_ranks=world_size, num_heads=MODEL.num_heads, num_kv_heads=MODEL.num_kv_heads,
                       device_memory_bytes=1 << 30)


def worker_config(world_size: int, **overrides) -> WorkerConfig:
    """float64, no clipping; the cost model follows the state layout asked for."""
    layout = {k: overrides[k] for k in ("state_sharding", "activation_checkpointing") if k in overrides}
    base = dict(model=MODEL, spec=spec(world_size), cost_model=cost_model(**layout), dtype="float64", max_grad_norm=None,
                lr=1e-2, collective_timeout_s=30.0)
    base.update(overrides)
    return WorkerConfig(**base)


def random_batch(rng: np.random.Generator, num_seqs: int, max_len: int = 60) -> list[torch.Tensor]:
    lengths = rng.integers(1, max_len + 1, size=num_seqs)
    lengths[0] = max_len  # at least one long sequence
    return [torch.from_numpy(rng.integers(0, MODEL.vocab_size, size=int(n))) for n in lengths]


def _random_tiling(rng: np.random.Generator, first: int, size: int, max_degree: int) -> list[tuple[int, int]]:
    if size <= max_degree and rng.random() < 0.5:
        return [(first, size)]
    if size == 1:
        return [(first, 1)]
    half = size // 2
    return _random_tiling(rng, first, half, max_degree) + _random_tiling(rng, first + half, half, max_degree)


def random_plan(rng: np.random.Generator, lengths: list[int], world_size: int, num_micro_batches: int) -> StepPlan:
    """Sequences shuffled over micro-batches and random aligned groups (some may be idle)."""
    order = rng.permutation(len(lengths))
    mbs = []
    for part in np.array_split(order, num_micro_batches):
        groups = _random_tiling(rng, 0, world_size, MODEL.num_heads)
        owners = rng.integers(0, len(groups), size=len(part))
        mbs.append([(first, degree, [int(i) for i, o in zip(part, owners) if o == g]) for g, (first, degree) in enumerate(groups)])
    return make_plan(mbs, np.asarray(lengths), spec(world_size), cost_model(), strategy="random", solve_s=0.0, lower_bound_s=0.0)


NO_DECAY = ("embed.weight",)
"""The embedding table (also the tied output projection): with the 1-D norms and biases,
the parameters AdamW must not decay."""


def reference_step(batch: list[torch.Tensor], config: WorkerConfig) -> tuple[float, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Single process, whole batch packed in one stream, float64: (loss, grads as AdamW
    sees them (after clipping), params after one AdamW step at the first step's lr)."""
    model = Decoder(config.model).to(torch.float64)
    lengths = [len(s) for s in batch]
    positions, cu = pack_positions(lengths)
    tokens = torch.cat(batch)
    targets = torch.cat([torch.cat([s[1:], torch.tensor([-100])]) for s in batch])
    logits = model(tokens, positions, cu)
    loss = F.cross_entropy(logits, targets, ignore_index=-100, reduction="mean")
    loss.backward()
    if config.max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    named = dict(model.named_parameters())
    decay = [p for n, p in named.items() if p.ndim == 2 and n not in NO_DECAY]
    keep = [p for n, p in named.items() if p.ndim < 2 or n in NO_DECAY]
    lr = config.lr / config.warmup_steps if config.warmup_steps else config.lr
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay}, {"params": keep, "weight_decay": 0.0}], lr=lr)
    opt.step()
    return float(loss.detach()), grads, {n: p.detach().clone() for n, p in model.named_parameters()}


def assert_close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    torch.testing.assert_close(actual, expected, rtol=RTOL, atol=ATOL, msg=lambda m: f"{what}: {m}")
