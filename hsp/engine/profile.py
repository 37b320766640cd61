"""`hsp profile`: measure this machine and fit the planner's CostModel.

All ranks run the engine's own code path (`hsp.engine.sft.SupervisedStep.run_step`). For each sequence length
s, one step holds one micro-batch per usable degree d; in it the N ranks are tiled by
N/d groups of degree d, each running one sequence of s tokens, all at the same time
(as in training, where every group of a micro-batch runs concurrently and shares the
machine). A group's time is the slowest of its ranks (the all-to-alls keep them in
step); the median over repeats and over the groups gives one (s, d, seconds) sample.
`solver.cost.fit_cost_model` then fits a1 (s^2), a2 (s), the per-group fixed cost b1
and the all-to-all bandwidth per degree by non-negative least squares.

Raw all-to-all bandwidth per degree (all groups of that degree exchanging at once) is
measured too and used where the fit finds no communication term; activation bytes per
token are the peak saved-tensor bytes over one forward and backward (with the blocks
recomputed when activation checkpointing is on, as in training).
"""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.distributed as dist

from hsp.engine.config import DTYPES, WorkerConfig
from hsp.engine.memory import SavedBytesMeter
from hsp.engine.rank import Rank, build_model
from hsp.engine.sft import SupervisedSpec, SupervisedStep
from hsp.engine.spawn import spawn_ranks
from hsp.engine.state import checkpoint_blocks
from hsp.model.config import ModelConfig
from hsp.model.varlen import pack_positions
from hsp.parallel.comm import all_to_all_blocks
from solver.cost import STATE_SHARDINGS, CostModel, FitReport, fit_cost_model
from solver.plan import make_plan
from solver.spec import ClusterSpec

PROFILE_MEMORY_BYTES = 1 << 40
"""The profile's own ClusterSpec memory: large, so no measured length is rejected."""


def default_lengths(max_seq_len: int) -> tuple[int, ...]:
    """64, 128, 256, 512, 768, 1024, 1536, 2048, ... (powers of two and halfway points) up to max_seq_len."""
    ladder = [64 * 2**k for k in range(20)] + [768 * 2**k for k in range(16)]
    return tuple(sorted(n for n in ladder if n <= max_seq_len)) or (max_seq_len,)


@dataclass(kw_only=True)
class ProfileConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    """The model to profile (the one training will run)."""
    num_ranks: int = 4
    """Ranks (processes) to profile with; degrees 1, 2, 4, ... up to this that the head counts
    allow (solver.spec.usable_degree)."""
    lengths: tuple[int, ...] = ()
    """Sequence lengths measured at every degree, one sequence per group; empty = 64, 128,
    256, 512, 768, 1024, 1536, 2048, ... up to model.max_seq_len."""
    packed_lengths: tuple[int, ...] = (16, 64, 256)
    """Lengths also measured as packed streams of many sequences per group (as in training)."""
    packed_tokens_per_rank: int = 1024
    """Tokens per rank of a packed-stream measurement."""
    num_repeats: int = 5
    """Timed repeats per length (after one warm-up step); the median is kept."""
    a2a_tokens: int = 2048
    """Stream length (tokens) of the raw all-to-all bandwidth measurement."""
    dtype: str = "float32"
    """Parameter and activation dtype, as in training."""
    state_sharding: Literal["zero3", "replicated"] = "zero3"
    """Model-state layout of the ranks, as in training (hsp.engine.state); written into the CostModel."""
    activation_checkpointing: bool = False
    """Recompute blocks in backward, as in training; the measured activation bytes per token reflect it."""
    backend: str = "auto"
    """'auto', 'gloo' or 'nccl' (see WorkerConfig)."""
    num_threads: int = 1
    """torch threads per rank, as in training."""
    pin_cpus: bool = False
    """Pin each rank to its slice of the CPUs (see WorkerConfig.pin_cpus); profile as you train."""
    name: str = ""
    """Name written into the CostModel; empty = profiled-L<layers>-H<hidden>-A<heads>-N<ranks>."""

    def __post_init__(self) -> None:
        if self.num_ranks < 1:
            raise ValueError(f"num_ranks must be >= 1, got {self.num_ranks}")
        m = self.model
        self.lengths = self.lengths or default_lengths(m.max_seq_len)
        self.name = self.name or f"profiled-L{m.num_layers}-H{m.hidden_size}-A{m.num_heads}-N{self.num_ranks}"
        untiled = [d for d in self.degrees if self.num_ranks % d]
        if untiled:
            fits = [n for n in (1, 2, 4, 8, 16) if n <= max(2, self.num_ranks)]
            raise ValueError(
                f"num_ranks={self.num_ranks} cannot be tiled by groups of degree {untiled[0]} (usable degrees with "
                f"num_heads={m.num_heads}, num_kv_heads={m.num_kv_heads}: {self.degrees}); use a power of two "
                f"such as {fits[-1]}"
            )
        if not self.lengths or min(self.lengths) < 2:
            raise ValueError(f"lengths must be non-empty and >= 2, got {self.lengths}")
        if max(self.lengths) > self.model.max_seq_len:
            raise ValueError(
                f"longest profiled length {max(self.lengths)} > model max_seq_len={self.model.max_seq_len}; "
                f"raise --model.max_seq_len or drop the long lengths"
            )
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if self.state_sharding not in STATE_SHARDINGS:
            raise ValueError(f"state_sharding must be one of {', '.join(STATE_SHARDINGS)}, got {self.state_sharding!r}")
        if self.num_repeats < 1:
            raise ValueError(f"num_repeats must be >= 1, got {self.num_repeats}")
        if min(self.packed_lengths, default=2) < 2 or self.packed_tokens_per_rank < 1:
            raise ValueError("packed_lengths must be >= 2 and packed_tokens_per_rank >= 1")
        if (len(self.lengths) + len(self.packed_lengths)) * len(self.degrees) < 3:
            raise ValueError("need at least 3 (length, degree) points to fit 3+ coefficients; add lengths")

    @property
    def spec(self) -> ClusterSpec:
        """The profile's own cluster: its memory is large, so no measured length is rejected."""
        return ClusterSpec(num_ranks=self.num_ranks, ranks_per_node=self.num_ranks, num_heads=self.model.num_heads,
                           num_kv_heads=self.model.num_kv_heads, device_memory_bytes=PROFILE_MEMORY_BYTES)

    @property
    def degrees(self) -> list[int]:
        return list(self.spec.degrees)


