"""The RL step on the rank runtime (hsp.engine.rank): rollouts, rewards, one policy update.

Every rank of `hsp rl` (one, or `--num-workers N` on Ray) is a `Rank` running
`RLProgram`. Per step each rank rolls out its contiguous share of the step's prompts
(hsp.rl.rollout: generators derived from (seed, step, stream)). The update runs through
the memory-bounded accumulation with losses divided by the *global* number of responses
(PolicyUpdate's global_rows), and the masks of all rows come from the shared stream,
drawn identically on every rank; after one sum all-reduce of the gradients every rank
holds the gradient of the one-process update on all of the step's rollouts, clips it
and steps AdamW. All ranks start from the same weights (the driver's SFT state), so
they stay identical.

The RL modules run on CPU tensors, so the rank joins with gloo ('auto' never picks
nccl here).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Callable

import torch

from hsp.engine.memory import SavedBytesMeter
from hsp.engine.rank import JoinOptions, Rank
from hsp.rl.config import RLConfig
from hsp.rl.diffusion import DiffusionLM
from hsp.rl.rollout import evaluate, group_diagnostics, rollout, shard_range
from hsp.rl.tasks import Task, TaskBatch
from hsp.rl.update import PolicyUpdate, Rollouts
from hsp.rl.warmup import build_model, task_splits


@dataclass(frozen=True)
class UpdateStats:
    """What one rl_step measured (this rank's share where it says so)."""

    loss: float
    """The last inner pass's loss (the whole batch's after `reduce`)."""
    peak_saved_bytes: int
    """This rank's peak saved-for-backward bytes."""
    entropy_sum: float
    """This rank's first-pass predictive entropy, summed over the masked tokens scored."""
    entropy_tokens: int
    """How many masked tokens entropy_sum covers."""
    kl: float
    """This rank's first-pass KL estimate to the reference, summed per response / total rows."""


def rl_step(model: DiffusionLM, opt: torch.optim.Optimizer, batch: Rollouts, cfg: RLConfig, gen: torch.Generator, sample_bytes: int,
            *, global_rows: tuple[int, int] | None = None, reduce: Callable[[float], float] | None = None,
            reference: DiffusionLM | None = None) -> UpdateStats:
    """Inner updates on one batch of rollouts.

    Data-parallel ranks pass their rows of the step batch (`global_rows`, see
    PolicyUpdate) and `reduce`, which sums the gradients (and returns the summed loss)
    over ranks before the clip and the optimizer step. `reference`: the frozen policy of
    the KL penalty (needed when cfg.kl_coef > 0)."""
    update = PolicyUpdate(model, cfg.algo, batch, num_samples=cfg.mc_samples, elbo_form=cfg.elbo_form,
                          generator=gen, min_t=cfg.min_t, clip_eps=cfg.clip_eps, prompt_mask_prob=cfg.prompt_mask_prob,
                          global_rows=global_rows, temperature=cfg.temperature, reference=reference, kl_coef=cfg.kl_coef)
    meter = SavedBytesMeter(model.parameters())
    loss, first_kl = 0.0, 0.0
    for inner in range(cfg.inner_steps):
        opt.zero_grad(set_to_none=True)
        with meter:
            loss = update.backward(cfg.act_budget_bytes, sample_bytes)
        if inner == 0:
            first_kl = update.kl_sum
        if reduce is not None:
            loss = reduce(loss)
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        opt.step()
    return UpdateStats(loss, meter.peak_bytes, update.entropy_sum, update.entropy_tokens, first_kl)


def measure_sample_bytes(model: DiffusionLM, task: Task, train: TaskBatch, cfg: RLConfig) -> int:
    """Saved bytes of one (response, sample) unit of this model and task (the budget's unit)."""
    probe = Rollouts(train.prompts[:1], train.answers[:1], torch.zeros(1))
    algo = "diffu-grpo" if cfg.algo == "diffu-grpo" else "bgpo"
    return PolicyUpdate(model, algo, probe, num_samples=1, elbo_form=cfg.elbo_form, generator=torch.Generator().manual_seed(0)).sample_bytes()


def data_parallel_update(rank: Rank, model: DiffusionLM, opt: torch.optim.Optimizer, batch: Rollouts, rows: tuple[int, int],
                         cfg: RLConfig, generator: torch.Generator, sample_bytes: int,
                         scalars: tuple[float, ...] = (), reference: DiffusionLM | None = None) -> tuple[UpdateStats, list[float]]:
    """rl_step on this rank's `rows` (first, total) of the step batch, gradients summed
    over `rank`'s world before each optimizer step. Returns (rl_step's stats with the
    whole batch's loss, `scalars` summed over ranks in the first gradient all-reduce)."""
    summed: list[list[float]] = []

    def reduce(local_loss: float) -> float:
        summed.append(rank.all_reduce_grads(model.parameters(), [local_loss, *scalars], buffer_dtype=torch.float64))
        return summed[-1][0]

    stats = rl_step(model, opt, batch, cfg, generator, sample_bytes, global_rows=rows, reduce=reduce, reference=reference)
    return stats, summed[0][1:]


@dataclass(frozen=True, kw_only=True)
class RLRankSpec:
    """A rank that runs RL steps (hsp.engine.rank.RankSpec)."""

    config: RLConfig
    """The run's RL config (the same on every rank)."""
    initial_state: dict
    """Model weights every rank starts from (the driver's SFT weights)."""
    collective_timeout_s: float = 3600.0
    """A collective waiting longer than this (a dead or stuck peer) raises instead of hanging."""

    def join_options(self, world_size: int) -> JoinOptions:
        return JoinOptions(collective_timeout_s=self.collective_timeout_s, num_threads=self.config.num_threads,
                           cuda=False, seed=self.config.seed)

    def start(self, rank: Rank) -> "RLProgram":
        task, train_set, test_set = task_splits(self.config)
        # replicated: the models are tiny, and a sharded model would need every rank to run
        # the same number of sampler forwards (rollouts and test shards differ per rank)
        rank.build(lambda: build_model(self.config, task), dtype=torch.float32, lr=self.config.lr, weight_decay=0.0,
                   sharding="replicated")
        rank.model.load_state_dict(self.initial_state)
        return RLProgram(rank, self.config, task, train_set, test_set)


FIXED_TRAIN_PROMPTS = 256
"""Training prompts (the split's first ones) whose greedy reward every evaluation reports:
a rise there without one on the test split is memorisation, not learning."""


class RLProgram:
    """The RL step function of one rank (built by RLRankSpec.start)."""

    def __init__(self, rank: Rank, cfg: RLConfig, task: Task, train_set: TaskBatch, test_set: TaskBatch):
        self.rank, self.cfg, self.task, self.train_set, self.test_set = rank, cfg, task, train_set, test_set
        self.sample_bytes = measure_sample_bytes(rank.model, task, train_set, cfg)
        self.reference = frozen_copy(rank.model) if cfg.kl_coef > 0 else None
        n = min(FIXED_TRAIN_PROMPTS, len(train_set.prompts))
        self.fixed_train = TaskBatch(train_set.prompts[:n], train_set.answers[:n])

    def step(self, step: int) -> dict:
        """RL step `step` on every rank; the reward, loss and peak bytes are the whole step's."""
        rank = self.rank
        t = time.perf_counter()
        batch, rewards, rows, shared = rollout(rank.model, self.task, self.train_set, self.cfg, step, rank.rank, rank.world_size)
        rollout_s = time.perf_counter() - t
        diag = group_diagnostics(rewards, self.cfg.group_size)
        t = time.perf_counter()
        stats, (reward_sum,) = data_parallel_update(rank, rank.model, rank.optimizer, batch, rows, self.cfg, shared,
                                                    self.sample_bytes, scalars=(float(rewards.sum()),), reference=self.reference)
        tied, std_sum, ent_sum, ent_tokens, kl = rank.sum_scalars(
            [diag["tied_groups"], diag["group_std"], stats.entropy_sum, float(stats.entropy_tokens), stats.kl])
        update_s = time.perf_counter() - t
        rank.step += 1
        groups = self.cfg.prompts_per_step
        return {"reward": reward_sum / rows[1], "loss": stats.loss, "rollout_s": rollout_s, "update_s": update_s,
                "peak_saved_bytes": rank.max_scalar(stats.peak_saved_bytes), "tied_group_share": tied / groups,
                "group_reward_std": std_sum / groups, "entropy": ent_sum / max(1.0, ent_tokens), "kl": kl}

    def evaluate(self) -> dict:
        """Greedy test accuracy of the current weights (the test split sharded over ranks),
        and the greedy reward on the fixed training prompts."""
        test = self._greedy(self.test_set)
        return {**test, "train_reward": self._greedy(self.fixed_train)["accuracy"]}

    def _greedy(self, items: TaskBatch) -> dict:
        n = len(items.prompts)
        lo, hi = shard_range(n, self.rank.rank, self.rank.world_size)
        sums = [0.0, 0.0]
        if hi > lo:
            part = evaluate(self.rank.model, self.task, TaskBatch(items.prompts[lo:hi], items.answers[lo:hi]), self.cfg)
            sums = [part["accuracy"] * (hi - lo), part["solved"] * (hi - lo)]
        accuracy, solved = self.rank.sum_scalars(sums)
        return {"accuracy": accuracy / n, "solved": solved / n}


def frozen_copy(model: DiffusionLM) -> DiffusionLM:
    """The KL penalty's reference: a copy of the starting (SFT) policy, never updated."""
    reference = copy.deepcopy(model)
    reference.requires_grad_(False)
    return reference.eval()
