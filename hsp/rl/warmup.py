"""What an RL run starts from: the task's splits, the diffusion LM, and its SFT warm-up
(run by the driver, in one process, before the RL steps)."""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import torch

from hsp.model.config import ModelConfig
from hsp.rl.config import RLConfig
from hsp.rl.diffusion import DiffusionLM, sft_loss
from hsp.rl.tasks import MASK, Task, TaskBatch, drop_overlap, get_task


def task_splits(cfg: RLConfig) -> tuple[Task, TaskBatch, TaskBatch]:
    """The task and its train and test splits (test items that also occur in train are dropped)."""
    task = get_task(cfg.task)
    train_set = task.make_split("train", cfg.train_items, cfg.seed)
    test_set = drop_overlap(task.make_split("test", cfg.test_items, cfg.seed), train_set)
    return task, train_set, test_set


def model_config(cfg: RLConfig, task: Task) -> ModelConfig:
    """The run's diffusion LM: [model] with the task's vocabulary and lengths, bidirectional."""
    return dataclasses.replace(
        cfg.model,
        vocab_size=task.vocab_size,
        max_seq_len=task.prompt_len + task.response_len,
        bidirectional=True,
        init_seed=cfg.seed,
    )


def build_model(cfg: RLConfig, task: Task) -> DiffusionLM:
    """The run's diffusion LM (its decoder comes from hsp.engine.rank.build_model)."""
    return DiffusionLM(model_config(cfg, task), mask_id=MASK)


def run_sft(model: DiffusionLM, train: TaskBatch, cfg: RLConfig, gen: torch.Generator,
            check: Callable[[], float] | None = None) -> list[float]:
    """SFT losses per step. `check` (greedy accuracy on fixed training prompts) runs every
    cfg.sft_check_every steps; SFT stops once it reaches cfg.sft_stop_accuracy."""
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.sft_lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * s / max(1, cfg.sft_steps))))
    history = []
    for _ in range(cfg.sft_steps):
        idx = torch.randint(len(train.prompts), (cfg.sft_batch_size,), generator=gen)
        loss = sft_loss(model, train.prompts[idx], train.answers[idx], gen, cfg.min_t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        opt.step()
        sched.step()
        history.append(float(loss.detach()))
        if check is not None and cfg.sft_check_every and len(history) % cfg.sft_check_every == 0 and check() >= cfg.sft_stop_accuracy:
            break
    return history


def load_sft(model: DiffusionLM, cfg: RLConfig) -> None:
    """Load cfg.sft_checkpoint (written by a previous run) into `model`."""
    try:
        model.load_state_dict(torch.load(cfg.sft_checkpoint, weights_only=True))
    except RuntimeError as err:
        raise ValueError(f"{cfg.sft_checkpoint} does not fit this model (num_layers={cfg.model.num_layers}, hidden_size={cfg.model.hidden_size}, "
                         f"num_heads={cfg.model.num_heads}, task={cfg.task}); pass the settings of the run that wrote it "
                         f"(first mismatch: {str(err).splitlines()[-1].strip()})") from err