@dataclass
class ProfileResult:
    fit: FitReport
    samples: list[tuple[list[int], int, float]]
    """(lengths run by one group, degree, seconds) per measured point."""
    a2a_bytes_per_s: dict[int, float]
    """Raw all-to-all bandwidth per rank by degree."""
    act_bytes_per_token: float
    seconds: float
    """Wall time of the whole profile."""


def activation_bytes_per_token(model_cfg: ModelConfig, dtype: torch.dtype, length: int,
                               activation_checkpointing: bool = False) -> float:
    """Peak bytes autograd keeps for backward per token over one forward, loss and
    backward (each storage once: views of one tensor share it; weights are states, not
    activations). Without checkpointing the peak is at the end of the forward; with it,
    in backward, when one block's recomputed activations sit on top of the saved block
    inputs (the reentrant recompute runs under the meter, see hsp.engine.state)."""
    model = build_model(model_cfg).to(dtype)
    if activation_checkpointing:
        checkpoint_blocks(model)
    tokens = torch.randint(0, model_cfg.vocab_size, (length,))
    positions, cu = pack_positions([length])
    meter = SavedBytesMeter(model.parameters())
    with meter:
        logits = model(tokens, positions, cu)
        torch.nn.functional.cross_entropy(logits, tokens, reduction="sum").backward()
    return meter.peak_bytes / length


def _template(cfg: ProfileConfig, act_bytes: float, bandwidth: dict[int, float]) -> CostModel:
    num_params = sum(p.numel() for p in build_model(cfg.model).parameters())
    return CostModel(
        name=cfg.name,
        attn_s_per_token2=0.0,
        linear_s_per_token=0.0,
        group_fixed_s=0.0,
        act_bytes_per_token=act_bytes,
        num_params=float(num_params),
        num_layers=cfg.model.num_layers,
        hidden_size=cfg.model.hidden_size,
        num_heads=cfg.model.num_heads,
        a2a_bytes_per_s=bandwidth,
        state_sharding=cfg.state_sharding,
        activation_checkpointing=cfg.activation_checkpointing,
    )


def _progress(rank: int, text: str) -> None:
    if rank == 0:
        print(f"[hsp profile] {text}", file=sys.stderr, flush=True)


