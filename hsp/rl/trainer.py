"""`hsp rl` end to end: SFT warm-up, then RL steps (rollouts, rewards, advantages, update).

Single process on CPU by default; with num_workers > 1 the RL steps run data-parallel
(hsp/rl/distributed.py, hosted on Ray by cluster/rl_workers.py). The run directory gets `summary.json` (config, test accuracy
before and after RL, per-step history, timings, measured memory), `sft.pt` (the SFT
weights, reusable with --sft-checkpoint); `hsp rl` draws `reward_curve.png` from the history.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Callable, Protocol

import torch
from tqdm import tqdm

from hsp.rl import losses
from hsp.rl.config import RLConfig
from hsp.rl.diffusion import DiffusionLM, sft_loss
from hsp.rl.memory import SavedBytesMeter
from hsp.rl.sampler import SamplerConfig, generate
from hsp.rl.tasks import MASK, VOCAB_SIZE, Task, TaskBatch, drop_overlap, get_task
from hsp.rl.update import PolicyUpdate, Rollouts


def build_model(cfg: RLConfig, task: Task) -> DiffusionLM:
    gpt = dataclasses.replace(
        cfg.model,
        vocab_size=VOCAB_SIZE,
        max_seq_len=task.prompt_len + task.response_len,
        bidirectional=True,
        init_seed=cfg.seed,
    )
    return DiffusionLM(gpt, mask_id=MASK)


def sampler_config(cfg: RLConfig, task: Task, temperature: float) -> SamplerConfig:
    length = task.response_len
    return SamplerConfig(
        gen_length=length,
        block_length=cfg.block_length or length,
        steps=cfg.sample_steps or max(1, length // 2),
        temperature=temperature,
    )


def evaluate(model: DiffusionLM, task: Task, test: TaskBatch, cfg: RLConfig) -> dict:
    """Greedy decoding on the test split: mean reward (accuracy) and fully-solved fraction."""
    responses = generate(model, test.prompts, sampler_config(cfg, task, 0.0), torch.Generator())
    rewards = task.reward(test.prompts, responses)
    return {"accuracy": float(rewards.mean()), "solved": float(task.solved(test.prompts, responses).double().mean())}


def run_sft(model: DiffusionLM, train: TaskBatch, cfg: RLConfig, gen: torch.Generator) -> list[float]:
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
    return history


def rollout(model: DiffusionLM, task: Task, train: TaskBatch, cfg: RLConfig, gen: torch.Generator) -> tuple[Rollouts, torch.Tensor]:
    """P prompts x G samples -> rollouts with group-relative advantages, and rewards (N,)."""
    idx = torch.randint(len(train.prompts), (cfg.prompts_per_step,), generator=gen)
    prompts = train.prompts[idx].repeat_interleave(cfg.group_size, dim=0)  # (P*G, Lp)
    responses = generate(model, prompts, sampler_config(cfg, task, cfg.temperature), gen)
    rewards = task.reward(prompts, responses)  # (P*G,)
    adv = losses.group_advantages(rewards.view(cfg.prompts_per_step, cfg.group_size)).flatten()
    return Rollouts(prompts, responses, adv), rewards


def rl_step(model: DiffusionLM, opt: torch.optim.Optimizer, batch: Rollouts, cfg: RLConfig, gen: torch.Generator, sample_bytes: int,
            *, global_rows: tuple[int, int] | None = None, reduce: Callable[[float], float] | None = None) -> tuple[float, int]:
    """Inner updates on one batch of rollouts; returns (last loss, peak saved bytes).

    Data-parallel ranks pass their rows of the step batch (`global_rows`, see
    PolicyUpdate) and `reduce`, which sums the gradients (and returns the summed loss)
    over ranks before the clip and the optimizer step."""
    update = PolicyUpdate(model, cfg.algo, batch, num_samples=cfg.mc_samples, elbo_form=cfg.elbo_form,
                          generator=gen, min_t=cfg.min_t, clip_eps=cfg.clip_eps, global_rows=global_rows)
    meter = SavedBytesMeter(model.parameters())
    loss = 0.0
    for _ in range(cfg.inner_steps):
        opt.zero_grad(set_to_none=True)
        with meter:
            loss = update.backward(cfg.act_budget_bytes, sample_bytes)
        if reduce is not None:
            loss = reduce(loss)
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        opt.step()
    return loss, meter.peak_bytes


def measure_sample_bytes(model: DiffusionLM, task: Task, train: TaskBatch, cfg: RLConfig) -> int:
    """Saved bytes of one (response, sample) unit of this model and task (the budget's unit)."""
    probe = Rollouts(train.prompts[:1], train.answers[:1], torch.zeros(1))
    algo = "diffu-grpo" if cfg.algo == "diffu-grpo" else "bgpo"
    return PolicyUpdate(model, algo, probe, num_samples=1, elbo_form=cfg.elbo_form, generator=torch.Generator().manual_seed(0)).sample_bytes()


class Policy(Protocol):
    """Where RL steps run: `step` returns the step's record (reward, loss, rollout_s,
    peak_saved_bytes), `evaluate` the test metrics of the current weights."""

    def step(self, step: int) -> dict: ...
    def evaluate(self) -> dict: ...
    def close(self) -> None: ...


class LocalPolicy:
    """The single-process policy: rollouts and updates in this process, one generator."""

    def __init__(self, model: DiffusionLM, task: Task, train_set: TaskBatch, test_set: TaskBatch, cfg: RLConfig,
                 gen: torch.Generator, sample_bytes: int):
        self.model, self.task, self.train_set, self.test_set = model, task, train_set, test_set
        self.cfg, self.gen, self.sample_bytes = cfg, gen, sample_bytes
        self.opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)

    def step(self, step: int) -> dict:
        t = time.perf_counter()
        batch, rewards = rollout(self.model, self.task, self.train_set, self.cfg, self.gen)
        t_roll = time.perf_counter() - t
        loss, peak = rl_step(self.model, self.opt, batch, self.cfg, self.gen, self.sample_bytes)
        return {"reward": float(rewards.mean()), "loss": loss, "rollout_s": t_roll, "peak_saved_bytes": peak}

    def evaluate(self) -> dict:
        return evaluate(self.model, self.task, self.test_set, self.cfg)

    def close(self) -> None:
        pass


