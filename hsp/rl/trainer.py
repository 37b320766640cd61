"""`hsp rl` end to end: SFT warm-up, then RL steps (rollouts, rewards, advantages, update).

SFT and the first evaluation run in this process (hsp/rl/warmup.py); the RL steps run on
ranks of the one rank runtime (hsp.engine.rank.Rank hosting hsp.rl.step.RLProgram): one
rank in this process by default, or with num_workers > 1 data-parallel ranks that
cluster/launch.py hosts on Ray. The run directory gets `summary.json` (config, test
accuracy before and after RL, per-step history, timings, measured memory), `sft.pt`
(the SFT weights, reusable with --sft-checkpoint). Each history record carries the
step's diagnostics: tied_group_share (groups whose G rewards are all equal: no signal),
group_reward_std, entropy (masked-token predictive entropy at the rollout temperature),
kl (estimate to the SFT policy), and the last evaluation's test_accuracy and
train_reward (greedy reward on the first FIXED_TRAIN_PROMPTS training prompts); `hsp rl` (cluster/rl_runner.py) draws
`reward_curve.png` from the history.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Protocol

import torch
from tqdm import tqdm

from hsp.engine.rank import Rank, free_rendezvous
from hsp.rl.config import RLConfig
from hsp.rl.rollout import evaluate
from hsp.rl.step import FIXED_TRAIN_PROMPTS, RLRankSpec, measure_sample_bytes
from hsp.rl.tasks import TaskBatch
from hsp.rl.warmup import build_model, load_sft, run_sft, task_splits


class Policy(Protocol):
    """Where RL steps run: `step` returns the step's record (reward, loss, rollout_s, update_s,
    peak_saved_bytes), `evaluate` the test metrics of the current weights."""

    def step(self, step: int) -> dict: ...
    def evaluate(self) -> dict: ...
    def close(self) -> None: ...


class LocalPolicy:
    """One rank (world size 1) in this process: the same program as on N Ray ranks."""

    def __init__(self, spec: RLRankSpec):
        self.rank = Rank()
        self.rank.setup(0, 1, free_rendezvous(), spec)

    def step(self, step: int) -> dict:
        return self.rank.program.step(step)

    def evaluate(self) -> dict:
        return self.rank.program.evaluate()

    def close(self) -> None:
        self.rank.shutdown()


def train(cfg: RLConfig, run_dir: str | Path, progress: bool = True, on_step: Callable[[dict], None] | None = None,
          make_parallel: Callable[[RLRankSpec], Policy] | None = None) -> dict:
    """Run SFT (or load it) and RL; write the run directory; return the summary dict.

    SFT and the first evaluation run here; the RL steps run on a `Policy`: one rank in
    this process (LocalPolicy) or, with cfg.num_workers > 1, data-parallel ranks built by
    `make_parallel(spec)` (cluster/launch.py builds them on Ray)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.num_threads)
    gen = torch.Generator().manual_seed(cfg.seed)
    task, train_set, test_set = task_splits(cfg)
    model = build_model(cfg, task)
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    sft_history: list[float] = []
    fixed = TaskBatch(train_set.prompts[:FIXED_TRAIN_PROMPTS], train_set.answers[:FIXED_TRAIN_PROMPTS])
    if cfg.sft_checkpoint:
        load_sft(model, cfg)
    else:
        sft_history = run_sft(model, train_set, cfg, gen, check=lambda: evaluate(model, task, fixed, cfg)["accuracy"])
    torch.save(model.state_dict(), run_dir / "sft.pt")
    timings["sft_s"] = time.perf_counter() - t0

    before = evaluate(model, task, test_set, cfg)
    before["train_reward"] = evaluate(model, task, fixed, cfg)["accuracy"]
    sample_bytes = measure_sample_bytes(model, task, train_set, cfg)
    if cfg.num_workers > 1 and make_parallel is None:
        raise ValueError(f"num_workers={cfg.num_workers} runs on Ray workers: start it with `hsp rl --num-workers {cfg.num_workers}`, "
                         "or pass num_workers=0 for one process")
    spec = RLRankSpec(config=cfg, initial_state=model.state_dict())
    policy = make_parallel(spec) if cfg.num_workers > 1 else LocalPolicy(spec)
    history: list[dict] = []
    test_acc, train_reward = before["accuracy"], before["train_reward"]
    bar = tqdm(range(cfg.steps), desc=f"rl {cfg.algo} n_t={cfg.mc_samples}", disable=not progress)
    t_rl = time.perf_counter()
    try:
        for step in bar:
            t = time.perf_counter()
            record = {"step": step + 1, **policy.step(step)}
            if cfg.eval_every and (step + 1) % cfg.eval_every == 0 and step + 1 < cfg.steps:
                evaluated = policy.evaluate()
                test_acc, train_reward = evaluated["accuracy"], evaluated["train_reward"]
            record.update(test_accuracy=test_acc, train_reward=train_reward, step_s=time.perf_counter() - t)
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
        history[-1].update(test_accuracy=after["accuracy"], train_reward=after["train_reward"])  # the curve ends at the final evaluation
    summary = {
        "config": cfg.to_dict(),
        "num_params": model.decoder.num_params(),
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
        "sft_steps_run": len(sft_history),
        "history": history,
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