def _measure_a2a(rank: Rank, cfg: ProfileConfig) -> dict[int, float]:
    """Bytes per rank per second of one all-to-all, all groups of a degree at once."""
    out = {}
    m = cfg.model
    for d in cfg.degrees[1:]:
        first = rank.rank // d * d
        group = rank.catalogue.get(first, d)
        x = torch.randn(cfg.a2a_tokens // d, m.num_heads, m.head_dim, dtype=DTYPES[cfg.dtype], device=rank.device)
        blocks = x.view(x.shape[0], d, m.num_heads // d, m.head_dim).transpose(0, 1)  # (d, T/d, H/d, hd)
        times = []
        for _ in range(cfg.num_repeats + 1):
            dist.barrier()
            start = time.perf_counter()
            all_to_all_blocks(blocks, group, None)
            times.append(time.perf_counter() - start)
        seconds = torch.tensor([statistics.median(times[1:])], dtype=torch.float64)
        dist.all_reduce(seconds, op=dist.ReduceOp.MAX)
        out[d] = x.numel() * x.element_size() / float(seconds)
        _progress(rank.rank, f"all-to-all degree {d}: {out[d] / 1e6:.1f} MB/s per rank")
    return out


def _points(cfg: ProfileConfig) -> list[tuple[int, int | None]]:
    """(length, sequences per rank or None for one per group) of every measurement."""
    return [(s, None) for s in cfg.lengths] + [(s, max(1, cfg.packed_tokens_per_rank // s)) for s in cfg.packed_lengths]


def _measure_steps(sft: SupervisedStep, cfg: ProfileConfig, spec: ClusterSpec, cost: CostModel) -> list[tuple[list[int], int, float]]:
    n = cfg.num_ranks
    points = _points(cfg)
    steps = []  # (plan, batch) per point
    for s, per_rank in points:
        layout, batch = [], []
        for d in cfg.degrees:
            count = 1 if per_rank is None else per_rank * d  # packed: the group holds d x tokens_per_rank
            groups = []
            for first in range(0, n - d + 1, d):
                groups.append((first, d, list(range(len(batch), len(batch) + count))))
                batch += [torch.randint(0, cfg.model.vocab_size, (s,)) for _ in range(count)]
            layout.append(groups)
        plan = make_plan(layout, np.full(len(batch), s), spec, cost, strategy="profile", solve_s=0.0, lower_bound_s=0.0)
        steps.append((plan, batch))
    # sweep all points once per repeat (not point by point), so a change in machine load
    # during the profile hits every point alike instead of skewing a few
    times = [[] for _ in points]  # point -> repeats x degrees, this rank's seconds
    for repeat in range(cfg.num_repeats + 1):
        for k, (plan, batch) in enumerate(steps):
            report = sft.run_step(plan, batch)
            if repeat:  # the first sweep warms up allocators and kernels
                times[k].append([mb["total_s"] for mb in report.micro_batches])
        _progress(sft.rank.rank, f"sweep {repeat + 1}/{cfg.num_repeats + 1} over {len(points)} points"
                               + (" (warm-up)" if repeat == 0 else ""))
    mine = torch.tensor(times, dtype=torch.float64)  # (points, repeats, degrees)
    gathered = [torch.zeros_like(mine) for _ in range(n)]
    dist.all_gather(gathered, mine)
    every = torch.stack(gathered)  # (ranks, points, repeats, degrees)
    samples = []
    for k, (s, per_rank) in enumerate(points):
        for j, d in enumerate(cfg.degrees):
            # a group's time is its slowest rank; then the median over repeats and groups
            per_group = every[:, k, :, j].reshape(n // d, d, -1).amax(dim=1)  # (groups, repeats)
            count = 1 if per_rank is None else per_rank * d
            samples.append(([s] * count, d, float(per_group.median())))
    return samples


def profile_rank(rank: int, world_size: int, rendezvous: str, cfg: ProfileConfig) -> ProfileResult | None:
    """One rank of the profile (run by `hsp.engine.spawn.spawn_ranks`); rank 0 returns the result."""
    start = time.perf_counter()
    torch.manual_seed(0)  # every rank must build the same batch
    act_bytes = activation_bytes_per_token(cfg.model, DTYPES[cfg.dtype], max(cfg.lengths), cfg.activation_checkpointing)
    spec = cfg.spec
    placeholder = _template(cfg, act_bytes, {d: 1e9 for d in cfg.degrees[1:]})
    worker = WorkerConfig(model=cfg.model, spec=spec, cost_model=placeholder, dtype=cfg.dtype, backend=cfg.backend,
                          num_threads=cfg.num_threads, pin_cpus=cfg.pin_cpus, collective_timeout_s=300.0, max_grad_norm=None,
                          state_sharding=cfg.state_sharding, activation_checkpointing=cfg.activation_checkpointing)
    host = Rank()
    host.setup(rank, world_size, rendezvous, SupervisedSpec(worker=worker))
    _progress(rank, f"{world_size} ranks, degrees {cfg.degrees}, {host.model.num_params():,} parameters, "
                    f"{act_bytes:.0f} activation bytes/token")
    try:
        bandwidth = _measure_a2a(host, cfg)
        samples = _measure_steps(host.program, cfg, spec, placeholder)
    finally:
        host.shutdown()
    if rank != 0:
        return None
    fit = fit_cost_model(samples, _template(cfg, act_bytes, bandwidth))
    return ProfileResult(fit, samples, bandwidth, act_bytes, time.perf_counter() - start)


def run_profile(cfg: ProfileConfig, timeout_s: float = 3600.0) -> ProfileResult:
    return spawn_ranks(profile_rank, cfg.num_ranks, (cfg,), timeout_s=timeout_s)[0]


def residual_table(result: ProfileResult) -> str:
    """Measured vs fitted seconds per sample, for the user to judge the fit."""
    model = result.fit.model
    lines = [f"{'group runs':>12} {'SP':>3} {'measured ms':>12} {'fitted ms':>10} {'error':>7}"]
    for lengths, d, t in result.samples:
        pred = model.group_time_s(lengths, d)
        what = f"{len(lengths)} x {lengths[0]}" if len(lengths) > 1 else f"{lengths[0]}"
        lines.append(f"{what:>12} {d:>3} {t * 1e3:>12.2f} {pred * 1e3:>10.2f} {(pred - t) / t:>+7.1%}")
    return "\n".join(lines)