def train(cfg: RLConfig, run_dir: str | Path, progress: bool = True, on_step: Callable[[dict], None] | None = None,
          make_parallel: Callable[[RLConfig, dict], "Policy"] | None = None) -> dict:
    """Run SFT (or load it) and RL; write the run directory; return the summary dict.

    SFT and the first evaluation run here; the RL steps run on a `Policy`: this process
    (LocalPolicy) or, with cfg.num_workers > 1, data-parallel ranks built by
    `make_parallel(cfg, sft_state_dict)` (cluster/rl_workers.py builds them on Ray)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.num_threads)
    gen = torch.Generator().manual_seed(cfg.seed)
    task = get_task(cfg.task)
    train_set = task.make_split("train", cfg.train_items, cfg.seed)
    test_set = drop_overlap(task.make_split("test", cfg.test_items, cfg.seed), train_set)
    model = build_model(cfg, task)
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    sft_history: list[float] = []
    if cfg.sft_checkpoint:
        try:
            model.load_state_dict(torch.load(cfg.sft_checkpoint, weights_only=True))
        except RuntimeError as err:
            raise ValueError(f"{cfg.sft_checkpoint} does not fit this model (num_layers={cfg.model.num_layers}, "
                             f"hidden_size={cfg.model.hidden_size}, num_heads={cfg.model.num_heads}, task={cfg.task}); pass the settings of the run that wrote it "
                             f"(first mismatch: {str(err).splitlines()[-1].strip()})") from err
    else:
        sft_history = run_sft(model, train_set, cfg, gen)
    torch.save(model.state_dict(), run_dir / "sft.pt")
    timings["sft_s"] = time.perf_counter() - t0

    before = evaluate(model, task, test_set, cfg)
    sample_bytes = measure_sample_bytes(model, task, train_set, cfg)
    if cfg.num_workers > 1:
        if make_parallel is None:
            raise ValueError(f"num_workers={cfg.num_workers} runs on Ray workers: start it with `hsp rl --num-workers {cfg.num_workers}`, "
                             "or pass num_workers=0 for one process")
        policy = make_parallel(cfg, model.state_dict())
    else:
        policy = LocalPolicy(model, task, train_set, test_set, cfg, gen, sample_bytes)
    history: list[dict] = []
    test_acc = before["accuracy"]
    bar = tqdm(range(cfg.steps), desc=f"rl {cfg.algo} n_t={cfg.mc_samples}", disable=not progress)
    t_rl = time.perf_counter()
    try:
        for step in bar:
            t = time.perf_counter()
            record = {"step": step + 1, **policy.step(step)}
            if cfg.eval_every and (step + 1) % cfg.eval_every == 0 and step + 1 < cfg.steps:
                test_acc = policy.evaluate()["accuracy"]
            record.update(test_accuracy=test_acc, step_s=time.perf_counter() - t)
            history.append(record)
            bar.set_postfix(reward=f"{record['reward']:.3f}", test=f"{test_acc:.3f}", s=f"{record['step_s']:.2f}")
            if on_step:
                on_step(record)
        timings["rl_s"] = time.perf_counter() - t_rl
        after = policy.evaluate()
    finally:
        policy.close()
    peak_saved = max((r["peak_saved_bytes"] for r in history), default=0)
    if history:
        history[-1]["test_accuracy"] = after["accuracy"]  # the curve ends at the final evaluation
    summary = {
        "config": cfg.to_dict(),
        "num_params": model.gpt.num_params(),
        "num_workers": max(1, cfg.num_workers),
        "num_test_items": len(test_set.prompts),
        "test_before": before,
        "test_after": after,
        "test_accuracy_before": before["accuracy"],
        "test_accuracy_after": after["accuracy"],
        "sample_bytes": sample_bytes,
        "peak_saved_bytes": peak_saved,
        "timings": timings,
        "sft_loss": sft_history[-1] if sft_history else None,
        "history": history,
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
