"""Data-parallel RL steps: one `RLWorker` per rank, joined in a gloo process group.

Per step every rank draws the step's prompts from the same seeded generator and keeps
its contiguous share (`shard_range`), rolls out G responses per prompt with its own
generator, and computes rewards and group-relative advantages locally: a group is one
prompt, so no statistics cross ranks. The BGPO update runs through the memory-bounded
accumulation with losses divided by the *global* number of responses (PolicyUpdate's
global_rows), and the masks of all rows come from a generator seeded identically on
every rank; after one sum all-reduce of the gradients every rank holds the gradient of
the one-process update on all of the step's rollouts, clips it and steps AdamW. All
ranks start from the same weights (the driver's SFT state), so they stay identical.

Plain class: cluster/rl_workers.py hosts it in a Ray actor, tests drive it through
hsp.testing.run_ranks (start_worker joins the group and builds a rank).
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.distributed as dist

from hsp.rl import losses
from hsp.parallel.grads import all_reduce_grads
from hsp.rl.comm import all_reduce_max, all_reduce_sum, join_group
from hsp.rl.config import RLConfig
from hsp.rl.diffusion import DiffusionLM
from hsp.rl.sampler import generate
from hsp.rl.tasks import Task, TaskBatch, drop_overlap, get_task
from hsp.rl.trainer import build_model, evaluate, measure_sample_bytes, rl_step, sampler_config
from hsp.rl.update import Rollouts

SHARED_STREAM = 0
"""Generator stream every rank shares (prompt choice, ELBO masks); rank r rolls out on stream r + 1."""


def shard_range(total: int, rank: int, world_size: int) -> tuple[int, int]:
    """[lo, hi) of rank's contiguous share of `total` items; shares differ by at most one."""
    base, extra = divmod(total, world_size)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)


def step_generator(seed: int, step: int, stream: int) -> torch.Generator:
    """A generator determined by (seed, step, stream) alone, so ranks agree without talking."""
    state = np.random.SeedSequence([seed, step, stream]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def data_parallel_update(model: DiffusionLM, opt: torch.optim.Optimizer, batch: Rollouts, rows: tuple[int, int], cfg: RLConfig,
                         generator: torch.Generator, sample_bytes: int, scalars: tuple[float, ...] = ()) -> tuple[float, int, list[float]]:
    """rl_step on this rank's `rows` (first, total) of the step batch, gradients summed
    over ranks before each optimizer step. Returns (the whole batch's loss, this rank's
    peak saved bytes, `scalars` summed over ranks in the first gradient all-reduce)."""
    summed: list[list[float]] = []

    def reduce(local_loss: float) -> float:
        summed.append(all_reduce_grads(model.parameters(), [local_loss, *scalars], buffer_dtype=torch.float64))
        return summed[-1][0]

    loss, peak = rl_step(model, opt, batch, cfg, generator, sample_bytes, global_rows=rows, reduce=reduce)
    return loss, peak, summed[0][1:]


def start_worker(rank: int, world_size: int, rendezvous: str, cfg: RLConfig, state: dict, timeout_s: float = 1800.0) -> "RLWorker":
    """Join the gloo group at `rendezvous` (tcp://host:port), build the task splits and
    the model from `cfg` and load `state` (the same weights on every rank)."""
    torch.set_num_threads(cfg.num_threads)
    join_group(rank, world_size, rendezvous, timeout_s)
    task = get_task(cfg.task)
    train_set = task.make_split("train", cfg.train_items, cfg.seed)
    test_set = drop_overlap(task.make_split("test", cfg.test_items, cfg.seed), train_set)
    model = build_model(cfg, task)
    model.load_state_dict(state)
    return RLWorker(cfg, model, task, train_set, test_set)


class RLWorker:
    """One rank, in an already joined process group (see start_worker)."""

    def __init__(self, cfg: RLConfig, model: DiffusionLM, task: Task, train_set: TaskBatch, test_set: TaskBatch):
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.cfg, self.model, self.task, self.train_set, self.test_set = cfg, model, task, train_set, test_set
        self.opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
        self.sample_bytes = measure_sample_bytes(model, task, train_set, cfg)

    def rollout(self, step: int) -> tuple[Rollouts, torch.Tensor, tuple[int, int], torch.Generator]:
        """This rank's rollouts of `step`, its rewards, its rows of the step batch, and
        the shared generator (positioned after the prompt draw) for the ELBO masks."""
        cfg, group = self.cfg, self.cfg.group_size
        shared = step_generator(cfg.seed, step, SHARED_STREAM)
        idx = torch.randint(len(self.train_set.prompts), (cfg.prompts_per_step,), generator=shared)
        lo, hi = shard_range(cfg.prompts_per_step, self.rank, self.world_size)
        prompts = self.train_set.prompts[idx[lo:hi]].repeat_interleave(group, dim=0)  # (p*G, Lp)
        own = step_generator(cfg.seed, step, self.rank + 1)
        responses = generate(self.model, prompts, sampler_config(cfg, self.task, cfg.temperature), own)
        rewards = self.task.reward(prompts, responses)  # (p*G,)
        adv = losses.group_advantages(rewards.view(hi - lo, group)).flatten()
        rows = (lo * group, cfg.prompts_per_step * group)
        return Rollouts(prompts, responses, adv), rewards, rows, shared

    def step(self, step: int) -> dict:
        """One RL step on every rank; the reward and loss are the whole step's."""
        t = time.perf_counter()
        batch, rewards, rows, shared = self.rollout(step)
        rollout_s = time.perf_counter() - t
        loss, peak, (reward_sum,) = data_parallel_update(self.model, self.opt, batch, rows, self.cfg, shared, self.sample_bytes,
                                                         scalars=(float(rewards.sum()),))
        return {"reward": reward_sum / rows[1], "loss": loss, "rollout_s": rollout_s, "peak_saved_bytes": all_reduce_max(peak)}

    def evaluate(self) -> dict:
        """Greedy test accuracy of the current weights, the test split sharded over ranks."""
        n = len(self.test_set.prompts)
        lo, hi = shard_range(n, self.rank, self.world_size)
        sums = [0.0, 0.0]
        if hi > lo:
            part = evaluate(self.model, self.task, TaskBatch(self.test_set.prompts[lo:hi], self.test_set.answers[lo:hi]), self.cfg)
            sums = [part["accuracy"] * (hi - lo), part["solved"] * (hi - lo)]
        accuracy, solved = all_reduce_sum(sums)
        return {"accuracy": accuracy / n, "solved": solved / n}

    def state_dict(self) -> dict:
        return self.model.state_dict()

    def shutdown(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()
