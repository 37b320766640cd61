"""Generating from the policy: a step's rollouts (one function for any number of ranks)
and the greedy evaluation on the test split.

Randomness of RL step t comes from generators derived from (seed, t, stream) alone, so
ranks agree without talking and a step can be re-run after a failure or a resume:

- stream 0 (`SHARED_STREAM`), the same on every rank: the step's prompt draw, then the
  ELBO masks of the update (hsp.rl.step.rl_step);
- stream r + 1: rank r's rollouts of its contiguous share of the prompts.

World size 1 is the same code (rank 0, stream 1). Rewards and group-relative
advantages are computed where the rollouts are: a group is one prompt, and a prompt's
G responses always sit on one rank, so no statistics cross ranks.
"""

from __future__ import annotations

import numpy as np
import torch

from hsp.rl import losses
from hsp.rl.config import RLConfig
from hsp.rl.diffusion import DiffusionLM
from hsp.rl.sampler import SamplerConfig, generate
from hsp.rl.tasks import Task, TaskBatch
from hsp.rl.update import Rollouts

SHARED_STREAM = 0
"""Generator stream every rank shares (prompt choice, ELBO masks); rank r rolls out on stream r + 1."""


def step_generator(seed: int, step: int, stream: int) -> torch.Generator:
    """A generator determined by (seed, step, stream) alone, so ranks agree without talking."""
    state = np.random.SeedSequence([seed, step, stream]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def shard_range(total: int, rank: int, world_size: int) -> tuple[int, int]:
    """[lo, hi) of rank's contiguous share of `total` items; shares differ by at most one."""
    base, extra = divmod(total, world_size)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)


def sampler_config(cfg: RLConfig, task: Task, temperature: float) -> SamplerConfig:
    length = task.response_len
    return SamplerConfig(
        gen_length=length,
        block_length=cfg.block_length or length,
        steps=cfg.sample_steps or task.default_sample_steps,
        temperature=temperature,
    )


def rollout(model: DiffusionLM, task: Task, train: TaskBatch, cfg: RLConfig, step: int, rank: int = 0,
            world_size: int = 1) -> tuple[Rollouts, torch.Tensor, tuple[int, int], torch.Generator]:
    """Rank `rank`'s rollouts of RL step `step` (its share of the P prompts x G samples),
    their rewards (p*G,), its rows (first, total) of the step batch, and the shared
    generator (positioned after the prompt draw) for the update's ELBO masks."""
    group = cfg.group_size
    shared = step_generator(cfg.seed, step, SHARED_STREAM)
    idx = torch.randint(len(train.prompts), (cfg.prompts_per_step,), generator=shared)
    lo, hi = shard_range(cfg.prompts_per_step, rank, world_size)
    prompts = train.prompts[idx[lo:hi]].repeat_interleave(group, dim=0)  # (p*G, Lp)
    own = step_generator(cfg.seed, step, rank + 1)
    responses = generate(model, prompts, sampler_config(cfg, task, cfg.temperature), own)
    rewards = task.reward(prompts, responses)  # (p*G,)
    adv = losses.group_advantages(rewards.view(hi - lo, group))
    if cfg.advantage_control == "shuffle":
        adv = shuffle_within_groups(adv, own)
    adv = adv.flatten()
    rows = (lo * group, cfg.prompts_per_step * group)
    return Rollouts(prompts, responses, adv), rewards, rows, shared


def shuffle_within_groups(adv: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each row (a group) of adv (P, G) permuted independently: the same advantage values,
    hence the same update size, decoupled from which response earned them."""
    perm = torch.rand(adv.shape, generator=generator).argsort(dim=1)
    return adv.gather(1, perm)


def group_diagnostics(rewards: torch.Tensor, group_size: int) -> dict:
    """Sums over this rank's groups (P = rewards.numel() / G) of: 1 if all G rewards are
    equal (zero advantage, no signal), and the within-group reward std."""
    groups = rewards.view(-1, group_size)
    tied = (groups == groups[:, :1]).all(dim=1).double()
    return {"tied_groups": float(tied.sum()), "group_std": float(groups.std(dim=1, unbiased=False).sum())}


def evaluate(model: DiffusionLM, task: Task, test: TaskBatch, cfg: RLConfig) -> dict:
    """Greedy decoding on the test split: mean reward (accuracy) and fully-solved fraction."""
    responses = generate(model, test.prompts, sampler_config(cfg, task, 0.0), torch.Generator())
    rewards = task.reward(test.prompts, responses)
    return {"accuracy": float(rewards.mean()), "solved": float(task.solved(test.prompts, responses).double().mean())}
